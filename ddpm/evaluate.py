"""What a model reports about itself: held-out L_simple and bits/dim, and sample grids. Used by the trainer at its
milestones and by `bench/quality.py`, so a model card's numbers and the bench's are the same computation."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .diffusion import loss_simple, sample
from .guidance import guided_eps
from .schedule import Schedule, make_steps, strided_timesteps
from .unet import UNet
from .vlb import bits_per_dim, mean_ci


def evenly_spaced(dataset: Dataset, n: int) -> Subset:
    """n items spread over the whole dataset (an ImageFolder lists its images class by class)."""
    N = len(dataset)
    n = min(n, N)
    return Subset(dataset, list(range(0, N, N // n))[:n])


def labelled(unet: UNet, y: Tensor):
    """eps_theta(x_t, t) of the images' true labels y for a class-conditional network, else the network itself."""
    return (lambda x_t, t: unet(x_t, t, y)) if unet.cfg.num_classes else unet


@torch.no_grad()
def held_out(unet: UNet, sched: Schedule, dataset: Dataset, *, n: int, batch: int, generator: torch.Generator,
             device: torch.device | str = "cpu") -> dict:
    """Held-out L_simple (Ho et al. eq. 14) and the bound in bits/dim (`vlb.bits_per_dim`), means with 95% intervals,
    over n images evenly spaced through `dataset`; a class-conditional network is given the images' true labels."""
    subset = evenly_spaced(dataset, n)
    losses, bpds = [], []
    for x, y in DataLoader(subset, batch_size=batch):
        x, y = x.to(device), y.to(device)
        eps_model = labelled(unet, y)
        t = torch.randint(0, sched.T, (x.shape[0],), generator=generator).to(device)
        eps = torch.randn(x.shape, generator=generator).to(device)
        losses.append(loss_simple(eps_model, x, sched, t=t, eps=eps).cpu())
        bpds.append(bits_per_dim(eps_model, x, sched, generator).cpu())
    (loss, loss_ci), (bpd, bpd_ci) = mean_ci(torch.cat(losses)), mean_ci(torch.cat(bpds))
    return {"eval_images": len(subset), "eval_loss": loss, "eval_loss_ci95": loss_ci, "bits_per_dim": bpd,
            "bits_per_dim_ci95": bpd_ci}


@torch.no_grad()
def loss_gap(unet: UNet, sched: Schedule, seen: Dataset, unseen: Dataset, *, n: int, batch: int,
             generator: torch.Generator, device: torch.device | str = "cpu") -> dict:
    """How much better the network fits its training images than new ones: L_simple (Ho et al. eq. 14) on up to n
    unseen (held-out) images minus on as many seen (training) images, each set evenly spaced, where the k-th image of
    both gets the same t and eps. The difference is paired, so the spread of the loss over t, most of its variance,
    cancels from its 95% interval; 0 for a network that generalizes, above 0 when it starts to memorize."""
    m = min(n, len(seen), len(unseen))
    gaps, fits = [], []
    for (xu, yu), (xs, ys) in zip(DataLoader(evenly_spaced(unseen, m), batch_size=batch),
                                  DataLoader(evenly_spaced(seen, m), batch_size=batch)):
        t = torch.randint(0, sched.T, (xu.shape[0],), generator=generator).to(device)
        eps = torch.randn(xu.shape, generator=generator).to(device)
        lu, ls = (loss_simple(labelled(unet, y.to(device)), x.to(device), sched, t=t, eps=eps).cpu()
                  for x, y in ((xu, yu), (xs, ys)))
        gaps.append(lu - ls)
        fits.append(ls)
    (g, g_ci), (fit, fit_ci) = mean_ci(torch.cat(gaps)), mean_ci(torch.cat(fits))
    return {"gap_images": m, "train_loss": fit, "train_loss_ci95": fit_ci, "loss_gap": g, "loss_gap_ci95": g_ci}


@torch.no_grad()
def sample_grid(unet: UNet, sched: Schedule, *, S: int, cfg_scale: float, generator: torch.Generator,
                n: int = 64) -> tuple[Tensor, int]:
    """(samples, columns) for a grid: n unconditional samples, or for a class-conditional network one row of 8 per
    class at guidance cfg_scale; S strided DDPM steps (fixed_small), x0 clipped."""
    steps = make_steps(sched, strided_timesteps(S, sched.T))
    k, size = unet.cfg.num_classes, unet.cfg.image_size
    n = 8 * k if k else n
    eps_model = guided_eps(unet, torch.arange(n) // 8, cfg_scale) if k else unet
    device = next(unet.parameters()).device
    x_T = torch.randn((n, unet.cfg.in_ch, size, size), generator=generator).to(device)
    return sample(eps_model, x_T, steps, steps.sigma("fixed_small"), generator=generator, progress=False), 8
