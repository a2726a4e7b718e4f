"""Draws docs/figures/ from the shipped model and shipped images (python -m bench.figures [--quick]), with matplotlib
(`pip install -r requirements-docs.txt`; `make figures` does it).

map_stats_var.png    variance of z_t per timestep for edit-friendly, DPM-Encoder and native noise, the closed form
                     for an exact network (`edit_friendly_stats`), and the variance's growth with S
map_stats_corr.png   correlation of consecutive maps, measured and closed form
maps.png             the maps z_t as images at a few t, for the three spaces
trajectory.png       x_t and x0_hat along the trajectory: independent draws (edit-friendly) vs Markov (DPM-Encoder)
recon_error.png      reconstruction max-abs error vs S: float32/float64, exact/batched/zero-last
shift_sweep.png      shifted maps -> images, for the periodic (wrap) and a non-periodic (zeros) fill
color_sweep.png      calibrated red offsets
"""
import argparse
import sys
import textwrap
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from ddpm import edits
from ddpm.cli import main_guard
from ddpm.diffusion import timestep_batch, x0_hat
from ddpm.files import atomic_write
from ddpm.images import from_unit, load_image, save_png
from ddpm.inversion import edit_friendly_stats, map_stats
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, regenerate
from ddpm.sample import native_maps
from ddpm.schedule import at, make_steps, strided_timesteps

ROOT = Path(__file__).resolve().parents[1]
SPACES = ("edit_friendly", "dpm_encoder", "native")


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG, atomically (ddpm.files.atomic_write), and close it."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt().close(fig)


def image_grid(path: Path, rows: dict, col_labels: list[str], caption: str) -> None:
    """Rows of tiles (each (K, 3, h, w) in [-1, 1]; rows may differ in size) with row and column labels,
    nearest-neighbour upscaled. Without matplotlib (the runtime install that `make demo` uses), the same tiles as a
    plain PNG grid, every tile upscaled to 4x the largest."""
    try:
        p = plt()
    except ImportError:
        size = 4 * max(t.shape[-1] for t in rows.values())
        tiles = torch.cat([torch.nn.functional.interpolate(t.detach().cpu(), size=(size, size), mode="nearest")
                           for t in rows.values()])
        save_png(path, tiles, nrow=len(col_labels))
        return
    R, K = len(rows), len(col_labels)
    fig, axes = p.subplots(R, K, figsize=(1.3 * K + 1.2, 1.3 * R + 0.8), squeeze=False)
    for r, (name, tiles) in enumerate(rows.items()):
        for k in range(K):
            ax = axes[r][k]
            ax.imshow(from_unit(tiles[k].detach().cpu().double()).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[k], fontsize=9)
            if k == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(textwrap.fill(caption, 18 * K + 14), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def stats_figures(out: Path, spaces: dict, sched, S: int, n: int, measured_S: dict) -> None:
    p = plt()
    closed = edit_friendly_stats(spaces["edit_friendly"].steps)
    stats = {k: map_stats(m.zs) for k, m in spaces.items()}
    t = spaces["edit_friendly"].timesteps.tolist()
    fig, (a, b) = p.subplots(1, 2, figsize=(11, 4))
    for k, st in stats.items():
        a.plot(t[:-1], st["var"][:-1].tolist(), label=f"{k} (measured)")
    a.plot(t[:-1], closed["var"][:-1].tolist(), "k--", label="edit-friendly, exact network (closed form)")
    a.axhline(1.0, color="grey", lw=0.8, label="N(0, I): var = 1")
    a.set(yscale="log", xlabel="timestep t of the step", ylabel="Var(z_t)", title=f"map variance, S = {S}, {n} images")
    a.invert_xaxis()
    a.legend(fontsize=8)
    Sg = [10, 20, 50, 100, 200, 500, 1000]
    med = [edit_friendly_stats(make_steps(sched, strided_timesteps(s)))["var"][:-1]
           .median().item() for s in Sg]
    b.plot(Sg, med, "k--o", label="closed form (exact network)")
    b.plot(list(measured_S), list(measured_S.values()), "C0o-", label="edit-friendly, shipped model (measured)")
    b.set(xscale="log", yscale="log", xlabel="number of steps S", ylabel="median Var(z_t) over steps",
          title="the variance grows about in proportion to S")
    b.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "map_stats_var.png")

    fig, a = p.subplots(figsize=(6.5, 4))
    for k, st in stats.items():
        a.plot(t[:-2], st["corr_next"][:-2].tolist(), label=f"{k} (measured)")
    a.plot(t[:-2], closed["corr_next"][:-2].tolist(), "k--", label="edit-friendly, exact network (closed form)")
    a.axhline(0.0, color="grey", lw=0.8, label="independent maps: 0")
    a.set(xlabel="timestep t of the step", ylabel="corr(z_t, next z)", ylim=(-1, 1),
          title=f"correlation of consecutive maps, S = {S}")
    a.invert_xaxis()
    a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / "map_stats_corr.png")
    for k, st in stats.items():
        print(f"{k}: var median {st['var'][:-1].median():.2f}, corr median {st['corr_next'][:-2].median():.3f}")
    print(f"closed form: var median {closed['var'][:-1].median():.2f}, corr median {closed['corr_next'][:-2].median():.3f}")


