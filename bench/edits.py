"""Measures the paper's claim (arXiv 2304.06140, sec. 4): shifting edit-friendly maps shifts the image,
shifting native DDPM noise does not; and the calibrated color edit. Real CIFAR-10 test images.

    python -m bench.edits --ckpt checkpoints/cifar10-cpu-cond.safetensors [--n 8] [--steps 100]

Shift fidelity: PSNR/SSIM on the overlap between the regenerated output and the shifted original image,
for edit-friendly maps, DPM-Encoder maps and native maps (the noise a DDPM sample was drawn with, x0 = the sample).
"""
import argparse
import sys
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

ROOT = Path(__file__).resolve().parents[1]

from ddpm import edits
from ddpm.cli import main_guard
from ddpm.images import load_image
from ddpm.metrics import luminance, overlap, psnr, shift_image, ssim
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, regenerate
from ddpm.sample import native_maps


def shift_scores(model, maps, d, fill):
    out = regenerate(model.eps, edits.shift(maps, d, 0, fill=fill, generator=torch.Generator().manual_seed(0)),
                     progress=False)
    ref = shift_image(maps.x0, d, 0)
    a, b = overlap(out, d, 0), overlap(ref, d, 0)
    return psnr(a, b).mean().item(), ssim(a, b).mean().item()


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "cifar10-cpu-cond.safetensors"))
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--shifts", type=int, nargs="+", default=[1, 2, 4, 8])
    args = p.parse_args(argv)
    model = load_model(args.ckpt)
    files = sorted((ROOT / "assets" / "cifar10").glob("*.jpg"))[:args.n]
    x0 = torch.stack([load_image(f, 32) for f in files])
    spaces = {m: invert_to_maps(model, x0, S=args.steps, method=m, progress=False)[0]
              for m in ("edit_friendly", "dpm_encoder")}
    spaces["native"] = native_maps(model, len(files), args.steps, seed=1)
    print(f"model {args.ckpt}, {len(files)} real CIFAR-10 test images (native: {len(files)} samples), S={args.steps}")
    for fill in ("wrap", "zeros"):  # the default (periodic) fill, and a non-periodic one
        print(f"\nshift fidelity (fill={fill}): PSNR dB / SSIM on the overlap vs the shifted original")
        print("| shift | " + " | ".join(spaces) + " |\n|---|" + "---|" * len(spaces))
        for d in args.shifts:
            cells = [f"{p_:.2f} / {s_:.3f}" for p_, s_ in (shift_scores(model, m, d, fill) for m in spaces.values())]
            print(f"| {d} px | " + " | ".join(cells) + " |")
    print("\nborder fill policy, shift 4 px: PSNR dB / SSIM on the overlap")
    print("| fill | " + " | ".join(spaces) + " |\n|---|" + "---|" * len(spaces))
    for fill in edits.FILLS:
        cells = [f"{p_:.2f} / {s_:.3f}" for p_, s_ in (shift_scores(model, m, 4, fill) for m in spaces.values())]
        print(f"| {fill} | " + " | ".join(cells) + " |")
    print("\ncolor edit (edit-friendly maps, t in [200, 0]): requested vs measured per-channel mean change, "
          "SSIM of luminance vs the unedited reconstruction")
    maps = spaces["edit_friendly"]
    base = regenerate(model.eps, maps, progress=False)
    for target in ([0.2, 0, 0], [0, 0.2, 0], [0, 0, -0.2], [0.3, 0.1, -0.2]):
        t = torch.tensor(target, dtype=torch.float64)
        offset, _ = edits.solve_color(model.eps, maps, t, base=base)
        out = regenerate(model.eps, edits.color(maps, offset, t_range=edits.COLOR_T_RANGE), progress=False)
        got = edits.mean_change(out, base, None)
        lum = ssim(luminance(out - (out - base).mean((2, 3), keepdim=True)), luminance(base)).mean().item()
        print(f"| {target} | {[round(v, 3) for v in got.tolist()]} | SSIM(lum, offset removed) {lum:.3f} |")


if __name__ == "__main__":
    main_guard(main)
