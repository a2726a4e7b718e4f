"""Training throughput (images/s) of our UNet vs diffusers' UNet2DModel at the same config, same run.

    python -m bench.train_speed [--preset cifar10] [--batch 16] [--iters 5] [--device cpu]
"""
import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from ddpm.diffusers_io import config_to_diffusers
from ddpm.diffusion import loss_simple
from ddpm.schedule import linear_schedule
from ddpm.unet import PRESETS, UNet, count_params


def throughput(net, cfg, batch, iters, device):
    sched, opt = linear_schedule(), torch.optim.Adam(net.parameters(), lr=2e-4)
    x = torch.rand(batch, 3, cfg.image_size, cfg.image_size, device=device) * 2 - 1
    amp = device.startswith("cuda")
    for k in range(iters + 2):  # two warm-up iterations
        if k == 2:
            if amp:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        t = torch.randint(0, 1000, (batch,), device=device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_simple(net, x, sched, t=t, eps=torch.randn_like(x)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    if amp:
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cifar10")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    from diffusers import UNet2DModel

    cfg = PRESETS[args.preset]
    dcfg = config_to_diffusers(cfg)
    dcfg.pop("_class_name")
    torch.manual_seed(0)
    ours = UNet(cfg).to(args.device).train()
    ref = UNet2DModel(**dcfg).to(args.device).train()
    a = throughput(ours, cfg, args.batch, args.iters, args.device)
    b = throughput(_Wrap(ref), cfg, args.batch, args.iters, args.device)
    print(f"{args.preset} ({count_params(ours) / 1e6:.2f}M params), batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    print(f"| ours | {a:.1f} img/s | diffusers UNet2DModel | {b:.1f} img/s | ratio ours/diffusers {a / b:.2f} |")


class _Wrap(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x, t):
        return self.m(x, t).sample


if __name__ == "__main__":
    main()
