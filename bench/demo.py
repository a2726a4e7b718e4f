"""The README's demo: invert the shipped real images with the shipped model, check the reconstruction,
then shift and recolor them through edit.py, and write one panel (original | reconstruction | shifted | recolored).

    python -m bench.demo --ckpt checkpoints/cifar10-cpu.safetensors --out out/demo
"""
import argparse
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from ddpm.images import load_image, save_png


def run(*args):
    cmd = [sys.executable, *map(str, args), "--no-progress"]
    print("$", " ".join(str(a) for a in cmd[1:]), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    print(r.stdout, end="")
    if r.returncode:
        sys.exit(f"demo step failed:\n{r.stderr}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default="checkpoints/cifar10-cpu.safetensors")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--shift", type=int, nargs=2, default=[6, 0])
    p.add_argument("--color", type=float, nargs=3, default=[0.35, 0.0, -0.15])
    args = p.parse_args()
    out = ROOT / args.out
    images = sorted((ROOT / "assets" / "cifar10").glob("*.jpg"))[:4]
    maps = out / "maps.npz"
    run(ROOT / "invert.py", "--ckpt", args.ckpt, "--image", *images, "--steps", args.steps, "--out", maps)
    run(ROOT / "edit.py", maps, "--ckpt", args.ckpt, "--shift", *args.shift, "--out", out / "shifted.png",
        "--save-maps", out / "shifted.npz")
    run(ROOT / "edit.py", maps, "--ckpt", args.ckpt, "--color", *args.color, "--out", out / "recolored.png",
        "--save-maps", out / "recolored.npz")
    run(ROOT / "edit.py", maps, "--ckpt", args.ckpt, "--out", out / "reconstruction.png")  # no edit
    pad_w, rows = torch.ones(3, 32, 2), []
    for k, f in enumerate(images):
        tiles = [load_image(f, 32)] + [load_image(out / f"{name}_{k}.png", 32)
                                       for name in ("reconstruction", "shifted", "recolored")]
        rows.append(torch.cat([torch.cat([t, pad_w], 2) for t in tiles], 2))
    panel = torch.cat([torch.cat([r, torch.ones(3, 2, r.shape[2])], 1) for r in rows], 1)
    panel = torch.nn.functional.interpolate(panel[None], scale_factor=4, mode="nearest")[0]  # 32px tiles -> 128px
    save_png(out / "panel.png", panel)
    print(f"columns: original | reconstruction | shift {tuple(args.shift)} | color {tuple(args.color)}")
    print(f"wrote {out / 'panel.png'} and the noise maps {maps}, {out / 'shifted.npz'}, {out / 'recolored.npz'}")


if __name__ == "__main__":
    main()
