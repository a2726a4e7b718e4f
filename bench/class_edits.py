"""Semantic editing by changing the condition (paper sec. 5), at CIFAR scale with class labels: invert real
CIFAR-10 test images with their source class, keep the maps, regenerate with a target class from step `skip`.

    python -m bench.class_edits [--ckpt checkpoints/cifar10-cpu-cond.safetensors] [--n 8] [--steps 50] \\
        [--skips 10 20 30] [--cfgs 1 3 6] [--pairs cat:dog dog:cat ...] [--figures docs/figures]

Methods: edit_friendly and dpm_encoder (maps fixed, class changed; CycleDiffusion when the class acts as the
second model) and ddim (deterministic eta = 0 inversion, the baseline the paper compares against). Inversion uses
the source class with guidance --cfg-src; regeneration the target class with each guidance scale in --cfgs.
Measured on the outputs: the fraction the classifier (bench/classifier.py) assigns to the target class, and the
structure kept, SSIM and PSNR of the luminance against the input. Also written: a panel of real images edited into
every class, and a panel comparing the methods.
"""
import argparse
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

ROOT = Path(__file__).resolve().parents[1]

from bench import classifier
from bench.figures import image_grid
from ddpm.cli import main_guard
from ddpm.guidance import CIFAR10_CLASSES, class_index, guided_eps
from ddpm.images import load_image
from ddpm.inversion import ddim_invert, ddim_regenerate
from ddpm.metrics import luminance, psnr, ssim
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, regenerate
from ddpm.schedule import make_steps, strided_timesteps

METHODS = ("edit_friendly", "dpm_encoder", "ddim")
PAIRS = ("cat:dog", "dog:cat", "automobile:truck", "horse:deer")


def test_images(data: Path, name: str, n: int) -> torch.Tensor:
    files = sorted((data / name).glob("*.jpg"))[:n]
    if len(files) < n:
        raise SystemExit(f"error: {data / name}: fewer than {n} images; extract the data first: "
                         "mkdir -p data && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C data/")
    return torch.stack([load_image(f, 32) for f in files])


class Editor:
    """Inversions cached per (method, skip): the maps (or DDIM's x at timesteps[skip]) do not depend on the target."""

    def __init__(self, model, S: int, cfg_src: float):
        self.model, self.S, self.cfg_src, self.cache = model, S, cfg_src, {}

    def eps(self, y: torch.Tensor, w: float):
        return guided_eps(self.model.unet, y, w)

    def invert(self, method: str, x0, y_src, skip: int):
        key = (method, skip)
        if key not in self.cache:
            src = self.eps(y_src, self.cfg_src)
            if method == "ddim":
                steps = make_steps(self.model.sched, strided_timesteps(self.S, self.model.sched.T))[skip:]
                self.cache[key] = (steps, ddim_invert(src, x0, steps, progress=False))
            else:
                self.cache[key] = invert_to_maps(self.model, x0, S=self.S, skip=skip, method=method, eps_model=src,
                                                 progress=False)[0]
        return self.cache[key]

    def edit(self, method: str, x0, y_src, y_tgt, skip: int, w: float):
        inv = self.invert(method, x0, y_src, skip)
        tgt = self.eps(y_tgt, w)
        if method == "ddim":
            steps, x = inv
            return ddim_regenerate(tgt, x, steps, progress=False)
        return regenerate(tgt, inv, progress=False)


def scores(clf, out, x0, y_tgt) -> tuple[float, float, float]:
    hit = (classifier.predict(clf, out).argmax(1) == y_tgt).float().mean().item()
    lo, li = luminance(out), luminance(x0)
    return hit, ssim(lo, li).mean().item(), psnr(lo, li).mean().item()


def dominated(p, others) -> bool:
    """True when some point of `others` is at least as good in both target fraction and SSIM, better in one."""
    return any(o[0] >= p[0] and o[1] >= p[1] and (o[0] > p[0] or o[1] > p[1]) for o in others)


