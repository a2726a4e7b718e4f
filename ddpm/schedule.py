"""Noise schedules and strided sampling trajectories, all in float64.

Timesteps are 0-based training indices t in {0, ..., T-1}: index t here is step t+1 of
Ho et al. 2020, so alpha_bar[0] = 1 - beta_1 and "x at the end of the trajectory" is x_0,
whose alpha_bar is taken as 1.

Nothing here is an nn.Module buffer: `module.to(dtype)` must never cast a schedule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Spacing = Literal["leading", "offset"]
Variance = Literal["fixed_small", "fixed_large"]


@dataclass(frozen=True)
class Schedule:
    """The training noise schedule beta_1..beta_T (float64)."""

    beta: Tensor  # (T,) float64

    def __post_init__(self):
        if self.beta.dtype != torch.float64 or self.beta.dim() != 1:
            raise ValueError("Schedule.beta must be a 1-D float64 tensor")

    @property
    def T(self) -> int:
        return self.beta.numel()

    @property
    def alpha(self) -> Tensor:
        """alpha_t = 1 - beta_t (Ho et al. 2020, sec. 2)."""
        return 1.0 - self.beta

    @property
    def alpha_bar(self) -> Tensor:
        """alpha_bar_t = prod_{s<=t} alpha_s (Ho et al. 2020, sec. 2, above eq. 4)."""
        return torch.cumprod(self.alpha, dim=0)


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """beta_t linear from 1e-4 to 0.02 over T=1000 steps (Ho et al. 2020, sec. 4)."""
    return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def schedule_from_alpha_bar(alpha_bar: Tensor) -> Schedule:
    """Recover beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} from a stored alpha_bar (e.g. a noise-map file)."""
    alpha_bar = alpha_bar.to(torch.float64)
    prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
    return Schedule(1.0 - alpha_bar / prev)


def strided_timesteps(S: int, T: int = 1000, spacing: Spacing = "leading") -> Tensor:
    """S descending training timesteps for strided sampling.

    "leading" (diffusers DDPMScheduler/DDIMScheduler default): t_i = i * (T // S), so S=100
    gives 990, 980, ..., 0. "offset" adds 1 (the official edit-friendly code, which uses
    steps_offset=1): 991, 981, ..., 1; it needs S < T.
    """
    if not 1 <= S <= T:
        raise ValueError(f"steps S={S} must be between 1 and T={T}")
    if spacing not in ("leading", "offset"):
        raise ValueError(f"spacing must be 'leading' or 'offset', got {spacing!r}")
    t = torch.arange(S - 1, -1, -1, dtype=torch.int64) * (T // S)
    if spacing == "offset":
        if S == T:
            raise ValueError("spacing='offset' needs S < T (timestep T does not exist)")
        t = t + 1
    return t


@dataclass(frozen=True)
class Steps:
    """A strided reverse trajectory: step i maps x at t[i] to x at t[i+1], the last step to x_0.

    With alpha_bar_prev the alpha_bar of the step's target (1 at the last step), the strided
    process is a DDPM with alpha_t' = alpha_bar_t / alpha_bar_prev (Nichol & Dhariwal 2021,
    sec. 4; Song et al. 2021, appendix C.2), and every Ho et al. formula holds with primes.
    """

    t: Tensor  # (S,) int64, descending
    alpha_bar_t: Tensor  # (S,) float64
    alpha_bar_prev: Tensor  # (S,) float64, 1.0 at the last step

    @property
    def S(self) -> int:
        return self.t.numel()

    @property
    def alpha_t(self) -> Tensor:
        """Strided alpha_t' = alpha_bar_t / alpha_bar_prev."""
        return self.alpha_bar_t / self.alpha_bar_prev

    @property
    def beta_t(self) -> Tensor:
        """Strided beta_t' = 1 - alpha_t' (the `fixed_large` variance, Ho et al. sec. 3.2)."""
        return 1.0 - self.alpha_t

    @property
    def beta_tilde_t(self) -> Tensor:
        """Posterior variance of q(x_prev | x_t, x_0) (Ho et al. 2020, eq. 7):
        beta_tilde_t = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t (`fixed_small`)."""
        return (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar_t) * self.beta_t

    @property
    def coef_x0(self) -> Tensor:
        """Coefficient of x_0 in mu_tilde_t (Ho et al. eq. 7): sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t)."""
        return self.alpha_bar_prev.sqrt() * self.beta_t / (1.0 - self.alpha_bar_t)

    @property
    def coef_xt(self) -> Tensor:
        """Coefficient of x_t in mu_tilde_t (Ho et al. eq. 7): sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t)."""
        return self.alpha_t.sqrt() * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar_t)

    def sigma(self, variance: Variance = "fixed_small", eta: float = 1.0) -> Tensor:
        """sigma_t of the reverse step, (S,) float64.

        fixed_small: sigma_t^2 = beta_tilde_t; fixed_large: sigma_t^2 = beta_t (Ho et al. sec. 3.2).
        eta scales it as in DDIM (Song et al. 2021, eq. 16): eta=0 deterministic, eta=1 DDPM.
        """
        if variance == "fixed_small":
            var = self.beta_tilde_t
        elif variance == "fixed_large":
            var = self.beta_t
        else:
            raise ValueError(f"variance must be 'fixed_small' or 'fixed_large', got {variance!r}")
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        return eta * var.clamp(min=0.0).sqrt()

    def __getitem__(self, sl: slice) -> "Steps":
        """A sub-trajectory, e.g. steps[K:] to start at step K (the paper's T_skip)."""
        if not isinstance(sl, slice):
            raise TypeError("Steps can only be sliced")
        return Steps(self.t[sl], self.alpha_bar_t[sl], self.alpha_bar_prev[sl])


def make_steps(sched: Schedule, timesteps: Tensor) -> Steps:
    """The trajectory through the given descending timesteps, ending at x_0 (alpha_bar = 1)."""
    return steps_from_alpha_bar(sched.alpha_bar, timesteps)


def steps_from_alpha_bar(alpha_bar: Tensor, timesteps: Tensor) -> Steps:
    """`make_steps` from a stored alpha_bar (e.g. a noise-map file's alphas_cumprod), using its values as they are."""
    t = torch.as_tensor(timesteps, dtype=torch.int64)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError("timesteps must be a non-empty 1-D sequence")
    if (t[1:] >= t[:-1]).any():
        raise ValueError("timesteps must be strictly descending")
    if t.min() < 0 or t.max() >= alpha_bar.numel():
        raise ValueError(f"timesteps must lie in [0, {alpha_bar.numel() - 1}]")
    alpha_bar = alpha_bar.to(torch.float64)
    return Steps(t, alpha_bar[t], torch.cat([alpha_bar[t[1:]], alpha_bar.new_ones(1)]))


def at(coef: Tensor, i: int | Tensor, x: Tensor) -> Tensor:
    """coef[i] shaped (B or 1, 1, 1, 1) on x's device, cast to x.dtype: the one place a cast happens."""
    c = coef[i] if isinstance(i, int) else coef.to(i.device)[i]
    return c.to(device=x.device, dtype=x.dtype).reshape(-1, *[1] * (x.dim() - 1))