def trajectory_figure(out: Path, model, x0: torch.Tensor, S: int) -> None:
    """x_t of the drawn trajectory and the network's x0_hat from it, at a few steps, for both draws."""
    from ddpm.inversion import draw_trajectory

    steps = make_steps(model.sched, strided_timesteps(S, model.sched.T))
    picks = [0, S // 4, S // 2, 3 * S // 4, S - 1]
    rows = {}
    for method in ("edit_friendly", "dpm_encoder"):
        xs = draw_trajectory(x0[:1], steps, model.sched, method, torch.Generator().manual_seed(0))
        x_t = torch.cat([xs[i] for i in picks])
        eps = torch.cat([model.eps(xs[i], timestep_batch(steps.t[i], xs[i])) for i in picks])
        ab = torch.cat([at(steps.alpha_bar_t, i, xs[i]) for i in picks])
        rows[f"{method}: x_t"] = x_t
        rows[f"{method}: x0_hat"] = x0_hat(x_t, eps, ab, clip=True)
    image_grid(out / "trajectory.png", rows, [f"t = {steps.t[i].item()}" for i in picks],
               "x_t drawn independently (edit-friendly) or as a Markov chain (DPM-Encoder), and the network's x0_hat")


def recon_figure(out: Path, model, x0: torch.Tensor, quick: bool) -> None:
    p = plt()
    fig, a = p.subplots(figsize=(8.5, 4))
    for dtype, style in ((torch.float32, "-o"), (torch.float64, "--s")):
        # float64 convolutions are ~10x slower on a CPU: S <= 100 keeps the script within minutes
        Ss = [5, 10] if quick else [10, 50, 100, 500] if dtype == torch.float32 else [10, 50, 100]
        model.to("cpu", dtype)
        for label, kw in (("exact", {}), ("batched", {"mode": "batched", "chunk": 10}), ("zero-last", {"last": "zero"})):
            errs = [(invert_to_maps(model, x0[:1].to(dtype), S=s, progress=False, **kw)[1] - x0[:1].to(dtype))
                    .abs().max().item() for s in Ss]
            a.plot(Ss, [max(e, 1e-20) for e in errs], style, label=f"{label}, {str(dtype)[6:]}")
            print(f"recon error {label} {dtype}: " + ", ".join(f"S={s}: {e:.1e}" for s, e in zip(Ss, errs)))
    model.to("cpu", torch.float32)
    a.axhline(1e-4, color="grey", lw=0.8, label="float32 bound (8-bit identical)")
    a.set(xscale="log", yscale="log", xlabel="steps S", ylabel="max-abs error, [-1, 1] units", ylim=(1e-20, 1),
          title="reconstruction error of one real image (an error of exactly 0 is drawn at 1e-20)")
    a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    save_figure(fig, out / "recon_error.png")


@torch.no_grad()
def main(argv=None):
    pa = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pa.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "cifar10-cpu-cond.safetensors"))
    pa.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    pa.add_argument("--quick", action="store_true", help="reduced mode for tests: S=10, 2 images, 2 shifts, 2 colours")
    args = pa.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    S, n = (10, 2) if args.quick else (100, 4)
    model = load_model(args.ckpt)
    x0 = torch.stack([load_image(f, 32) for f in sorted((ROOT / "assets" / "cifar10").glob("*.jpg"))[:n]])
    spaces = {m: invert_to_maps(model, x0, S=S, method=m, progress=False)[0] for m in SPACES[:2]}
    spaces["native"] = native_maps(model, n, S, seed=1)
    measured_S = {s: map_stats(invert_to_maps(model, x0, S=s, progress=False)[0].zs)["var"][:-1].median().item()
                  for s in ([5, 10] if args.quick else [10, 20, 50, 100])}
    stats_figures(out, spaces, model.sched, S, n, measured_S)

    picks = [0, S // 2, S - 2, S - 1]
    image_grid(out / "maps.png", {k: torch.cat([m.zs[i][:1] for i in picks]) / 3 for k, m in spaces.items()},
               [f"z at t = {spaces['native'].timesteps[i].item()}" for i in picks],
               f"maps of one image (divided by 3; grey = 0), S = {S}; the last column is the step into x_0")
    trajectory_figure(out, model, x0, S)
    recon_figure(out, model, x0, args.quick)

    shifts = [0, 4] if args.quick else [0, 2, 4, 8]
    rows = {f"{k}\n{fill}": torch.stack([regenerate(model.eps, edits.shift(m, d, 0, fill=fill), progress=False)[0]
                                         for d in shifts]) for fill in ("wrap", "zeros") for k, m in spaces.items()}
    image_grid(out / "shift_sweep.png", rows, [f"shift {d} px" for d in shifts],
               f"all maps shifted right, S = {S}: with the periodic wrap fill every space follows; with zeros, "
               "edit-friendly keeps the image")
    reds = [-0.3, 0.3] if args.quick else [-0.3, -0.15, 0.0, 0.15, 0.3]
    maps = spaces["edit_friendly"]
    base = regenerate(model.eps, maps, progress=False)
    gain = edits.solve_color(model.eps, maps, torch.tensor([0.1, 0, 0]), base=base, newton_steps=0)[1]
    rows = {k: torch.stack([regenerate(model.eps, edits.color(m, torch.tensor([r / gain[0].item(), 0, 0]),
                                                              t_range=edits.COLOR_T_RANGE), progress=False)[0]
                            for r in reds]) for k, m in spaces.items()}
    image_grid(out / "color_sweep.png", rows, [f"red {r:+.2f}" for r in reds],
               "a constant red offset in the maps of t <= 200, calibrated on edit-friendly maps")
    print(f"wrote {', '.join(sorted(q.name for q in out.glob('*.png')))} to {out}")


if __name__ == "__main__":
    main_guard(main)
