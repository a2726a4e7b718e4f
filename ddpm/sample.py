"""Sample images from a trained model (Ho et al. 2020, Algorithm 2, strided), optionally saving the noise.

    python -m ddpm.sample --ckpt checkpoints/cifar10-cpu-cond.safetensors --n 64 --steps 100 --out grid.png  # null class
    python -m ddpm.sample --ckpt CKPT --n 8 --save-maps native.npz   # the drawn noise as a noise-map file
    python -m ddpm.sample --ckpt checkpoints/cifar10-cpu-cond.safetensors --class cat --cfg 3 --n 16 --out cats.png
"""
import argparse
from typing import get_args

import torch

from .checkpoint import Model
from .cli import add_model_flags, check_range, main_guard, model_from_args
from .diffusion import EpsModel, draw_zs, sample
from .guidance import class_eps
from .images import save_png
from .noisemap import NoiseMaps, save_maps
from .schedule import Spacing, make_steps, strided_timesteps


def native_maps(model: Model, n: int, S: int, *, spacing: Spacing = "leading", eta: float = 1.0, seed: int = 0,
                eps_model: EpsModel | None = None, extra: dict | None = None, progress: bool = False) -> NoiseMaps:
    """n samples and the noise they were drawn with, as noise maps (method "native", x0 = the samples; the
    paper's native noise space). Only eta = 1 maps follow the file's regeneration rule (DDPM steps)."""
    steps = make_steps(model.sched, strided_timesteps(S, model.sched.T, spacing))
    sigma = steps.sigma(model.variance, eta) if eta == 1.0 else steps.sigma("fixed_small", eta)
    g = torch.Generator().manual_seed(seed)
    p = next(model.unet.parameters())
    size = model.unet.cfg.image_size
    x_T = torch.randn((n, model.unet.cfg.in_ch, size, size), generator=g, dtype=p.dtype).to(p.device)
    zs = draw_zs(steps.S, x_T, g)
    x0 = sample(eps_model or model.eps, x_T, steps, sigma, zs=zs, clip=model.clip_x0,
                mean="ddpm" if eta == 1.0 else "ddim", progress=progress)
    return NoiseMaps(x0=x0.cpu(), xT=x_T.cpu(), zs=zs.cpu(), timesteps=steps.t, alphas_cumprod=model.sched.alpha_bar,
                     sigmas=sigma, clip_x0=model.clip_x0, method="native", model_sha256=model.sha256,
                     extra=dict(extra or {}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="strided sampling steps S")
    p.add_argument("--spacing", choices=get_args(Spacing), default="leading")
    p.add_argument("--eta", type=float, default=1.0, help="1: DDPM, 0: deterministic DDIM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="cls", help="class to sample (class-conditional models), e.g. cat")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale with --class")
    p.add_argument("--out", required=True, help="PNG grid")
    p.add_argument("--save-maps", default=None, help="write x_T and the drawn z_t as a noise-map file (method native)")
    args = p.parse_args(argv)
    check_range("--n", args.n, 1, 4096)
    model, device, dtype = model_from_args(args)
    check_range("--steps", args.steps, 1, model.sched.T)
    if args.save_maps and args.eta != 1.0:
        raise ValueError("--save-maps needs --eta 1 (the file's rule is the DDPM step)")
    eps_model, extra = None, {}
    if args.cls is not None:
        eps_model, y = class_eps(model.unet, args.cls, args.cfg, args.n)
        extra = {"class_label": y, "cfg_scale": args.cfg}
    maps = native_maps(model, args.n, args.steps, spacing=args.spacing, eta=args.eta, seed=args.seed,
                       eps_model=eps_model, extra=extra, progress=not args.no_progress)
    save_png(args.out, maps.x0)
    print(f"wrote {args.out} ({args.n} samples, {args.steps} steps)")
    if args.save_maps:
        save_maps(args.save_maps, maps)
        print(f"wrote {args.save_maps}")


if __name__ == "__main__":
    main_guard(main)
