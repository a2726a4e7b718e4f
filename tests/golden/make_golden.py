"""Regenerates the golden vectors in this folder (run from the repo root: python tests/golden/make_golden.py).

tiny.safetensors   a seeded random `tiny` UNet (float16 storage; loads as float32)
input.png          a real CIFAR-10 test image (assets/cifar10/cat_0000.jpg, decoded)
maps.npz           its edit-friendly noise maps, format_version 1, S = 10, seed 0, float64 inversion
expected.json      the settings, hashes and the reconstruction error measured here
"""
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from ddpm.checkpoint import save_model  # noqa: E402
from ddpm.images import load_image, save_png  # noqa: E402
from ddpm.models import load_model  # noqa: E402
from ddpm.noisemap import invert_to_maps  # noqa: E402
from ddpm.noisemap import save_maps  # noqa: E402
from ddpm.unet import PRESETS, UNet  # noqa: E402

SETTINGS = {"preset": "tiny", "init_seed": 0, "steps": 10, "seed": 0, "method": "edit_friendly", "dtype": "float64"}


def main():
    torch.manual_seed(SETTINGS["init_seed"])
    save_model(HERE / "tiny.safetensors", UNet(PRESETS["tiny"]), dtype=torch.float16)
    x0 = load_image(HERE.parents[1] / "assets" / "cifar10" / "cat_0000.jpg", 32)
    save_png(HERE / "input.png", x0)
    x0 = load_image(HERE / "input.png", 32)[None].double()
    model = load_model(HERE / "tiny.safetensors").to("cpu", torch.float64)
    maps, rec = invert_to_maps(model, x0, S=SETTINGS["steps"], seed=SETTINGS["seed"], progress=False)
    save_maps(HERE / "maps.npz", maps)
    err = (rec - x0).abs().max().item()
    (HERE / "expected.json").write_text(json.dumps({**SETTINGS, "model_sha256": model.sha256,
                                                    "reconstruction_max_abs": err}, indent=1) + "\n")
    print(f"golden vectors written; reconstruction max-abs {err:.3e}")


if __name__ == "__main__":
    main()
