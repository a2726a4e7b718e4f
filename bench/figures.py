"""Draws docs/figures/ from the shipped model and shipped images (python -m bench.figures [--quick]).

1. map_stats_var.png, map_stats_corr.png   variance of z_t and correlation of consecutive maps per timestep:
                      edit-friendly vs DPM-Encoder vs native DDPM noise (the paper's claim: edit-friendly maps
                      are neither standard normal nor independent)
2. recon_error.png    reconstruction max-abs error vs steps S, float32/float64, exact/batched/zero-last
3. shift_sweep.png    rows: edit-friendly, DPM-Encoder, native; columns: shift 0, 2, 4, 8 px
   color_sweep.png    rows as above; columns: red offset -0.3 ... +0.3 (edit-friendly calibrated)
"""
import argparse
import math
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]

from ddpm import edits
from ddpm.images import grid, load_image
from ddpm.inversion import map_stats
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, regenerate
from ddpm.sample import native_maps

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def line_plot(path, title, series: dict, xlabel, ylabel, log_y=False, size=(640, 400)):
    """A minimal line chart: series {name: (xs, ys)}; y on a log10 axis if log_y."""
    W, H, L, R, Tm, B = *size, 70, 170, 30, 45
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    tf = (lambda v: math.log10(max(v, 1e-300))) if log_y else (lambda v: v)
    pts = [(x, tf(y)) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(y)]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    y0, y1 = (y0 - 0.5, y1 + 0.5) if y1 - y0 < 1e-12 else (y0 - 0.05 * (y1 - y0), y1 + 0.05 * (y1 - y0))
    X = lambda x: L + (x - x0) / max(x1 - x0, 1e-12) * (W - L - R)  # noqa: E731
    Y = lambda y: H - B - (y - y0) / (y1 - y0) * (H - B - Tm)  # noqa: E731
    d.rectangle([L, Tm, W - R, H - B], outline="black")
    for k in range(5):
        yv, xv = y0 + k * (y1 - y0) / 4, x0 + k * (x1 - x0) / 4
        d.text((5, Y(yv) - 6), f"1e{yv:.1f}" if log_y else f"{yv:.3g}", fill="black")
        d.text((X(xv) - 12, H - B + 5), f"{xv:.0f}", fill="black")
    d.text((L, 8), title, fill="black")
    d.text(((W - R + L) // 2 - 30, H - 18), xlabel, fill="black")
    d.text((5, Tm - 14), ylabel, fill="black")
    for k, (name, (xs, ys)) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        p = [(X(x), Y(tf(y))) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(p) > 1:
            d.line(p, fill=c, width=2)
        for q in p if len(p) < 30 else []:
            d.ellipse([q[0] - 3, q[1] - 3, q[0] + 3, q[1] + 3], fill=c)
        d.line([W - R + 10, Tm + 10 + 16 * k, W - R + 30, Tm + 10 + 16 * k], fill=c, width=3)
    img = img.crop((0, 0, W, H))
    full = Image.new("RGB", (W, H), "white")
    full.paste(img)
    dd = ImageDraw.Draw(full)
    for k, name in enumerate(series):
        dd.text((W - R + 34, Tm + 4 + 16 * k), name, fill="black")
    full.save(path)


def labelled_grid(path, rows: dict, col_labels):
    """Rows of image tiles (each (K, 3, h, w) in [-1, 1]) with row and column labels, upscaled 3x."""
    tiles = torch.cat(list(rows.values()))
    g = grid(tiles, nrow=len(col_labels))
    img = Image.fromarray(((g.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    img = img.resize((img.width * 3, img.height * 3), Image.NEAREST)
    canvas = Image.new("RGB", (img.width + 110, img.height + 20), "white")
    canvas.paste(img, (110, 20))
    d = ImageDraw.Draw(canvas)
    step = img.width / len(col_labels)
    for k, c in enumerate(col_labels):
        d.text((110 + k * step + 10, 4), c, fill="black")
    for k, r in enumerate(rows):
        d.text((4, 20 + (k + 0.5) * img.height / len(rows)), r, fill="black")
    canvas.save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "cifar10-cpu.safetensors"))
    p.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    p.add_argument("--quick", action="store_true", help="reduced mode for tests: S=10, 2 images")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    S, n = (10, 2) if args.quick else (100, 4)
    model = load_model(args.ckpt)
    x0 = torch.stack([load_image(f, 32) for f in sorted((ROOT / "assets" / "cifar10").glob("*.jpg"))[:n]])
    spaces = {m: invert_to_maps(model, x0, S=S, method=m, progress=False)[0] for m in ("edit_friendly", "dpm_encoder")}
    spaces["native"] = native_maps(model, n, S, seed=1)

    stats = {k: map_stats(m.zs[:-1]) for k, m in spaces.items()}  # the last map absorbs the residual: excluded
    ts = {k: m.timesteps[:-1].tolist() for k, m in spaces.items()}
    line_plot(out / "map_stats_var.png", f"variance of z_t per timestep (S={S}, {n} real images)",
              {k: (ts[k], st["var"].tolist()) for k, st in stats.items()}, "timestep t", "var(z_t)", log_y=True)
    line_plot(out / "map_stats_corr.png", "correlation of consecutive maps corr(z_t, z_t-1)",
              {k: (ts[k][:-1], st["corr_next"][:-1].tolist()) for k, st in stats.items()}, "timestep t", "corr")
    for k, st in stats.items():
        print(f"{k}: var(z_t) median {st['var'].median():.3f} [min {st['var'].min():.3f}, max {st['var'].max():.3f}], "
              f"corr(z_t, z_t-1) median {st['corr_next'][:-1].median():.3f}")

    series = {}
    for dtype in (torch.float32, torch.float64):
        # float64 convolutions are ~10x slower on a CPU: S <= 100 keeps the script within 10 minutes
        Ss = [10, 20] if args.quick else [10, 50, 100, 500] if dtype == torch.float32 else [10, 50, 100]
        model.to("cpu", dtype)
        for label, kw in (("exact", {}), ("batched", {"mode": "batched", "chunk": 10}), ("zero-last", {"last": "zero"})):
            errs = [(invert_to_maps(model, x0[:1].to(dtype), S=s, progress=False, **kw)[1] - x0[:1].to(dtype))
                    .abs().max().item() for s in Ss]
            series[f"{label} {str(dtype)[6:]}"] = (Ss, [max(e, 1e-20) for e in errs])
            print(f"recon error {label} {dtype}: " + ", ".join(f"S={s}: {e:.1e}" for s, e in zip(Ss, errs)))
    model.to("cpu", torch.float32)
    line_plot(out / "recon_error.png", "reconstruction max-abs error vs steps", series, "steps S", "max-abs error",
              log_y=True)

    shifts = [0, 2, 4, 8]
    rows = {k: torch.stack([regenerate(model.eps, edits.shift(m, d, 0), progress=False)[0] for d in shifts])
            for k, m in spaces.items()}
    labelled_grid(out / "shift_sweep.png", rows, [f"shift {d}px" for d in shifts])
    reds = [-0.3, -0.15, 0.0, 0.15, 0.3]
    maps = spaces["edit_friendly"]
    base = regenerate(model.eps, maps, progress=False)
    gain = edits.solve_color(model.eps, maps, torch.tensor([0.1, 0, 0]), base=base, newton_steps=0)[1]
    rows = {k: torch.stack([regenerate(model.eps, edits.color(m, torch.tensor([r / gain[0].item(), 0, 0]),
                                                              t_range=edits.COLOR_T_RANGE), progress=False)[0]
                            for r in reds]) for k, m in spaces.items()}
    labelled_grid(out / "color_sweep.png", rows, [f"red {r:+.2f}" for r in reds])
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} to {out}")


if __name__ == "__main__":
    main()
