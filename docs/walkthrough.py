"""A walkthrough from a real image to its noise maps and back, one idea per step, with the shipped model.

    python docs/walkthrough.py [--ckpt checkpoints/cifar10-cpu-cond.safetensors] [--out out/walkthrough] [--steps 50]

Each step prints the quantity it is about and, where a picture helps, writes a PNG to --out. Read it beside
docs/math.md: the section named in each heading is where the formula is derived.
"""
import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a file from anywhere: `python docs/walkthrough.py`

from ddpm import edits  # noqa: E402
from ddpm.diffusion import q_sample, reverse_step, timestep_batch, x0_hat  # noqa: E402
from ddpm.images import load_image  # noqa: E402
from ddpm.inversion import edit_friendly_stats, invert, map_stats  # noqa: E402
from ddpm.models import load_model  # noqa: E402
from ddpm.noisemap import invert_to_maps, regenerate  # noqa: E402
from ddpm.schedule import at, make_steps, strided_timesteps  # noqa: E402
from bench.figures import image_grid  # noqa: E402


def heading(text: str) -> None:
    print(f"\n== {text} ==")


def picture(path: Path, tiles: torch.Tensor, labels: list[str], caption: str) -> None:
    """One labelled row of images (K, 3, H, W) in [-1, 1] (`bench.figures.image_grid`)."""
    image_grid(path, {"": tiles}, labels, caption)


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "cifar10-cpu-cond.safetensors"))
    p.add_argument("--image", default=str(ROOT / "assets" / "cifar10" / "horse_0000.jpg"))
    p.add_argument("--out", default=str(ROOT / "out" / "walkthrough"))
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    out = Path(args.out)
    model = load_model(args.ckpt)
    sched, size = model.sched, model.unet.cfg.image_size
    x0 = load_image(args.image, size)[None]  # (1, 3, H, W) in [-1, 1]
    g = torch.Generator().manual_seed(0)

    heading("1. Forward process, Ho et al. eq. 4 (math.md: DDPM)")
    ts = torch.tensor([0, 100, 300, 500, 700, 999])
    eps = torch.randn((len(ts), *x0.shape[1:]), generator=g)
    x_t = q_sample(x0.expand(len(ts), -1, -1, -1), ts, eps, sched)
    for t, ab in zip(ts.tolist(), sched.alpha_bar[ts].tolist()):
        print(f"t = {t:3d}: alpha_bar_t = {ab:.4f}, signal sqrt(alpha_bar) = {ab ** 0.5:.3f}, "
              f"noise sqrt(1 - alpha_bar) = {(1 - ab) ** 0.5:.3f}")
    picture(out / "1_forward.png", x_t, [f"t = {t}" for t in ts.tolist()],
            "Forward process q(x_t | x_0): the image drowns in noise as t grows")
    print("1_forward.png: x_t at those t, left to right")

    heading("2. One reverse step by hand vs the library (math.md: Reverse step, Strided sampling)")
    steps = make_steps(sched, strided_timesteps(args.steps, sched.T))
    i = args.steps // 2
    x = x_t[3:4]  # some noisy image; the step does not care where it came from
    e = model.eps(x, timestep_batch(steps.t[i], x))
    ab_t, ab_prev = steps.alpha_bar_t[i].item(), steps.alpha_bar_prev[i].item()
    x0_pred = ((x - (1 - ab_t) ** 0.5 * e) / ab_t ** 0.5).clamp(-1, 1)  # Ho et al. eq. 15, clipped
    beta = 1 - ab_t / ab_prev  # strided beta'
    mean = ab_prev ** 0.5 * beta / (1 - ab_t) * x0_pred + (1 - beta) ** 0.5 * (1 - ab_prev) / (1 - ab_t) * x
    z = torch.randn(x.shape, generator=g)
    sigma = steps.sigma("fixed_small")
    by_hand = mean + sigma[i].item() * z
    library = reverse_step(x, e, z, i, steps, sigma, clip=True)
    print(f"step {i}: t = {steps.t[i].item()} -> {steps.t[i + 1].item()}, beta' = {beta:.4f}, "
          f"sigma = {sigma[i].item():.4f}")
    print(f"by hand vs reverse_step: max-abs difference {(by_hand - library).abs().max().item():.2e} (float32)")
    print(f"library x0_hat equals the hand-written one: "
          f"{torch.allclose(x0_hat(x, e, at(steps.alpha_bar_t, i, x), clip=True), x0_pred, atol=1e-6)}")

    heading("3. Inversion: independent x_t, solve each step for z_t, EF Algorithm 1 (math.md: The edit-friendly space)")
    inv = invert(model.eps, x0, steps, sched, generator=torch.Generator().manual_seed(0), progress=False)
    stats, closed = map_stats(inv.zs), edit_friendly_stats(steps)
    for k in (0, args.steps // 4, args.steps // 2, args.steps - 2):
        print(f"map {k:2d} (t = {steps.t[k].item():3d}): variance {stats['var'][k].item():6.2f} measured, "
              f"{closed['var'][k].item():6.2f} for an exact network; corr with the next map "
              f"{stats['corr_next'][k].item():+.2f} measured, {closed['corr_next'][k].item():+.2f} exact")
    print(f"last map (into x_0): {inv.zs[-1].abs().max().item():.3f} max-abs = residual x_0 - x0_hat divided by "
          f"sigma = {inv.sigma[-1].item():.4f}")
    ks = [0, args.steps // 2, args.steps - 2]
    picture(out / "3_maps.png", inv.zs[ks, 0] / 4, [f"z, t = {steps.t[k].item()}" for k in ks],  # (3, C, H, W) / 4
            "Edit-friendly maps z_t, divided by 4 to fit [-1, 1]: noise-like at high t; at low t the network's "
            "error takes over (larger variance, saturated here)")
    print("3_maps.png: the maps of the first, the middle and the second-to-last step (/ 4); the last one carries "
          "the network's error at low t, which is larger than the closed form's noise")

    heading("4. Exact reconstruction (math.md: Why the reconstruction is exact)")
    err = (inv.x0_rec - x0).abs().max().item()
    print(f"sampler(x_T, zs) vs x_0: max-abs error {err:.2e} (float32; 8-bit identical: "
          f"{torch.equal(((inv.x0_rec + 1) * 127.5).round(), ((x0 + 1) * 127.5).round())})")
    perturbed = inv.zs.clone()
    perturbed[args.steps // 2] += 1e-3
    maps, _ = invert_to_maps(model, x0, S=args.steps, progress=False)
    bad = regenerate(model.eps, maps.replace(zs=perturbed), progress=False)
    print(f"with one map moved by 1e-3: max-abs error {(bad - x0).abs().max().item():.2e}")

    heading("5. Edits on the maps (math.md: Manipulations)")
    shifted = regenerate(model.eps, edits.shift(maps, 6, 0), progress=False, reuse=maps)
    base = regenerate(model.eps, maps, progress=False, reuse=maps)
    offset, gain = edits.solve_color(model.eps, maps, torch.tensor([0.3, 0.0, 0.0]), base=base, reuse=maps)
    red = regenerate(model.eps, edits.color(maps, offset, t_range=edits.COLOR_T_RANGE), progress=False, reuse=maps)
    print(f"color: map offset {offset[0].item():.4f} for +0.3 red (gain {gain[0].item():.2f}); measured mean change "
          f"{edits.mean_change(red, base, None).tolist()}")
    picture(out / "5_edits.png", torch.cat([x0, base, shifted, red]),
            ["original", "reconstruction", "shift 6 px", "+0.3 red"], "Edits applied to the noise maps")
    print("5_edits.png: original | reconstruction | maps shifted 6 px (wrap) | +0.3 red")
    print(f"\nwrote {', '.join(sorted(f.name for f in out.glob('*.png')))} in {out}")


if __name__ == "__main__":
    main()
