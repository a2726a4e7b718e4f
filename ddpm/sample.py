"""Sample images from a trained model (Ho et al. 2020, Algorithm 2, strided), optionally saving the noise.

    python -m ddpm.sample --ckpt checkpoints/cifar10-cpu.safetensors --n 64 --steps 100 --out grid.png
    python -m ddpm.sample --ckpt CKPT --n 8 --save-maps native.npz   # the drawn noise as a noise-map file
"""
import argparse

import torch

from .cli import add_model_flags, check_range, main_guard, model_from_args
from .diffusion import sample
from .images import save_png
from .noisemap import NoiseMaps, save_maps
from .schedule import make_steps, strided_timesteps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="strided sampling steps S")
    p.add_argument("--spacing", choices=["leading", "offset"], default="leading")
    p.add_argument("--eta", type=float, default=1.0, help="1: DDPM, 0: deterministic DDIM")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG grid")
    p.add_argument("--save-maps", default=None, help="write x_T and the drawn z_t as a noise-map file (method native)")
    args = p.parse_args(argv)
    check_range("--n", args.n, 1, 4096)
    model, device, dtype = model_from_args(args)
    check_range("--steps", args.steps, 1, model.sched.T)
    steps = make_steps(model.sched, strided_timesteps(args.steps, model.sched.T, args.spacing))
    sigma = steps.sigma(model.variance, args.eta) if args.eta == 1.0 else steps.sigma("fixed_small", args.eta)
    g = torch.Generator().manual_seed(args.seed)
    size = model.unet.cfg.image_size
    x_T = torch.randn((args.n, model.unet.cfg.in_ch, size, size), generator=g, dtype=dtype).to(device)
    x0, zs = sample(model.eps, x_T, steps, sigma, generator=g, clip=model.clip_x0, eta=args.eta,
                    progress=not args.no_progress, return_zs=True)
    save_png(args.out, x0)
    print(f"wrote {args.out} ({args.n} samples, {args.steps} steps)")
    if args.save_maps:
        if args.eta != 1.0:
            raise ValueError("--save-maps needs --eta 1 (the file's rule is the DDPM step)")
        save_maps(args.save_maps, NoiseMaps(x0=x0.cpu(), xT=x_T.cpu(), zs=zs.cpu(), timesteps=steps.t,
                                            alphas_cumprod=model.sched.alpha_bar, sigmas=sigma, clip_x0=model.clip_x0,
                                            method="native", model_sha256=model.sha256))
        print(f"wrote {args.save_maps}")


if __name__ == "__main__":
    main_guard(main)
