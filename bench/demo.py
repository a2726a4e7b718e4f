"""The README's demo: invert shipped real images with the shipped models, check the reconstruction, shift and
recolor them through edit.py, and write one panel (original | reconstruction | shifted | recolored): four CIFAR-10
test images with the CIFAR-10 model, four held-out CelebA faces with the face model.

    python -m bench.demo --ckpt checkpoints/cifar10-cpu.safetensors --faces-ckpt checkpoints/celeba32-cpu.safetensors
"""
import argparse
import subprocess
import sys
import warnings
from pathlib import Path

import torch

from ddpm.images import load_image, save_png
from ddpm.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    cmd = [sys.executable, *map(str, args), "--no-progress"]
    print("$", " ".join(str(a) for a in cmd[1:]), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    print(r.stdout, end="")
    if r.returncode:
        sys.exit(f"demo step failed:\n{r.stderr}")


def rows(ckpt: str, images: list[Path], out: Path, args) -> list[torch.Tensor]:
    """Invert `images`, edit them three ways, and return one row of tiles per image."""
    model = load_model(ckpt)
    size = model.unet.cfg.image_size
    maps = out / "maps.npz"
    run(ROOT / "invert.py", "--ckpt", ckpt, "--image", *images, "--steps", args.steps, "--out", maps)
    run(ROOT / "edit.py", maps, "--ckpt", ckpt, "--shift", *args.shift, "--out", out / "shifted.png",
        "--save-maps", out / "shifted.npz")
    run(ROOT / "edit.py", maps, "--ckpt", ckpt, "--color", *args.color, "--out", out / "recolored.png",
        "--save-maps", out / "recolored.npz")
    run(ROOT / "edit.py", maps, "--ckpt", ckpt, "--out", out / "reconstruction.png")  # no edit
    pad = torch.ones(3, size, 2)
    result = []
    for k, f in enumerate(images):
        with warnings.catch_warnings():  # the originals are framed like the training data, as invert.py framed them
            warnings.simplefilter("ignore")
            original = load_image(f, size, crop=model.crop)
        tiles = [original] + [load_image(out / f"{name}_{k}.png", size)
                                                          for name in ("reconstruction", "shifted", "recolored")]
        result.append(torch.cat([torch.cat([t, pad], 2) for t in tiles], 2))
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="checkpoints/cifar10-cpu.safetensors")
    p.add_argument("--faces-ckpt", default="checkpoints/celeba32-cpu.safetensors", help="'' to leave the faces out")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--shift", type=int, nargs=2, default=[6, 0])
    p.add_argument("--color", type=float, nargs=3, default=[0.35, 0.0, -0.15])
    args = p.parse_args()
    out = ROOT / args.out
    all_rows = rows(args.ckpt, sorted((ROOT / "assets" / "cifar10").glob("*.jpg"))[:4], out / "cifar10", args)
    if args.faces_ckpt:
        faces = sorted((ROOT / "assets" / "celeba-heldout").glob("*.jpg"))[:4]
        all_rows += rows(args.faces_ckpt, faces, out / "faces", args)
    panel = torch.cat([torch.cat([r, torch.ones(3, 2, r.shape[2])], 1) for r in all_rows], 1)
    panel = torch.nn.functional.interpolate(panel[None], scale_factor=4, mode="nearest")[0]  # 32px tiles -> 128px
    save_png(out / "panel.png", panel)
    print(f"columns: original | reconstruction | shift {tuple(args.shift)} | color {tuple(args.color)}")
    print(f"wrote {out / 'panel.png'} and the noise maps in {out / 'cifar10'}" +
          (f" and {out / 'faces'}" if args.faces_ckpt else ""))


if __name__ == "__main__":
    main()
