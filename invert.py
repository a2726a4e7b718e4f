"""Invert real images into edit-friendly (or DPM-Encoder) noise maps, and check the reconstruction.

    python invert.py --ckpt checkpoints/cifar10-cpu-cond.safetensors --image assets/cifar10/*.png --steps 100 --out out/maps.npz
"""
import argparse
from pathlib import Path
from typing import get_args

import torch

from ddpm.cli import add_model_flags, check_range, main_guard, model_from_args
from ddpm.guidance import class_eps
from ddpm.images import load_image, save_png, to_uint8
from ddpm.inversion import Last, Method, Mode
from ddpm.noisemap import invert_to_maps, save_maps
from ddpm.schedule import Spacing


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_flags(p)
    p.add_argument("--image", nargs="+", required=True, help="PNG/JPEG files (centre-cropped/resized to the model)")
    p.add_argument("--steps", type=int, default=100, help="strided steps S")
    p.add_argument("--skip", type=int, default=0, help="start at step K (T_skip): maps cover timesteps[K:]")
    p.add_argument("--spacing", choices=get_args(Spacing), default="leading")
    p.add_argument("--method", choices=get_args(Method), default="edit_friendly")
    p.add_argument("--mode", choices=get_args(Mode), default="exact",
                   help="exact: the sampler's own network calls (bit-exact); batched: --chunk steps per call")
    p.add_argument("--chunk", type=int, default=8, help="timesteps per network call in batched mode")
    p.add_argument("--last", choices=get_args(Last), default="fixed_large",
                   help="sigma of the last step: fixed_large (exact) or zero (the official code)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class", dest="cls", help="source class (class-conditional models), e.g. cat")
    p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale with --class")
    p.add_argument("--strict", action="store_true", help="refuse images that are not the model's size")
    p.add_argument("--no-trajectory", action="store_true",
                   help="leave the sampler's trajectory out of the file (half the size; edits then rerun every step)")
    p.add_argument("--out", required=True, help="noise-map file (.npz); the reconstruction goes beside it (.png)")
    args = p.parse_args(argv)
    if args.chunk < 1:
        raise ValueError(f"--chunk must be >= 1, got {args.chunk}")
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out} must end in .npz")
    model, device, dtype = model_from_args(args)
    check_range("--steps", args.steps, 1, model.sched.T)
    check_range("--skip", args.skip, 0, args.steps - 1)
    size = model.unet.cfg.image_size
    x0 = torch.stack([load_image(f, size, strict=args.strict, crop=model.crop) for f in args.image]).to(device, dtype)
    eps_model, extra = None, {}
    if args.cls is not None:
        eps_model, y = class_eps(model.unet, args.cls, args.cfg, len(args.image))
        extra = {"class_label": y, "cfg_scale": args.cfg}
    maps, x_rec = invert_to_maps(model, x0, S=args.steps, skip=args.skip, spacing=args.spacing, method=args.method,
                                 mode=args.mode, seed=args.seed, chunk=args.chunk, last=args.last,
                                 progress=not args.no_progress, eps_model=eps_model, extra=extra,
                                 trajectory=not args.no_trajectory)
    save_maps(out, maps)
    rec_png = out.with_suffix(".png")
    save_png(rec_png, x_rec)
    err = (x_rec - x0).abs().flatten(1).amax(1).cpu()
    for f, e, a, b in zip(args.image, err, x_rec, x0):
        same = (to_uint8(a) == to_uint8(b)).all()
        print(f"{f}: reconstruction max-abs error {e.item():.3e} ({'8-bit identical' if same else '8-bit DIFFERS'})")
    print(f"wrote {out} ({args.method}, {args.mode}, {len(maps.timesteps)} steps, {args.dtype}) and {rec_png}")
    print(f"max-abs reconstruction error {err.max().item():.3e}")


if __name__ == "__main__":
    main_guard(main)
