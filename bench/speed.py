"""Network speed against the machine's limit and against diffusers, measured in one run.

    python -m bench.speed [--presets cifar10 cifar10-cpu] [--iters 5] [--threads 0] [--device cpu] [--profile]

For each preset, our UNet and diffusers' UNet2DModel built from the same config (`config_to_diffusers`), in three
settings: inference at batch 1 and at batch 64 (no grad), and a training step at batch 32 (forward, backward, Adam).
Each row: images/s, GFLOP per call (torch.utils.flop_counter: matmuls, convolutions, attention; 2 flops per
multiply-add), achieved GFLOP/s, its fraction of the machine's measured float32 matmul rate (`bench.machine`), and
ours/diffusers. Best of --iters timed calls after two warm-up calls. --profile adds, per preset and setting, where our
network's time goes (torch.profiler self time by operator family): the most a fusion of that family could save.
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.machine import cpu_name, matmul_gflops
from ddpm.cli import main_guard
from ddpm.diffusers_io import config_to_diffusers
from ddpm.diffusion import loss_simple
from ddpm.schedule import linear_schedule
from ddpm.unet import PRESETS, UNet, count_params

SETTINGS = (("inference", 1), ("inference", 64), ("training", 32))


class Diffusers(torch.nn.Module):
    """UNet2DModel with our (x, t) -> eps signature."""

    def __init__(self, cfg):
        from diffusers import UNet2DModel

        super().__init__()
        d = config_to_diffusers(cfg)
        d.pop("_class_name")
        self.m = UNet2DModel(**d)

    def forward(self, x, t):
        return self.m(x, t).sample


def call(net, mode: str, x, t, opt, sched):
    """One inference call, or one training step (forward, backward, Adam)."""
    if mode == "inference":
        with torch.no_grad():
            return net(x, t)
    loss = loss_simple(net, x, sched, t=t, eps=torch.randn_like(x)).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def setup(net, cfg, mode: str, batch: int, device: str):
    """A one-call closure on seeded inputs: inference, or a training step with its own Adam optimizer."""
    net = net.to(device).train(mode == "training")
    sched, opt = linear_schedule(), torch.optim.Adam(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, cfg.in_ch, cfg.image_size, cfg.image_size, generator=g) * 2 - 1).to(device)
    t = torch.randint(0, 1000, (batch,), generator=g).to(device)
    return lambda: call(net, mode, x, t, opt, sched)


def measure(net, cfg, mode: str, batch: int, iters: int, device: str) -> tuple[float, float]:
    """(images/s, GFLOP per call)."""
    step = setup(net, cfg, mode, batch, device)
    with FlopCounterMode(display=False) as fc:
        step()
    step()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return batch / best, fc.get_total_flops() / 1e9


FAMILIES = {"conv": ("conv", "mkldnn"), "group_norm": ("group_norm",), "silu": ("silu",),
            "attention": ("attention", "softmax", "bmm", "baddbmm"), "linear": ("addmm", "linear", "mm")}


def time_shares(net, cfg, mode: str, batch: int, device: str) -> dict[str, float]:
    """Fraction of one call's operator self time (CPU) per family in FAMILIES, the rest as "other"."""
    from torch.profiler import ProfilerActivity, profile

    step = setup(net, cfg, mode, batch, device)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    shares = dict.fromkeys([*FAMILIES, "other"], 0.0)
    for ev in prof.key_averages():
        name = ev.key.lower()
        family = next((f for f, keys in FAMILIES.items() if any(k in name for k in keys)), "other")
        shares[family] += ev.self_cpu_time_total
    total = sum(shares.values())
    return {f: v / total for f, v in shares.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["cifar10", "cifar10-cpu"])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", action="store_true", help="also print where our network's time goes")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_gflops(device=args.device)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.device}: "
          f"float32 matmul (2048^3) {peak:.0f} GFLOP/s")
    print("| model | setting | ours img/s | GFLOP/call | ours GFLOP/s | of matmul peak | diffusers img/s | "
          "diffusers of peak | ours/diffusers |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        cfg = PRESETS[preset]
        for mode, batch in SETTINGS:
            torch.manual_seed(0)
            ours, flops = measure(UNet(cfg), cfg, mode, batch, args.iters, args.device)
            ref, _ = measure(Diffusers(cfg), cfg, mode, batch, args.iters, args.device)
            rate, ref_rate = ours / batch * flops, ref / batch * flops
            print(f"| `{preset}` ({count_params(UNet(cfg)) / 1e6:.2f}M) | {mode}, batch {batch} | {ours:.1f} | "
                  f"{flops:.1f} | {rate:.0f} | {rate / peak:.0%} | {ref:.1f} | {ref_rate / peak:.0%} | "
                  f"{ours / ref:.2f} |", flush=True)
            if args.profile:
                shares = time_shares(UNet(cfg), cfg, mode, batch, args.device)
                print("|  | time shares: " + ", ".join(f"{f} {v:.0%}" for f, v in shares.items()) + " |", flush=True)


if __name__ == "__main__":
    main_guard(main)
