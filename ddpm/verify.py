"""Regenerate x0 from a noise-map file and check it: exit 0 if and only if max-abs error <= --tol.

    python -m ddpm.verify maps.npz --ckpt CKPT [--tol 1e-4]

The file's model_sha256 must match the checkpoint's weights file (sha256 of its bytes), unless --ignore-sha.
"""
import argparse
import sys

from .cli import add_model_flags, main_guard, model_from_args
from .guidance import file_eps
from .noisemap import check_fits, load_maps, regenerate


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    add_model_flags(p)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--ignore-sha", action="store_true", help="do not require model_sha256 to match --ckpt")
    args = p.parse_args(argv)
    maps = load_maps(args.file)
    model, device, dtype = model_from_args(args)
    check_fits(maps, model, args.file, ignore_sha=args.ignore_sha)
    maps = maps.to(device, dtype)
    x0 = regenerate(file_eps(model.unet, maps.extra), maps, progress=not args.no_progress)  # every step: no reuse
    err = (x0.cpu().double() - maps.x0.double()).abs().max().item()
    ok = err <= args.tol
    print(f"{args.file}: {maps.method}, {len(maps.timesteps)} steps, max-abs error {err:.3e} "
          f"{'<=' if ok else '>'} tol {args.tol:g}: {'OK' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main_guard(main)