@torch.no_grad()
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "cifar10-cpu-cond.safetensors"))
    p.add_argument("--classifier", default=str(classifier.DEFAULT))
    p.add_argument("--data", default=str(ROOT / "data" / "cifar10-jpeg" / "test"))
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), help="source:target class pairs")
    p.add_argument("--n", type=int, default=8, help="held-out test images per pair")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--skips", type=int, nargs="+", default=[10, 20, 30])
    p.add_argument("--cfgs", type=float, nargs="+", default=[1.0, 3.0, 6.0])
    p.add_argument("--cfg-src", type=float, default=1.0)
    p.add_argument("--panel-skip", type=int, default=20)
    p.add_argument("--panel-cfg", type=float, default=3.0)
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    model = load_model(a.ckpt)
    K = model.unet.cfg.num_classes
    if not K:
        raise SystemExit(f"error: {a.ckpt} is unconditional; use a class-conditional model (train.py --class-cond)")
    clf, clf_meta = classifier.load(a.classifier)
    pairs = [tuple(class_index(c, K) for c in s.split(":")) for s in a.pairs]
    data = Path(a.data)
    x0 = torch.cat([test_images(data, CIFAR10_CLASSES[s], a.n) for s, _ in pairs])
    y_src = torch.tensor([s for s, _ in pairs]).repeat_interleave(a.n)
    y_tgt = torch.tensor([t for _, t in pairs]).repeat_interleave(a.n)
    ed = Editor(model, a.steps, a.cfg_src)

    src_hit = (classifier.predict(clf, x0).argmax(1) == y_src).float().mean().item()
    print(f"model {a.ckpt} ({model.sha256[:12]}), classifier test accuracy {clf_meta['test_accuracy']:.3f}; "
          f"{len(x0)} real CIFAR-10 test images, pairs {' '.join(a.pairs)}; S = {a.steps}, cfg_src = {a.cfg_src}")
    print(f"inputs: classified as their source class {src_hit:.3f}, as the target "
          f"{(classifier.predict(clf, x0).argmax(1) == y_tgt).float().mean().item():.3f}")
    print("\nreconstruction with the source class (max-abs error, [-1, 1] units):")
    for skip in a.skips:
        cells = []
        for m in METHODS:
            rec = ed.edit(m, x0, y_src, y_src, skip, a.cfg_src)
            cells.append(f"{m} {(rec - x0).abs().max().item():.1e}")
        print(f"  skip {skip}: " + ", ".join(cells))

    print("\n| method | skip | cfg_tar | to target | SSIM lum | PSNR lum dB |\n|---|---|---|---|---|---|")
    points = {m: [] for m in METHODS}
    for m in METHODS:
        for skip in a.skips:
            for w in a.cfgs:
                hit, s, ps = scores(clf, ed.edit(m, x0, y_src, y_tgt, skip, w), x0, y_tgt)
                points[m].append((hit, s, skip, w))
                print(f"| {m} | {skip} | {w:g} | {hit:.3f} | {s:.3f} | {ps:.2f} |", flush=True)

    ef, dd = points["edit_friendly"], points["ddim"]
    print(f"\ntrade-off (target fraction vs SSIM): {sum(dominated(q, ef) for q in dd)}/{len(dd)} ddim settings are "
          f"dominated by an edit_friendly setting, {sum(dominated(q, dd) for q in ef)}/{len(ef)} edit_friendly "
          "settings by a ddim one")
    same = [(e[0] - d[0], e[1] - d[1]) for e, d in zip(ef, dd)]
    print("edit_friendly minus ddim at the same (skip, cfg): target fraction "
          f"{sum(x for x, _ in same) / len(same):+.3f}, SSIM {sum(y for _, y in same) / len(same):+.3f} (means)")

    figs = Path(a.figures)
    rows = torch.cat([x0[k * a.n:k * a.n + 2] for k in range(len(pairs))])  # two images per pair
    ys = torch.cat([y_src[k * a.n:k * a.n + 2] for k in range(len(pairs))])
    ys_t = torch.cat([y_tgt[k * a.n:k * a.n + 2] for k in range(len(pairs))])
    names = [f"{CIFAR10_CLASSES[s]} {j % 2 + 1}" for j, s in enumerate(ys.tolist())]
    panel_ed = Editor(model, a.steps, a.cfg_src)
    cols = [rows] + [panel_ed.edit("edit_friendly", rows, ys, torch.full_like(ys, c), a.panel_skip, a.panel_cfg)
                     for c in range(K)]
    image_grid(figs / "class_edits.png", dict(zip(names, torch.stack(cols, 1))), ["input", *CIFAR10_CLASSES[:K]],
               f"Edit-friendly class edits: real test images (rows) regenerated from their maps with each class "
               f"(columns), skip {a.panel_skip} of S = {a.steps}, guidance {a.panel_cfg:g}")
    cols = [rows] + [panel_ed.edit(m, rows, ys, ys_t, a.panel_skip, a.panel_cfg) for m in METHODS]
    image_grid(figs / "class_edits_methods.png",
               {f"{n}\n-> {CIFAR10_CLASSES[t]}": c for n, t, c in zip(names, ys_t.tolist(), torch.stack(cols, 1))},
               ["input", "edit-friendly", "DPM-Encoder", "DDIM inversion"],
               f"Into the pair's target class, skip {a.panel_skip}, guidance {a.panel_cfg:g}")
    print(f"\nwrote {figs / 'class_edits.png'} (rows: input | edit-friendly edit into each of the {K} classes, "
          f"skip {a.panel_skip}, cfg {a.panel_cfg:g}) and {figs / 'class_edits_methods.png'} (input | "
          f"{' | '.join(METHODS)}, into the pair's target); {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main_guard(main)
