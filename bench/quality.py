"""Sample quality, offline: the numbers of a model card's history row.

    python -m bench.quality --ckpt checkpoints/cifar10-cpu-cond.safetensors \
        --real data/cifar10-jpeg/test --ref data/cifar10-jpeg/train [--n 2000] [--n-class 500] [--steps 100]
    python -m bench.quality --ckpt checkpoints/celeba32-cpu.safetensors --real data/celeba --ref data/celeba

Prints, with the seeds fixed (samples are a deterministic function of --seed):
  - Frechet distance (Heusel et al. 2017, eq. 6 of the FID paper) between --n samples and all --real images, in the
    penultimate (512-d) features of the measuring classifier `bench/classifier.py`, with its bootstrap standard
    error over the samples (`frechet_se*`: how far another --seed would move it), next to its floor: the same
    distance from --n real --ref images to --real. Not comparable with Inception-feature FIDs. Images larger than
    the classifier's 32x32 are average-pooled to it, which hides every detail finer than 32x32; for them the
    distance is also computed on the images themselves (`*_native`, the ResNet's global pool accepts any size).
    With --against an earlier checkpoint: the change of the distance since it, from both checkpoints' samples of
    the same noise, with its paired standard error (`frechet_change*`): a milestone's move resolved where
    frechet_se, the error of another seed, is larger than the move.
  - mean chroma, mean over pixels of |x - mean over channels| in [-1, 1] units, of the samples and the real images,
    and the spread of their image means (`image_mean_spread`).
  - held-out L_simple and bits/dim (`ddpm.vlb`) on up to 1,000 --real images evenly spaced through the set, and
    the generalization gap (`loss_gap`): L_simple on up to 2,000 --real images minus on as many training images
    of the same source (`seen_like`) with the same t and noise, above 0 when the network memorizes its training set.
  - how much of the noise's image mean the network predicts, and the error it leaves in x0_hat's mean, at t = 990
    down to 200 (`mean_error`: whether colour casts come from the global mean), and how its predicted image mean
    responds to x_t's against the exact posterior's response (`mean_gain`).
  - class-conditional models: class agreement, the fraction of --n-class samples (an equal number per class) that
    the classifier assigns to their class, at guidance 1 and 3, per class, with the classifier's test accuracy
    (its ceiling) beside it.
--real/--ref: a CIFAR-10 ImageFolder split, or a CelebA folder (`--real` then reads its val/test partition and
`--ref` its train partition).
"""
import argparse
import json
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from bench import classifier
from ddpm.cli import main_guard
from ddpm.data import CelebAFaces, load_dataset
from ddpm.diffusion import q_sample, sample
from ddpm.evaluate import evenly_spaced, held_out, loss_gap
from ddpm.files import atomic_write
from ddpm.guidance import CIFAR10_CLASSES, guided_eps
from ddpm.images import save_png
from ddpm.models import load_model
from ddpm.schedule import make_steps, strided_timesteps


def images(ds: Dataset, n: int | None = None) -> tuple[Tensor, Tensor]:
    """(x, y): n images (all when None) evenly spaced through the set, in [-1, 1]."""
    x, y = zip(*DataLoader(evenly_spaced(ds, n or len(ds)), batch_size=500))
    return torch.cat(x), torch.cat(y)


def seen_like(unseen: Dataset, ref: str, size: int) -> Dataset:
    """Training images from the source of the held-out ones, for `loss_gap`: the --ref set, except for CelebA, whose
    held-out faces all come from the full-resolution archive and 93% of whose training faces from the half-resolution
    one (blurrier: their loss alone is 8-10% lower); there the training faces of the held-out faces' folders."""
    if isinstance(unseen, CelebAFaces):
        return CelebAFaces(sorted({f.parent.parent for f in unseen.files}), size, train=True)
    return load_dataset(ref, size, train=True)


@torch.no_grad()
def features(net: torch.nn.Module, x: Tensor, batch: int = 500, native: bool = False) -> Tensor:
    """The classifier's penultimate features (N, 512), float64: the ResNet up to its global average pool, on the
    32x32 images it was trained on (larger ones, e.g. 64x64 faces, are average-pooled to 32x32 first, unless
    native: then on the images as they are)."""
    if x.shape[-1] != 32 and not native:
        x = torch.nn.functional.adaptive_avg_pool2d(x, 32)
    body = torch.nn.Sequential(*list(net.children())[:-1])
    return torch.cat([body(x[k:k + batch].float()).flatten(1) for k in range(0, len(x), batch)]).double()


def moments(f: Tensor) -> tuple[Tensor, Tensor]:
    """(mu, C): the mean (D,) and covariance (D, D) of a feature set (N, D)."""
    return f.mean(0), torch.cov(f.T)


