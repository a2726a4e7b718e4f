"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov & Michaeli, arXiv 2304.06140, sec. 3)
and the DPM-Encoder of CycleDiffusion (Wu & De la Torre, ICCV 2023, sec. 3.1).

Both draw a trajectory x_{t_0}, ..., x_{t_{S-1}}, x_0 without the network, then solve each reverse step
for its noise (EF Algorithm 1):  z_t = (x_{t-1} - mu_t(x_t)) / sigma_t.

- edit_friendly: every x_t drawn independently from q(x_t | x_0) (EF sec. 3, Algorithm 1: the "auxiliary sequence").
- dpm_encoder:   x_T ~ q(x_T | x_0), then x_{t-1} ~ q(x_{t-1} | x_t, x_0), the posterior (a Markov chain).

Exactness. The last step (to x_0) gets a positive sigma, sqrt(beta_t') (`fixed_large`), so z_1 absorbs the
residual x_0 - mu_1 and the reconstruction is exact; `last="zero"` follows the official code, which
sets z_1 = 0 and leaves that residual. Floating-point rounding matters too: the sampler recomputes
mu_t(x_t) with its own network calls, so in `exact` mode the inversion makes the very calls the sampler
will make (same tensors, same batch layout) and replaces each x_{t-1} by the value the sampler will
compute, mu_t + sigma_t z_t; x after the last step *is* the reconstruction. `batched` mode evaluates the
network on the independent x_t in chunks of timesteps (fast, parallel), then runs the sampler to measure
the reconstruction error, which rounding can make larger than in exact mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .diffusion import (EpsModel, iterate_steps, mu_t, posterior_mean, q_sample, reverse_process, reverse_step, sample,
                        timestep_batch, x0_hat)
from .schedule import Schedule, Steps, at

Method = Literal["edit_friendly", "dpm_encoder"]
Mode = Literal["exact", "batched"]
Last = Literal["fixed_large", "zero"]


def inversion_sigmas(steps: Steps, last: Last = "fixed_large") -> Tensor:
    """sigma_t for inversion, (S,) float64: fixed_small (sqrt(beta_tilde_t)) at every step but the last,
    where beta_tilde = 0; there sqrt(beta_t') (`fixed_large`, exact) or 0 (the official code's choice)."""
    if last not in ("fixed_large", "zero"):
        raise ValueError(f"last must be 'fixed_large' or 'zero', got {last!r}")
    sigma = steps.sigma("fixed_small").clone()
    sigma[-1] = steps.beta_t[-1].sqrt() if last == "fixed_large" else 0.0
    return sigma


def draw_trajectory(x0: Tensor, steps: Steps, sched: Schedule, method: Method,
                    generator: torch.Generator) -> Tensor:
    """The targets xs (S+1, N, C, H, W): xs[i] at timestep t[i], xs[S] = x0. Noise drawn on the CPU from `generator`.

    edit_friendly: xs[i] = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps_i, eps_i independent (EF Algorithm 1).
    dpm_encoder: xs[0] from q(x_T | x_0); xs[i+1] = mu_tilde(x0, xs[i]) + sqrt(beta_tilde) n_i (Ho et al. eq. 7).
    """
    S = steps.S
    noise = torch.randn((S, *x0.shape), generator=generator, dtype=x0.dtype).to(x0.device)
    xs = torch.empty((S + 1, *x0.shape), dtype=x0.dtype, device=x0.device)
    if method == "edit_friendly":
        for i in range(S):
            xs[i] = q_sample(x0, steps.t[i].expand(x0.shape[0]), noise[i], sched)
    elif method == "dpm_encoder":
        xs[0] = q_sample(x0, steps.t[0].expand(x0.shape[0]), noise[0], sched)
        for i in range(S - 1):
            xs[i + 1] = posterior_mean(x0, xs[i], i, steps) + at(steps.beta_tilde_t.sqrt(), i, x0) * noise[i + 1]
    else:
        raise ValueError(f"method must be 'edit_friendly' or 'dpm_encoder', got {method!r}")
    xs[S] = x0
    return xs


def solve_z(target: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """z_t = (x_{t-1} - mu_t) / sigma_t (EF Algorithm 1); z = 0 where sigma_t = 0. sigma broadcast to mu."""
    return torch.where(sigma > 0, (target - mu) / torch.where(sigma > 0, sigma, 1.0), 0.0)


@dataclass(frozen=True)
class Inversion:
    """The result of `invert`: maps zs and sigmas, and the sampler's own trajectory on them."""

    zs: Tensor  # (S, N, C, H, W)
    sigma: Tensor  # (S,) float64
    xs: Tensor  # (S+1, N, C, H, W): the x the sampler computes from (x_T, zs): xs[i] enters step i, xs[S] is x0_rec

    @property
    def xT(self) -> Tensor:
        return self.xs[0]

    @property
    def x0_rec(self) -> Tensor:
        """What the sampler regenerates from (x_T, zs): the reconstruction."""
        return self.xs[-1]


@torch.no_grad()
def invert(eps_model: EpsModel, x0: Tensor, steps: Steps, sched: Schedule, *, method: Method = "edit_friendly",
           mode: Mode = "exact", generator: torch.Generator, clip: bool = True, last: Last = "fixed_large",
           chunk: int = 8, progress: bool = True) -> Inversion:
    """Invert x0 (N, C, H, W) along `steps`: the maps zs, and the sampler's trajectory on them, whose last entry is
    the reconstruction. Exact mode computes it in the same pass (S network calls in all); batched mode runs the
    sampler after S/chunk batched calls (S/chunk + S calls).
    """
    if mode not in ("exact", "batched"):
        raise ValueError(f"mode must be 'exact' or 'batched', got {mode!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    xs = draw_trajectory(x0, steps, sched, method, generator)
    sigma = inversion_sigmas(steps, last)
    S, N = steps.S, x0.shape[0]
    zs = torch.empty((S, *x0.shape), dtype=x0.dtype, device=x0.device)
    if mode == "exact":
        xs_sampler = xs.clone()  # xs_sampler[0] = x_T; each later entry becomes the value the sampler computes
        for i in iterate_steps(S, progress, "inverting"):
            x = xs_sampler[i]
            eps = eps_model(x, timestep_batch(steps.t[i], x))
            zs[i] = solve_z(xs[i + 1], mu_t(x, eps, i, steps, clip), at(sigma, i, x))
            xs_sampler[i + 1] = reverse_step(x, eps, zs[i], i, steps, sigma, clip=clip)
        return Inversion(zs, sigma, xs_sampler)
    for i0 in iterate_steps((S + chunk - 1) // chunk, progress, "inverting (batched)"):
        i0 *= chunk
        i1 = min(i0 + chunk, S)
        idx = torch.arange(i0, i1).repeat_interleave(N)  # (c*N,) step index of each row
        x = xs[i0:i1].flatten(0, 1)  # (c, N, C, H, W) -> (c*N, C, H, W)
        eps = eps_model(x, steps.t[idx].to(x.device))
        z = solve_z(xs[i0 + 1:i1 + 1].flatten(0, 1), mu_t(x, eps, idx, steps, clip), at(sigma, idx, x))
        zs[i0:i1] = z.view(i1 - i0, *x0.shape)
    return Inversion(zs, sigma, torch.stack([xs[0], *reverse_process(eps_model, xs[0], steps, sigma, zs, clip=clip,
                                                                          progress=progress)]))


@torch.no_grad()
def ddim_invert(eps_model: EpsModel, x0: Tensor, steps: Steps, *, progress: bool = True) -> Tensor:
    """DDIM inversion, the deterministic baseline (Song et al. 2021, eq. 12 with sigma = 0, run upwards;
    Dhariwal & Nichol 2021, appendix F): from x0, for each step from the lowest timestep up,
    eps = eps_theta(x_lo, t_hi), x_hi = sqrt(alpha_bar_hi) x0_hat(x_lo, eps, alpha_bar_lo) + sqrt(1 - alpha_bar_hi) eps.
    Returns x at timesteps[0]. Approximate: it assumes eps_theta(x_hi, t_hi) = eps_theta(x_lo, t_hi), so the
    eta = 0 sampler (`sample(..., mean="ddim", clip=False)` with zero sigmas) brings it back only near x0, exactly
    only when eps does not depend on x. It has no noise maps and no file format: it is what edit-friendly
    inversion is compared against (paper sec. 5)."""
    x = x0
    for k in iterate_steps(steps.S, progress, "DDIM inversion"):
        i = steps.S - 1 - k
        alpha_bar_lo, alpha_bar_hi = at(steps.alpha_bar_prev, i, x), at(steps.alpha_bar_t, i, x)
        eps = eps_model(x, timestep_batch(steps.t[i], x))
        x = alpha_bar_hi.sqrt() * x0_hat(x, eps, alpha_bar_lo, clip=False) + (1.0 - alpha_bar_hi).sqrt() * eps
    return x


def ddim_regenerate(eps_model: EpsModel, x: Tensor, steps: Steps, *, progress: bool = True) -> Tensor:
    """The deterministic DDIM sampler (eta = 0, no clipping) from x at timesteps[0]: the inverse of `ddim_invert`."""
    sigma = torch.zeros(steps.S, dtype=torch.float64)
    return sample(eps_model, x, steps, sigma, zs=torch.zeros((steps.S, *x.shape), dtype=x.dtype, device=x.device),
                  clip=False, mean="ddim", progress=progress)


def edit_friendly_stats(steps: Steps) -> dict[str, Tensor]:
    """Closed-form statistics of edit-friendly maps when eps_theta is exact (x0_hat = x_0), float64 (S,) each.

    With x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) e_i and x_prev = sqrt(alpha_bar_prev) x_0
    + sqrt(1 - alpha_bar_prev) e_{i+1} drawn independently (EF Algorithm 1), x_0 cancels from the solve for z, since the
    coefficients of x_0 in mu_tilde_t sum to sqrt(alpha_bar_prev) (Ho et al. eq. 7):
        z_i = a_i e_{i+1} - b_i e_i,   a_i = sqrt(1 - alpha_bar_prev) / sigma_i,
                                       b_i = coef_xt_i sqrt(1 - alpha_bar_t) / sigma_i,
    so Var(z_i) = a_i^2 + b_i^2 (= 1 + 2 alpha_t' (1 - alpha_bar_prev) / beta_t' with sigma^2 = beta_tilde') and
    consecutive maps share e_{i+1}: corr(z_i, z_{i+1}) = -a_i b_{i+1} / sqrt(Var(z_i) Var(z_{i+1})).
    The last step's target is x_0 itself, so its map is 0 (var 0, corr NaN)."""
    sigma = inversion_sigmas(steps)
    a = (1.0 - steps.alpha_bar_prev).sqrt() / sigma
    b = steps.coef_xt * (1.0 - steps.alpha_bar_t).sqrt() / sigma
    var = a ** 2 + b ** 2
    corr = torch.full_like(var, float("nan"))
    corr[:-1] = -a[:-1] * b[1:] / (var[:-1] * var[1:]).sqrt()
    corr[-2] = float("nan")  # the next map is 0
    return {"mean": torch.zeros_like(var), "var": var, "corr_next": corr}


def map_stats(zs: Tensor) -> dict[str, Tensor]:
    """Per-step statistics of noise maps (S, N, C, H, W), float64 (S,) each:
    mean, variance, and the Pearson correlation of each map with the next one (last entry NaN).
    For i.i.d. N(0, I) maps (native DDPM sampling): mean 0, variance 1, correlation 0."""
    z = zs.double().flatten(1)  # (S, D)
    mean, var = z.mean(1), z.var(1)
    zc = (z - mean[:, None]) / z.std(1)[:, None]
    corr = torch.full_like(mean, float("nan"))
    corr[:-1] = (zc[:-1] * zc[1:]).mean(1)
    return {"mean": mean, "var": var, "corr_next": corr}
