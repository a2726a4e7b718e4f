"""The variational bound in bits/dim (Ho et al. 2020, eq. 5), estimated without bias by Monte Carlo.

L = L_T + L_0 + sum_{t=2}^T L_{t-1} = L_T + L_0 + (T - 1) E_{t ~ U{2..T}} [L_{t-1}], so one uniformly
drawn t per image gives an unbiased estimate; averaging over images gives a mean with a 95% interval.
The reverse variance is `fixed_large` (sigma_t^2 = beta_t, and beta_tilde_2 at the first step), the
choice Ho et al. made for their CIFAR-10 likelihoods.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .diffusion import EpsModel, mu_t, posterior_mean, q_sample
from .schedule import Schedule, at, make_steps


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) per element, in nats."""
    return 0.5 * (torch.log(var2 / var1) + var1 / var2 - 1.0 + (mean1 - mean2).pow(2) / var2)


def discretized_gaussian_nll(x0: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """-log p(x_0 | x_1) with the discretized Gaussian decoder of Ho et al. 2020, eq. 13, per element:
    the Gaussian mass of the 8-bit bin [x - 1/255, x + 1/255], the edge bins extended to -inf / +inf."""
    lo = torch.where(x0 < -0.999, torch.full_like(x0, -math.inf), (x0 - 1.0 / 255 - mean) / std)
    hi = torch.where(x0 > 0.999, torch.full_like(x0, math.inf), (x0 + 1.0 / 255 - mean) / std)
    # log(Phi(hi) - Phi(lo)), stable in both tails
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return -(log_hi + torch.log1p(-torch.exp(log_lo - log_hi).clamp(max=1 - 1e-12)))


def prior_kl(x0: Tensor, sched: Schedule) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)), per image in nats."""
    ab = sched.alpha_bar[-1].item()
    kl = normal_kl(math.sqrt(ab) * x0, torch.full_like(x0, 1 - ab), torch.zeros_like(x0), torch.ones_like(x0))
    return kl.flatten(1).sum(1)


def fixed_large_var(sched: Schedule) -> Tensor:
    """sigma_t^2 of the `fixed_large` reverse process by 0-based training t, (T,) float64:
    beta_t, except beta_tilde at t = 1 for the first step (Ho et al.'s choice, so the decoder is not degenerate)."""
    steps = make_steps(sched, torch.arange(sched.T - 1, -1, -1))
    return torch.cat([steps.beta_tilde_t[-2:-1], sched.beta[1:]])


@torch.no_grad()
def vlb_term(eps_model: EpsModel, x0: Tensor, t: Tensor, eps: Tensor, sched: Schedule) -> Tensor:
    """L_{t-1} per image in nats for 0-based t (B,): KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) for t >= 1,
    the decoder NLL -log p(x_0 | x_1) for t = 0. The Gaussian terms are computed in float64."""
    steps = make_steps(sched, torch.arange(sched.T - 1, -1, -1))
    i = sched.T - 1 - t.cpu()  # step index of training timestep t
    x_t = q_sample(x0, t, eps, sched)
    eps_hat = eps_model(x_t, t).double()
    x0d, x_td = x0.double(), x_t.double()
    mean_p = mu_t(x_td, eps_hat, i, steps, clip=False)
    var_p = at(fixed_large_var(sched), t.cpu(), x0d)
    mean_q = posterior_mean(x0d, x_td, i, steps)
    var_q = at(steps.beta_tilde_t, i, x0d).clamp(min=1e-30)  # 0 at t = 0, where the NLL is used instead
    kl = normal_kl(mean_q, var_q, mean_p, var_p).flatten(1).sum(1)
    nll = discretized_gaussian_nll(x0d, mean_p, var_p.sqrt().expand_as(mean_p)).flatten(1).sum(1)
    return torch.where(t.to(kl.device) == 0, nll, kl)


def bits_per_dim(eps_model: EpsModel, x0: Tensor, sched: Schedule, generator: torch.Generator) -> Tensor:
    """One unbiased Monte Carlo draw of the bound per image, in bits/dim:
    (L_T + L_0 + (T - 1) * L_{t-1}) / (D ln 2) with t ~ U{2..T} (0-based 1..T-1). The decoder term L_0 is
    computed exactly rather than drawn, which removes the largest source of variance."""
    t = torch.randint(1, sched.T, (x0.shape[0],), generator=generator).to(x0.device)
    eps = torch.randn((2, *x0.shape), generator=generator, dtype=x0.dtype).to(x0.device)
    l0 = vlb_term(eps_model, x0, torch.zeros_like(t), eps[0], sched)
    nats = prior_kl(x0.double(), sched) + l0 + (sched.T - 1) * vlb_term(eps_model, x0, t, eps[1], sched)
    return nats / (x0[0].numel() * math.log(2.0))


def mean_ci(samples: Tensor) -> tuple[float, float]:
    """Mean and 95% normal-approximation half-width of i.i.d. samples."""
    n = samples.numel()
    if n < 2:
        return samples.mean().item(), math.inf
    return samples.mean().item(), 1.96 * samples.std().item() / math.sqrt(n)