def sqrtm_psd(C: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding eigenvalues -> 0)."""
    w, V = torch.linalg.eigh(C)
    return (V * w.clamp(min=0).sqrt()) @ V.T


def frechet_from_moments(mu_a: Tensor, C_a: Tensor, mu_b: Tensor, C_b: Tensor, root_b: Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2)), float64.
    Tr (C_a C_b)^(1/2) = sum of the square roots of the eigenvalues of C_b^(1/2) C_a C_b^(1/2) (symmetric PSD);
    (mu_b, C_b, root_b = C_b^(1/2)) is `reference(b)`, computed once per real set."""
    tr_sqrt = torch.linalg.eigvalsh(root_b @ C_a @ root_b).clamp(min=0).sqrt().sum()
    return ((mu_a - mu_b).pow(2).sum() + C_a.trace() + C_b.trace() - 2 * tr_sqrt).item()


def reference(b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(mu_b, C_b, C_b^(1/2)) of a fixed feature set (N, D): all that distances to it need, computed once."""
    mu_b, C_b = moments(b)
    return mu_b, C_b, sqrtm_psd(C_b)


def frechet_distance(a: Tensor, b: Tensor | tuple) -> float:
    """The Frechet distance (`frechet_from_moments`) of two feature sets (N, D), float64; b may be `reference(b)`."""
    return frechet_from_moments(*moments(a), *(b if isinstance(b, tuple) else reference(b)))


def frechet_se(a: Tensor, b: Tensor | tuple, B: int = 100, seed: int = 0) -> float:
    """Bootstrap standard error of frechet_distance(a, b) from the finite set a (Efron 1979): the std over B
    resamples of a's rows with replacement, b fixed. It estimates how far the distance of another draw of the same
    number of samples (another --seed) would land: the error a milestone-to-milestone move must exceed to mean
    something. The real set b is the same at every milestone, so its own finiteness is left out (and its moments
    and their square root are computed once; b may be `reference(b)` already)."""
    ref = b if isinstance(b, tuple) else reference(b)
    return bootstrap_std(lambda k: frechet_from_moments(*moments(a[k]), *ref), len(a), B, seed)


def bootstrap_std(stat, n: int, B: int, seed: int) -> float:
    """The std of stat(k) over B resamples k of n row indices drawn with replacement (Efron 1979), seeded."""
    g = torch.Generator().manual_seed(seed)
    d = [stat(torch.randint(n, (n,), generator=g)) for _ in range(B)]
    return torch.tensor(d, dtype=torch.float64).std().item()


def frechet_change(a: Tensor, a_before: Tensor, b: Tensor | tuple, B: int = 100, seed: int = 0) -> tuple[float, float]:
    """(D(a, b) - D(a_before, b), its paired bootstrap standard error): the move of the Frechet distance between two
    checkpoints whose samples were drawn from the same noise (the same --seed, so row k of a and of a_before come
    from the same x_T and z_t: common random numbers). Each resample takes the same rows of both sets, so the draw's
    luck, which the two share, cancels in the difference; `frechet_se` of either set alone is the error of another
    --seed, several times larger than the change between neighbouring milestones."""
    if a.shape != a_before.shape:
        raise ValueError(f"paired sets must have the same shape, got {tuple(a.shape)} and {tuple(a_before.shape)}: "
                         "draw both checkpoints' samples with the same --n")
    ref = b if isinstance(b, tuple) else reference(b)
    se = bootstrap_std(lambda k: frechet_from_moments(*moments(a[k]), *ref)
                       - frechet_from_moments(*moments(a_before[k]), *ref), len(a), B, seed)
    return frechet_distance(a, ref) - frechet_distance(a_before, ref), se


def frechet(net: torch.nn.Module, samples: Tensor, ref_x: Tensor, real_x: Tensor, B: int = 100,
            before: Tensor | None = None) -> dict:
    """Frechet distance of the samples to the real images, its bootstrap standard error over B resamples
    (`frechet_se`) and its floor (ref_x to real_x) in the classifier's features at 32x32; for larger images also in
    its features of the images themselves (`*_native`). With `before`, an earlier checkpoint's samples from the same
    noise: also the paired change since then (`frechet_change`)."""
    out = {}
    for native in (False, True) if real_x.shape[-1] > 32 else (False,):
        key = "_native" if native else ""
        real, f_samples = reference(features(net, real_x, native=native)), features(net, samples, native=native)
        out["frechet_distance" + key] = frechet_distance(f_samples, real)
        out["frechet_se" + key] = frechet_se(f_samples, real, B)
        out["frechet_floor" + key] = frechet_distance(features(net, ref_x, native=native), real)
        if before is not None:
            change = frechet_change(f_samples, features(net, before, native=native), real, B)
            out["frechet_change" + key], out["frechet_change_se" + key] = change
    return out


def chroma(x: Tensor) -> float:
    """Mean |x - mean over channels|, [-1, 1] units: 0 for grey images; CIFAR-10 test images: ~0.10."""
    return (x.double() - x.double().mean(1, keepdim=True)).abs().mean().item()


def image_mean_spread(x: Tensor) -> float:
    """Std over images of each image's per-channel mean, averaged over the channels, [-1, 1] units: how far the
    images' overall colours and brightness vary (held-out CelebA faces at 64x64: ~0.24). Colour casts widen it."""
    return x.double().mean((2, 3)).std(0).mean().item()


def pairs_with(a, b) -> bool:
    """Whether `draw` turns the same seed into the same x_T and z_t for both models, so that their samples are
    paired (common random numbers): the same image size, class count, schedule, variance and x0 clipping. The
    networks may differ otherwise, e.g. a model and its `ddpm.grow` successor with more res blocks per level."""
    same = ("image_size", "in_ch", "num_classes")
    return (all(getattr(a.unet.cfg, k) == getattr(b.unet.cfg, k) for k in same)
            and torch.equal(a.sched.beta, b.sched.beta)
            and (a.variance, a.clip_x0) == (b.variance, b.clip_x0))


@torch.no_grad()
def draw(model, n: int, S: int, seed: int, labels: Tensor | None = None, w: float = 1.0, batch: int = 250) -> Tensor:
    """n samples (S strided DDPM steps, x0 clipped); with labels, classifier-free guided at scale w."""
    steps = make_steps(model.sched, strided_timesteps(S, model.sched.T))
    sigma = steps.sigma(model.variance)
    size = model.unet.cfg.image_size
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(0, n, batch):
        m = min(batch, n - k)
        eps = model.eps if labels is None else guided_eps(model.unet, labels[k:k + m], w)
        x_T = torch.randn((m, 3, size, size), generator=g)
        out.append(sample(eps, x_T, steps, sigma, generator=g, clip=model.clip_x0, progress=False))
    return torch.cat(out)


MEAN_ERROR_T = (990, 800, 600, 400, 200)


@torch.no_grad()
def mean_error(model, x: Tensor, ts: tuple[int, ...], seed: int) -> dict:
    """How much of the noise's per-channel image mean the network predicts at each timestep t in ts: the std of the
    error of eps_theta's spatial mean over the std of that mean itself (1: none of it; a good model: << 1), and the
    std of the resulting error of x0_hat's mean (Ho et al. 2020, eq. 15), which is the first times
    sqrt((1 - alpha_bar_t) / alpha_bar_t) / (image side): in [-1, 1] units, comparable across image sizes."""
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))  # the same noise at every t
    out = {}
    for t in ts:
        tt = torch.full((len(x),), t)
        eps_hat = model.eps(q_sample(x, tt, eps, model.sched), tt)
        ab = model.sched.alpha_bar[t].item()
        err = (eps_hat - eps).mean((2, 3))
        out[f"eps_mean_error_ratio_t{t}"] = (err.std() / eps.mean((2, 3)).std()).item()
        out[f"x0_hat_mean_error_std_t{t}"] = (err.std() * ((1 - ab) / ab) ** 0.5).item()
    return out


