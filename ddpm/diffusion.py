"""DDPM forward process, training loss and reverse step (Ho et al. 2020), DDIM generalisation (Song et al. 2021).

The reverse step is a pure function of (x_t, eps, z): x_prev = mu_t(x_t) + sigma_t z. The sampler
G(x_T, z_1..z_S) -> x_0 built from it is the map that `ddpm.inversion` inverts, and both import the
same `x0_hat`, `mu_t` and `reverse_step`, so they cannot drift apart.
"""
from __future__ import annotations

from typing import Callable, Iterator, Literal, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .schedule import Schedule, Steps, at

# eps_model(x_t, t) -> eps, with t a (B,) int64 tensor of training timesteps.
EpsModel = Callable[[Tensor, Tensor], Tensor]
Mean = Literal["ddpm", "ddim"]
LossWeight = Literal["simple", "p2", "min-snr"]
LOSS_WEIGHTS: tuple[str, ...] = get_args(LossWeight)


def q_sample(x0: Tensor, t: Tensor, eps: Tensor, sched: Schedule) -> Tensor:
    """x_t ~ q(x_t | x_0) (Ho et al. 2020, eq. 4): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
    alpha_bar = sched.alpha_bar
    return at(alpha_bar.sqrt(), t, x0) * x0 + at((1.0 - alpha_bar).sqrt(), t, x0) * eps


def loss_simple(eps_model: EpsModel, x0: Tensor, sched: Schedule, *, t: Tensor, eps: Tensor) -> Tensor:
    """L_simple (Ho et al. 2020, eq. 14): E || eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1-alpha_bar_t) eps, t) ||^2.

    Returns the per-image mean over pixels, shape (B,); t (B,) and eps like x0 are given explicitly.
    """
    eps_hat = eps_model(q_sample(x0, t, eps, sched), t)
    return (eps_hat.to(eps.dtype) - eps).pow(2).flatten(1).mean(1)  # a bfloat16 (autocast) prediction is cast up


def loss_weight(name: LossWeight, t: Tensor, sched: Schedule) -> Tensor:
    """lambda_t, the weight of each image's L_simple at its timestep t (B,); SNR_t = alpha_bar_t / (1 - alpha_bar_t).

    simple:  lambda_t = 1 (Ho et al. 2020, eq. 14).
    p2:      lambda_t = 1 / (k + SNR_t)^gamma with k = 1, gamma = 1, which is 1 - alpha_bar_t (Choi et al. 2022, eq. 8).
    min-snr: lambda_t = min(SNR_t, gamma) / SNR_t with gamma = 5, the eps-prediction form of Min-SNR-gamma
             (Hang et al. 2023, sec. 3.4).
    Computed in float64 from the schedule, returned as float32 (B,).
    """
    alpha_bar_t = sched.alpha_bar.to(t.device)[t]
    snr_t = alpha_bar_t / (1.0 - alpha_bar_t)
    if name == "simple":
        lam = torch.ones_like(snr_t)
    elif name == "p2":
        lam = 1.0 / (1.0 + snr_t)
    elif name == "min-snr":
        lam = snr_t.clamp(max=5.0) / snr_t
    else:
        raise ValueError(f"unknown loss weighting {name!r}; choose from {', '.join(LOSS_WEIGHTS)}")
    return lam.float()


def x0_hat(x_t: Tensor, eps: Tensor, alpha_bar_t: Tensor, clip: bool) -> Tensor:
    """Predicted x_0 from eps (Ho et al. 2020, eq. 15 rearranged; Song et al. 2021, eq. 9):
    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), optionally clipped to [-1, 1].

    alpha_bar_t is already broadcast to x_t (see `schedule.at`).
    """
    x0 = (x_t - (1.0 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    return x0.clamp(-1.0, 1.0) if clip else x0


def posterior_mean(x0: Tensor, x_t: Tensor, i: int | Tensor, steps: Steps) -> Tensor:
    """mu_tilde_t(x_t, x_0), mean of q(x_prev | x_t, x_0) (Ho et al. 2020, eq. 7):
    mu_tilde_t = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) x_0 + sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) x_t.
    """
    return at(steps.coef_x0, i, x_t) * x0 + at(steps.coef_xt, i, x_t) * x_t


def mu_t(x_t: Tensor, eps: Tensor, i: int | Tensor, steps: Steps, clip: bool) -> Tensor:
    """Mean of p_theta(x_prev | x_t): mu_tilde_t(x_t, x0_hat(x_t, eps)) (Ho et al. 2020, eqs. 7 and 11).

    This is the form of diffusers' DDPMScheduler.step and of the noise-map file's regeneration rule.
    """
    return posterior_mean(x0_hat(x_t, eps, at(steps.alpha_bar_t, i, x_t), clip), x_t, i, steps)


def ddim_mean(x_t: Tensor, eps: Tensor, i: int, steps: Steps, clip: bool, sigma: Tensor) -> Tensor:
    """Mean of the DDIM step (Song et al. 2021, eq. 12):
    sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma_t^2) eps_hat,
    with eps_hat re-derived from the (possibly clipped) x0_hat, as diffusers' DDIMScheduler does with
    use_clipped_model_output=True (its default keeps the unclipped eps, a different step when clipping).
    With sigma_t^2 = beta_tilde_t (eta = 1) it equals `mu_t`.
    """
    alpha_bar_t = at(steps.alpha_bar_t, i, x_t)
    x0 = x0_hat(x_t, eps, alpha_bar_t, clip)
    if clip:
        eps = (x_t - alpha_bar_t.sqrt() * x0) / (1.0 - alpha_bar_t).sqrt()
    dir_coef = (1.0 - steps.alpha_bar_prev - sigma.pow(2)).clamp(min=0.0).sqrt()
    return at(steps.alpha_bar_prev.sqrt(), i, x_t) * x0 + at(dir_coef, i, x_t) * eps


def reverse_step(x_t: Tensor, eps: Tensor, z: Tensor, i: int, steps: Steps, sigma: Tensor,
                 *, clip: bool, mean: Mean = "ddpm") -> Tensor:
    """One reverse step x_prev = mean + sigma_t z (Ho et al. 2020, Algorithm 2, line 4).

    mean "ddpm": the posterior mean at x0_hat, `mu_t` (the noise-map file's rule), for any sigma;
    "ddim": the DDIM mean (Song et al. eq. 12), which depends on sigma (deterministic DDIM: sigma = 0).
    """
    if mean not in ("ddpm", "ddim"):
        raise ValueError(f"mean must be 'ddpm' or 'ddim', got {mean!r}")
    m = mu_t(x_t, eps, i, steps, clip) if mean == "ddpm" else ddim_mean(x_t, eps, i, steps, clip, sigma)
    return m + at(sigma, i, x_t) * z


def timestep_batch(t: Tensor | int, x: Tensor) -> Tensor:
    """The training timestep t as a (B,) int64 tensor on x's device, for the network call."""
    return torch.full((x.shape[0],), int(t), dtype=torch.int64, device=x.device)


def iterate_steps(S: int, progress: bool, desc: str) -> Iterator[int]:
    return iter(tqdm(range(S), desc=desc, leave=False, disable=not progress))


def draw_zs(S: int, x_T: Tensor, generator: torch.Generator | None) -> Tensor:
    """S standard-normal maps like x_T, (S, B, C, H, W), drawn on the CPU one step at a time from `generator`."""
    return torch.stack([torch.randn(x_T.shape, generator=generator, dtype=x_T.dtype) for _ in range(S)]).to(x_T.device)


def reverse_process(eps_model: EpsModel, x_T: Tensor, steps: Steps, sigma: Tensor, zs: Tensor, *, clip: bool = True,
                    mean: Mean = "ddpm", progress: bool = True) -> Iterator[Tensor]:
    """The sampler's trajectory: x after each of the S steps (the last one is x_0), step i adding sigma[i] * zs[i]."""
    if sigma.shape != (steps.S,):
        raise ValueError(f"sigma must have shape ({steps.S},), got {tuple(sigma.shape)}")
    if zs.shape != (steps.S, *x_T.shape):
        raise ValueError(f"zs must have shape {(steps.S, *x_T.shape)}, got {tuple(zs.shape)}")
    x = x_T
    for i in iterate_steps(steps.S, progress, "sampling"):
        eps = eps_model(x, timestep_batch(steps.t[i], x))
        x = reverse_step(x, eps, zs[i], i, steps, sigma, clip=clip, mean=mean)
        yield x


@torch.no_grad()
def sample(eps_model: EpsModel, x_T: Tensor, steps: Steps, sigma: Tensor, *, zs: Tensor | None = None,
           generator: torch.Generator | None = None, clip: bool = True, mean: Mean = "ddpm",
           progress: bool = True) -> Tensor:
    """The sampler G(x_T, z_1..z_S) -> x_0 (Ho et al. 2020, Algorithm 2, strided).

    zs: (S, B, C, H, W) noise maps; step i adds sigma[i] * zs[i]. When None they are drawn with `draw_zs`
    from `generator` (pass the result of `draw_zs` to keep the maps of a sample).
    """
    if zs is None:
        zs = draw_zs(steps.S, x_T, generator)
    x = x_T
    for x in reverse_process(eps_model, x_T, steps, sigma, zs, clip=clip, mean=mean, progress=progress):
        pass
    return x
