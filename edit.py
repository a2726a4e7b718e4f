"""Edit images through their noise maps and regenerate them.

    python edit.py out/maps.npz --ckpt CKPT --shift 4 0 --out out/shifted.png
    python edit.py out/maps.npz --ckpt CKPT --color 0.3 0 0 --out out/red.png --panel
    python edit.py a.npz --ckpt CKPT --paste b.npz --mask mask.png --out out/paste.png

With no edit it regenerates the inverted images exactly. Edits compose in the order
paste/mix -> shift -> color -> resample (`ddpm.edits.EditSpec`); --t-range HI LO limits them to timesteps in [LO, HI].
When the file holds its trajectory, only the steps from the first changed one are computed (bit-identical).
"""
import argparse
from pathlib import Path

import torch

from ddpm import edits
from ddpm.cli import add_model_flags, check_range, main_guard, model_from_args
from ddpm.guidance import class_eps, file_eps
from ddpm.images import load_mask, save_png
from ddpm.metrics import overlap, psnr, shift_image
from ddpm.models import load_model
from ddpm.noisemap import check_fits, load_maps, regenerate, save_maps


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("maps", help="noise-map file from invert.py (or ddpm.sample --save-maps)")
    add_model_flags(p)
    p.add_argument("--shift", type=int, nargs=2, metavar=("DX", "DY"), help="pixels right and down")
    p.add_argument("--fill", choices=edits.FILLS, default="wrap", help="border policy for --shift")
    p.add_argument("--color", type=float, nargs=3, metavar=("R", "G", "B"), help="offset in [-1, 1] image units")
    p.add_argument("--t-range", type=int, nargs=2, metavar=("HI", "LO"),
                   help="only maps with LO <= t <= HI (default: all; for --color 200 0)")
    p.add_argument("--mask", help="PNG; white = region for --color/--paste")
    p.add_argument("--paste", metavar="OTHER.npz", help="take OTHER's maps inside --mask")
    p.add_argument("--mix", nargs=2, metavar=("OTHER.npz", "W"), help="interpolate towards OTHER's maps by W")
    p.add_argument("--resample", type=int, nargs=2, metavar=("HI", "LO"), help="fresh noise for maps with LO <= t <= HI")
    p.add_argument("--class", dest="cls", help="target class: regenerate with this condition after --skip steps")
    p.add_argument("--cfg", type=float, default=1.0, help="guidance scale for --class")
    p.add_argument("--skip", type=int, default=0, help="steps run with the source condition before switching")
    p.add_argument("--other-ckpt", help="CycleDiffusion: regenerate with this model after --skip steps")
    p.add_argument("--seed", type=int, default=0, help="seed of --resample and of --fill noise")
    p.add_argument("--out", required=True, help="PNG (OUT_k.png per image when there are several)")
    p.add_argument("--save-maps", help="write the edited maps (x0 = the regenerated image)")
    p.add_argument("--panel", action="store_true", help="write original | edit side by side")
    p.add_argument("--ignore-sha", action="store_true", help="edit with a model other than the maps' own")
    return p


def spec_from(args, H: int, W: int, device, dtype) -> edits.EditSpec:
    other = lambda path: load_maps(path).to(device, dtype)  # noqa: E731
    return edits.EditSpec(paste=other(args.paste) if args.paste else None,
                          mix=(other(args.mix[0]), float(args.mix[1])) if args.mix else None,
                          mask=load_mask(args.mask, H, W) if args.mask else None,
                          shift=tuple(args.shift) if args.shift else None, fill=args.fill,
                          color=torch.tensor(args.color) if args.color else None,
                          resample=tuple(args.resample) if args.resample else None,
                          t_range=tuple(args.t_range) if args.t_range else None, seed=args.seed)


def target_eps(args, model, src_eps, n: int, device, dtype):
    """The eps model after --skip: another class (--class, --cfg) and/or another model (--other-ckpt)."""
    unet = load_model(args.other_ckpt).to(device, dtype).unet if args.other_ckpt else model.unet
    if args.cls is not None:
        return class_eps(unet, args.cls, args.cfg, n)[0]
    return unet if args.other_ckpt else src_eps


def report(args, x, maps, edited, notes) -> None:
    x0 = maps.x0
    if edited is maps and args.cls is None and not args.other_ckpt:
        print(f"no edit: max-abs error vs the inverted image {(x.double() - x0.double()).abs().max().item():.3e}")
    if args.shift:
        dx, dy = args.shift
        ps = psnr(overlap(x, dx, dy), overlap(shift_image(x0.to(x.dtype), dx, dy), dx, dy))
        print(f"shift ({dx}, {dy}): PSNR vs the shifted original on the overlap {ps.mean().item():.2f} dB")
    if notes:
        gain, offset = notes["color_gain"], notes["color_offset"]
        mask = None if args.mask is None else load_mask(args.mask, *x.shape[-2:])
        change = edits.mean_change(x, notes["base"].cpu(), mask)
        print(f"color: gain {[round(v, 3) for v in gain.tolist()]} (output per map unit, t in "
              f"{list(notes['color_t_range'])}), map offset {[round(v, 4) for v in offset.tolist()]}")
        print(f"color: requested {args.color}, measured mean change {[round(v, 3) for v in change.tolist()]}")


def main(argv=None):
    args = parser().parse_args(argv)
    if args.save_maps and (args.cls is not None or args.other_ckpt):
        raise ValueError("--save-maps cannot record a --class/--other-ckpt switch; save without it")
    maps = load_maps(args.maps)
    model, device, dtype = model_from_args(args)
    check_fits(maps, model, args.maps, ignore_sha=args.ignore_sha)
    N, C, H, W = maps.x0.shape
    check_range("--skip", args.skip, 0, len(maps.timesteps) - 1)
    maps = maps.to(device, dtype)
    src_eps = file_eps(model.unet, maps.extra)
    reuse = maps if maps.model_sha256 == model.sha256 else None  # the file's trajectory, when this model made it
    edited, notes = edits.apply_spec(src_eps, maps, spec_from(args, H, W, device, dtype), reuse=reuse,
                                     progress=not args.no_progress)
    tgt_eps = target_eps(args, model, src_eps, N, device, dtype)
    x = (edits.regenerate_switched(src_eps, tgt_eps, edited, args.skip, not args.no_progress, reuse=reuse)
         if tgt_eps is not src_eps else regenerate(src_eps, edited, progress=not args.no_progress, reuse=reuse)).cpu()
    report(args, x, maps, edited, notes)
    out = Path(args.out)
    paths = [out] if N == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(N)]
    for path, img, orig in zip(paths, x, maps.x0):
        save_png(path, torch.cat([orig.to(img.dtype), torch.ones(C, H, 2, dtype=img.dtype), img], dim=2)
                 if args.panel else img)
    print(f"wrote {', '.join(map(str, paths))}")
    if args.save_maps:
        save_maps(args.save_maps, edited.replace(x0=x, xT=edited.xT.cpu(), zs=edited.zs.cpu()))
        print(f"wrote {args.save_maps}")


if __name__ == "__main__":
    main_guard(main)