@torch.no_grad()
def mean_gain(model, x: Tensor, ts: tuple[int, ...], seed: int, c: float = 0.05) -> dict:
    """The network's response to the image mean of x_t, at each t in ts: a constant c added to one channel of x_t
    (x_t ~ q(x_t | x), Ho et al. 2020, eq. 4) changes eps_theta's mean over that channel by gain * c (averaged over the
    channels and images). Beside it the gain of the exact E[mean(eps) | mean(x_t)] for image means that spread like
    x's (per-channel variance V): Cov / Var = sqrt(1 - ab) / (H W ab V + 1 - ab), ab = alpha_bar_t: ~1 while the
    noise hides the image mean, ~0 once the mean is visible. A network whose gain does not follow it with t lets the
    sampler's image means drift (colour casts).
    The grey gain is the same for c added to every channel and the mean over all of them (V_grey: the variance of x's
    mean over channels and pixels, C H W in place of H W): a normalisation that removes the mean over its channels
    drops this direction first (the 8-group 64x64 face model: 0.03 at t = 990)."""
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    C, HW = x.shape[1], x.shape[-2] * x.shape[-1]
    V, V_grey = x.double().mean((2, 3)).var(0).mean().item(), x.double().mean((1, 2, 3)).var().item()
    out = {}
    for t in ts:
        tt = torch.full((len(x),), t)
        x_t = q_sample(x, tt, eps, model.sched)
        base = model.eps(x_t, tt).mean((2, 3))  # (B, C)
        gains = [(model.eps(x_t + c * torch.eye(C)[k].view(1, -1, 1, 1), tt).mean((2, 3))[:, k]
                  - base[:, k]).mean().item() / c for k in range(C)]
        grey = (model.eps(x_t + c, tt).mean((1, 2, 3)) - base.mean(1)).mean().item() / c
        ab = model.sched.alpha_bar[t].item()
        out[f"mean_gain_t{t}"] = sum(gains) / len(gains)
        out[f"mean_gain_exact_t{t}"] = (1 - ab) ** 0.5 / (HW * ab * V + 1 - ab)
        out[f"mean_gain_grey_t{t}"] = grey
        out[f"mean_gain_grey_exact_t{t}"] = (1 - ab) ** 0.5 / (C * HW * ab * V_grey + 1 - ab)
    return out


