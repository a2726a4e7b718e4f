"""Regenerate x0 from a noise-map file and check it: exit 0 if and only if max-abs error <= --tol.

    python -m ddpm.verify maps.npz --ckpt CKPT [--tol 1e-4]

The file's model_sha256 must match the checkpoint's weights file (sha256 of its bytes), unless --ignore-sha.
"""
import argparse
import sys

from .cli import add_model_flags, main_guard, model_from_args
from .guidance import file_eps
from .noisemap import NoiseMapError, load_maps, regenerate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    add_model_flags(p)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--ignore-sha", action="store_true", help="do not require model_sha256 to match --ckpt")
    args = p.parse_args(argv)
    maps = load_maps(args.file)
    model, device, dtype = model_from_args(args)
    if maps.model_sha256 != model.sha256 and not args.ignore_sha:
        raise NoiseMapError(f"{args.file}: model_sha256 {maps.model_sha256[:12]}... does not match {args.ckpt} "
                            f"({model.sha256[:12]}...); pass the checkpoint the maps were made with, or --ignore-sha")
    if maps.x0.shape[1:] != (model.unet.cfg.in_ch, model.unet.cfg.image_size, model.unet.cfg.image_size):
        raise NoiseMapError(f"{args.file}: images {tuple(maps.x0.shape[1:])} do not fit the model's "
                            f"{model.unet.cfg.image_size}x{model.unet.cfg.image_size}")
    maps = maps.to(device, dtype)
    x0 = regenerate(file_eps(model.unet, maps.extra), maps, progress=not args.no_progress)
    err = (x0.cpu().double() - maps.x0.double()).abs().max().item()
    ok = err <= args.tol
    print(f"{args.file}: {maps.method}, {len(maps.timesteps)} steps, max-abs error {err:.3e} "
          f"{'<=' if ok else '>'} tol {args.tol:g}: {'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main_guard(main)
