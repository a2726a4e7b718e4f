"""The README's demo: invert shipped real images with the shipped models, check the reconstruction, shift and
recolor them through edit.py, and write one panel (original | reconstruction | shifted | recolored): four CIFAR-10
test images with the CIFAR-10 model, four held-out CelebA faces with the face model.

    python -m bench.demo --ckpt checkpoints/cifar10-cpu-cond.safetensors --faces-ckpt checkpoints/celeba64-cpu.safetensors
"""
import argparse
import subprocess
import sys
import warnings
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from bench.figures import image_grid
from ddpm.cli import main_guard
from ddpm.images import load_image
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
    """Invert `images`, edit them three ways, and return one row per image: its 4 tiles (4, 3, H, W)."""
    model = load_model(ckpt)
    size = model.unet.cfg.image_size
    maps = out / "maps.npz"
    run(ROOT / "invert.py", "--ckpt", ckpt, "--image", *images, "--steps", args.steps, "--out", maps)
    run(ROOT / "edit.py", maps, "--ckpt", ckpt, "--shift", *args.shift, "--out", out / "shifted.png",
        "--save-maps", out / "shifted.npz")
    run(ROOT / "edit.py", maps, "--ckpt", ckpt, "--color", *args.color, "--out", out / "recolored.png",
        "--save-maps", out / "recolored.npz")
    run(ROOT / "edit.py", maps, "--ckpt", ckpt, "--out", out / "reconstruction.png")  # no edit
    result = []
    for k, f in enumerate(images):
        with warnings.catch_warnings():  # the originals are framed like the training data, as invert.py framed them
            warnings.simplefilter("ignore")
            original = load_image(f, size, crop=model.crop)
        tiles = [original] + [load_image(out / f"{name}_{k}.png", size)
                                                          for name in ("reconstruction", "shifted", "recolored")]
        result.append(torch.stack(tiles))
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="checkpoints/cifar10-cpu-cond.safetensors")
    p.add_argument("--faces-ckpt", default="checkpoints/celeba64-cpu.safetensors", help="'' to leave the faces out")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--shift", type=int, nargs=2, default=[6, 0])
    p.add_argument("--color", type=float, nargs=3, default=[0.35, 0.0, -0.15])
    args = p.parse_args(argv)
    out = ROOT / args.out
    images = sorted((ROOT / "assets" / "cifar10").glob("*.jpg"))[:4]
    all_rows, names = rows(args.ckpt, images, out / "cifar10", args), [f.stem.split("_")[0] for f in images]
    if args.faces_ckpt:
        faces = sorted((ROOT / "assets" / "celeba-heldout").glob("*.jpg"))[:4]
        all_rows += rows(args.faces_ckpt, faces, out / "faces", args)
        names += [f"face {f.stem}" for f in faces]
    columns = ["original", "reconstruction", f"shift {args.shift[0]}, {args.shift[1]} px",
               "color " + ", ".join(f"{c:+g}" for c in args.color)]
    image_grid(out / "panel.png", dict(zip(names, all_rows)), columns,  # labelled when matplotlib is installed
               "make demo: real images inverted, reconstructed, and edited in their edit-friendly noise maps")
    print(f"columns: original | reconstruction | shift {tuple(args.shift)} | color {tuple(args.color)}")
    print(f"wrote {out / 'panel.png'} and the noise maps in {out / 'cifar10'}" +
          (f" and {out / 'faces'}" if args.faces_ckpt else ""))


if __name__ == "__main__":
    main_guard(main)