def class_agreement(model, net, n: int, S: int, seed: int, w: float) -> tuple[float, list[float]]:
    """Fraction of class-conditional samples the classifier assigns to their class: overall, per class."""
    k = len(CIFAR10_CLASSES)
    y = torch.arange(n) % k
    pred = classifier.predict(net, draw(model, n, S, seed, y, w)).argmax(1)
    hit = (pred == y).double()
    return hit.mean().item(), [hit[y == c].mean().item() for c in range(k)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--real", required=True, help="held-out real images (CIFAR-10 test split, or a CelebA folder)")
    p.add_argument("--ref", required=True, help="other real images for the floor (CIFAR-10 train, or a CelebA folder)")
    p.add_argument("--n", type=int, default=2000, help="samples for the Frechet distance and chroma")
    p.add_argument("--n-class", type=int, default=500, help="samples per guidance scale for class agreement")
    p.add_argument("--steps", type=int, default=100, help="strided sampling steps S")
    p.add_argument("--classifier", default=str(classifier.DEFAULT))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--against", help="an earlier checkpoint of the same model: also the paired change of the "
                   "Frechet distance since it (its samples drawn from the same noise)")
    p.add_argument("--grid", help="write the first 64 samples here (PNG)")
    p.add_argument("--json", help="also write the numbers to this file (one JSON object; a model card's source)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, (net, cmeta) = load_model(args.ckpt), classifier.load(args.classifier)
    size = model.unet.cfg.image_size
    unseen = load_dataset(args.real, size, train=False)
    real_x, _ = images(unseen)
    ref_x, _ = images(load_dataset(args.ref, size, train=True), n=args.n)
    before = load_model(args.against) if args.against else None  # checked before the hour of drawing
    if before is not None and not pairs_with(before, model):
        raise SystemExit(f"--against {args.against}: draws other images than --ckpt (image size, classes, schedule, "
                         "variance or clipping differ); give an earlier checkpoint of the same model")
    samples = draw(model, args.n, args.steps, args.seed)
    if args.grid:
        save_png(args.grid, samples[:64], nrow=8)
    # up to 128 distinct held-out images, spread over the set
    probe_x = real_x[torch.linspace(0, len(real_x) - 1, min(128, len(real_x))).long()]
    out = {"ckpt": args.ckpt, "sha256": model.sha256, "steps": args.steps, "n": args.n, "real_images": len(real_x),
           **frechet(net, samples, ref_x, real_x,
                     before=None if before is None else draw(before, args.n, args.steps, args.seed)),
           **({} if before is None else {"against": args.against, "against_sha256": before.sha256}),
           "chroma_samples": chroma(samples), "chroma_real": chroma(real_x),
           "image_mean_spread_samples": image_mean_spread(samples), "image_mean_spread_real": image_mean_spread(real_x),
           **held_out(model.unet, model.sched, unseen, n=1000, batch=250,
                      generator=torch.Generator().manual_seed(args.seed)),
           **loss_gap(model.unet, model.sched, seen_like(unseen, args.ref, size), unseen, n=2000, batch=250,
                      generator=torch.Generator().manual_seed(args.seed)),
           **mean_error(model, probe_x, MEAN_ERROR_T, args.seed), **mean_gain(model, probe_x, MEAN_ERROR_T, args.seed),
           "classifier_test_accuracy": cmeta["test_accuracy"]}
    if model.unet.cfg.num_classes:
        for w in (1.0, 3.0):
            agree, per_class = class_agreement(model, net, args.n_class, args.steps, args.seed + 1, w)
            out[f"class_agreement_cfg{w:g}"] = agree
            out[f"class_agreement_cfg{w:g}_per_class"] = dict(zip(CIFAR10_CLASSES, per_class))
    out["seconds"] = round(time.time() - t0)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text + "\n"))


if __name__ == "__main__":
    main_guard(main)
