"""Edit images through their noise maps and regenerate them.

    python edit.py out/maps.npz --ckpt CKPT --shift 4 0 --out out/shifted.png
    python edit.py out/maps.npz --ckpt CKPT --color 0.3 0 0 --out out/red.png --panel
    python edit.py a.npz --ckpt CKPT --paste b.npz --mask mask.png --out out/paste.png

With no edit it regenerates the inverted images exactly. Edits compose in the order
paste/mix -> shift -> color -> resample; --t-range HI LO limits them to timesteps in [LO, HI].
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddpm import edits
from ddpm.cli import add_model_flags, check_range, main_guard, model_from_args
from ddpm.guidance import class_eps, file_eps
from ddpm.images import ImageError, save_png
from ddpm.metrics import overlap, psnr, shift_image
from ddpm.models import load_model
from ddpm.noisemap import check_fits, load_maps, regenerate, save_maps


def load_mask(path: str, H: int, W: int) -> torch.Tensor:
    try:
        with Image.open(path) as im:
            m = im.convert("L").resize((W, H), Image.NEAREST)
    except OSError as e:
        raise ImageError(f"{path}: not a readable mask image ({e})")
    return torch.from_numpy((np.asarray(m) > 127).astype(np.float32))


def out_paths(out: Path, n: int) -> list[Path]:
    return [out] if n == 1 else [out.with_name(f"{out.stem}_{k}{out.suffix}") for k in range(n)]


def main(argv=None):
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG (OUT_k.png per image when there are several)")
    p.add_argument("--save-maps", help="write the edited maps (x0 = the regenerated image)")
    p.add_argument("--panel", action="store_true", help="write original | edit side by side")
    p.add_argument("--ignore-sha", action="store_true", help="edit with a model other than the maps' own")
    args = p.parse_args(argv)
    if args.save_maps and (args.cls is not None or args.other_ckpt):
        raise ValueError("--save-maps cannot record a --class/--other-ckpt switch; save without it")
    maps = load_maps(args.maps)
    model, device, dtype = model_from_args(args)
    check_fits(maps, model, args.maps, ignore_sha=args.ignore_sha)
    N, C, H, W = maps.x0.shape
    check_range("--skip", args.skip, 0, len(maps.timesteps) - 1)
    t_range = tuple(args.t_range) if args.t_range else None
    mask = load_mask(args.mask, H, W) if args.mask else None
    g = torch.Generator().manual_seed(args.seed)
    progress = not args.no_progress
    maps = maps.to(device, dtype)
    src_eps = file_eps(model.unet, maps.extra)
    # the file's trajectory serves the steps an edit leaves unchanged, when this model made it
    reuse = maps if maps.model_sha256 == model.sha256 else None

    edited = maps
    if args.paste:
        if mask is None:
            raise ValueError("--paste needs --mask")
        edited = edits.paste(edited, load_maps(args.paste).to(device, dtype), mask.to(device), t_range=t_range)
    if args.mix:
        edited = edits.mix(edited, load_maps(args.mix[0]).to(device, dtype), float(args.mix[1]), t_range=t_range)
    if args.shift:
        edited = edits.shift(edited, *args.shift, fill=args.fill, t_range=t_range, generator=g)
    base = None
    if args.color:
        base = regenerate(src_eps, maps, progress=progress, reuse=reuse)
        c_range = t_range or edits.COLOR_T_RANGE
        c_mask = None if mask is None else mask.to(device)
        offset, gain = edits.solve_color(src_eps, maps, torch.tensor(args.color), base=base, mask=c_mask,
                                         t_range=c_range, progress=progress, reuse=reuse)
        edited = edits.color(edited, offset, mask=c_mask, t_range=c_range)
        print(f"color: gain {[round(v, 3) for v in gain.tolist()]} (output per map unit, t in {list(c_range)}), "
              f"map offset {[round(v, 4) for v in offset.tolist()]}")
    if args.resample:
        edited = edits.resample(edited, tuple(args.resample), g)

    tgt_eps = src_eps
    if args.cls is not None:
        tgt_eps = class_eps(model.unet, args.cls, args.cfg, N)[0]
    if args.other_ckpt:
        other = load_model(args.other_ckpt).to(device, dtype)
        tgt_eps = other.eps if args.cls is None else class_eps(other.unet, args.cls, args.cfg, N)[0]
    switched = tgt_eps is not src_eps
    x = (edits.regenerate_switched(src_eps, tgt_eps, edited, args.skip, progress, reuse=reuse) if switched
         else regenerate(src_eps, edited, progress=progress, reuse=reuse)).cpu()
    x0 = maps.x0
    if edited is maps and not switched:
        print(f"no edit: max-abs error vs the inverted image {(x.double() - x0.double()).abs().max().item():.3e}")
    if args.shift:
        dx, dy = args.shift
        ps = psnr(overlap(x, dx, dy), overlap(shift_image(x0.to(x.dtype), dx, dy), dx, dy))
        print(f"shift ({dx}, {dy}): PSNR vs the shifted original on the overlap {ps.mean().item():.2f} dB")
    if args.color:
        change = edits.mean_change(x, base.cpu(), mask)
        print(f"color: requested {args.color}, measured mean change {[round(v, 3) for v in change.tolist()]}")
    out = Path(args.out)
    for path, img, orig in zip(out_paths(out, N), x, x0):
        save_png(path, torch.cat([orig.to(img.dtype), torch.ones(C, H, 2, dtype=img.dtype), img], dim=2)
                 if args.panel else img)
    print(f"wrote {', '.join(str(q) for q in out_paths(out, N))}")
    if args.save_maps:
        save_maps(args.save_maps, edited.replace(x0=x, xT=edited.xT.cpu(), zs=edited.zs.cpu()))
        print(f"wrote {args.save_maps}")


if __name__ == "__main__":
    main_guard(main)
