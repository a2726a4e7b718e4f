"""Time per edit through `edit.py`: the full regeneration vs starting at the first changed step (the noise-map
file's trajectory), measured in the same run on the same maps, with the outputs checked byte for byte.

    python -m bench.edit_speed [--presets cifar10 celeba64] [--steps 100] [--class-steps 50] [--skip 10]

Random-init weights of each preset with a 10-class embedding (speed does not depend on the weights; the
inversion is the same code for a trained model). Edits: color (calibration included, t <= 200), a class edit
(S = --class-steps, --skip), and a shift (changes every map, so nothing can be reused).
"""
import argparse
import contextlib
import io
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

import edit
import invert
from ddpm.checkpoint import save_model
from ddpm.cli import main_guard
from ddpm.noisemap import load_maps, save_maps
from ddpm.unet import PRESETS, UNet, count_params

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "assets" / "cifar10" / "cat_0000.jpg"


def run(main, argv: list) -> float:
    """Seconds for one in-process run of a script's main(argv), its printout swallowed."""
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main([str(a) for a in argv] + ["--no-progress"])
    return time.perf_counter() - t0


def maps_pair(ckpt: Path, tmp: Path, steps: int, tag: str) -> tuple[Path, Path]:
    """One inversion saved twice: with its trajectory and without (the full-run baseline)."""
    with_traj, without = tmp / f"{tag}.npz", tmp / f"{tag}-no-trajectory.npz"
    run(invert.main, ["--ckpt", ckpt, "--image", IMAGE, "--steps", steps, "--class", "cat", "--out", with_traj])
    save_maps(without, load_maps(with_traj).replace())
    return with_traj, without


def bench_preset(preset: str, args, tmp: Path) -> list[str]:
    cfg = replace(PRESETS[preset], num_classes=10, dropout=0.0)
    torch.manual_seed(0)
    ckpt = tmp / f"{preset}.safetensors"
    save_model(ckpt, UNet(cfg).eval())
    edits = {"color 0.2 0 0 (t <= 200, calibrated)": (args.steps, ["--color", 0.2, 0, 0]),
             f"class cat -> dog, skip {args.skip} of {args.class_steps}": (args.class_steps, ["--class", "dog",
                                                                                          "--skip", args.skip]),
             "shift 2 0 (every map changes)": (args.steps, ["--shift", 2, 0])}
    pairs = {s: maps_pair(ckpt, tmp, s, f"{preset}-{s}") for s in {s for s, _ in edits.values()}}
    rows = []
    for name, (S, flags) in edits.items():
        fast_file, full_file = pairs[S]
        t_full = run(edit.main, [full_file, "--ckpt", ckpt, *flags, "--out", tmp / "full.png"])
        t_fast = run(edit.main, [fast_file, "--ckpt", ckpt, *flags, "--out", tmp / "fast.png"])
        same = (tmp / "full.png").read_bytes() == (tmp / "fast.png").read_bytes()
        rows.append(f"| {preset} ({count_params(UNet(cfg)) / 1e6:.1f}M, {cfg.image_size}px) | {name} | S = {S} | "
                    f"{t_full:.1f} s | {t_fast:.1f} s | {t_full / t_fast:.2f}x | {'yes' if same else 'NO'} |")
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["cifar10", "celeba64"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--class-steps", type=int, default=50)
    p.add_argument("--skip", type=int, default=10)
    args = p.parse_args(argv)
    from bench.machine import describe

    print(describe())
    print("| model | edit | steps | full run | from the first changed step | speed-up | bit-identical PNG |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            bench_preset(preset, args, Path(tmp))


if __name__ == "__main__":
    main_guard(main)
