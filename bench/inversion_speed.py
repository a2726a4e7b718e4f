"""Batched vs one-call-per-step inversion, measured in the same run, plus each mode's reconstruction error.

    python -m bench.inversion_speed [--preset cifar10] [--steps 50] [--n 1] [--device cpu]
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

ROOT = Path(__file__).resolve().parents[1]

from ddpm.cli import main_guard
from ddpm.diffusion import sample
from ddpm.inversion import invert
from ddpm.schedule import linear_schedule, make_steps, strided_timesteps
from ddpm.unet import PRESETS, UNet


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--chunks", type=int, nargs="+", default=[5, 25])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    cfg = PRESETS[args.preset]
    model = UNet(cfg).eval().to(args.device)
    sched = linear_schedule()
    steps = make_steps(sched, strided_timesteps(args.steps))
    x0 = (torch.rand(args.n, 3, cfg.image_size, cfg.image_size) * 2 - 1).to(args.device)
    print(f"{args.preset} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M), S={args.steps}, N={args.n}, "
          f"{args.device}, {torch.get_num_threads()} threads")

    def timed(mode, chunk):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        rec = invert(model, x0, steps, sched, mode=mode, chunk=chunk, generator=g, progress=False).x0_rec
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0, (rec - x0).abs().max().item()

    t_exact, e_exact = timed("exact", 1)
    g = torch.Generator().manual_seed(0)
    inv = invert(model, x0, steps, sched, mode="exact", generator=g, progress=False)
    t0 = time.perf_counter()
    sample(model, inv.xT, steps, inv.sigma, zs=inv.zs, progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_sampler = time.perf_counter() - t0
    print("| mode | total | speed-up vs exact | inversion part (total - sampler run) | max-abs error |")
    print("|---|---|---|---|---|")
    print(f"| exact, one call per step (reconstruction in the same pass) | {t_exact:.2f} s | 1.00x | {t_exact:.2f} s | {e_exact:.1e} |")
    for c in args.chunks:
        t_b, e_b = timed("batched", c)
        print(f"| batched, chunk {c} (+ verifying sampler run) | {t_b:.2f} s | {t_exact / t_b:.2f}x | "
              f"{t_b - t_sampler:.2f} s ({t_exact / max(t_b - t_sampler, 1e-9):.2f}x) | {e_b:.1e} |")


if __name__ == "__main__":
    main_guard(main)
