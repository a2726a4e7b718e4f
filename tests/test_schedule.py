"""schedule.py: the linear schedule, the posterior of Ho et al. eq. 7, strided timesteps."""
import math

import pytest
import torch

from ddpm.schedule import make_steps, schedule_from_alpha_bar, strided_timesteps


def test_alpha_bar_equals_closed_form_product_float64(sched):
    """alpha_bar_t = prod_{s<=t} (1 - beta_s), beta linear 1e-4..0.02 (Ho et al. sec. 2, 4), in Python floats."""
    T = 1000
    betas = [1e-4 + (0.02 - 1e-4) * k / (T - 1) for k in range(T)]
    expected = torch.tensor([math.prod(1 - b for b in betas[:t + 1]) for t in range(T)], dtype=torch.float64)
    assert sched.beta.dtype == torch.float64 and sched.alpha_bar.dtype == torch.float64
    torch.testing.assert_close(sched.beta, torch.tensor(betas, dtype=torch.float64), rtol=0, atol=1e-17)
    torch.testing.assert_close(sched.alpha_bar, expected, rtol=1e-13, atol=0)


def test_posterior_coefficients_and_variance_match_closed_forms(sched):
    """beta_tilde_t = (1-ab_prev)/(1-ab_t) beta_t, mu coefs of Ho et al. eq. 7, checked per step with Python floats."""
    steps = make_steps(sched, strided_timesteps(50))
    ab = sched.alpha_bar.tolist()
    for i, t in enumerate(steps.t.tolist()):
        ab_t = ab[t]
        ab_prev = ab[steps.t[i + 1]] if i + 1 < steps.S else 1.0
        beta = 1 - ab_t / ab_prev
        assert steps.beta_tilde_t[i].item() == pytest.approx((1 - ab_prev) / (1 - ab_t) * beta, rel=1e-12, abs=1e-300)
        assert steps.coef_x0[i].item() == pytest.approx(math.sqrt(ab_prev) * beta / (1 - ab_t), rel=1e-12)
        assert steps.coef_xt[i].item() == pytest.approx(math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t), rel=1e-12, abs=1e-300)


def test_full_trajectory_recovers_the_training_betas(sched):
    """With S = T the strided beta_t' equals beta_t, and beta_tilde at t=0 is 0 (Ho et al. sec. 3.2)."""
    steps = make_steps(sched, strided_timesteps(1000))
    torch.testing.assert_close(steps.beta_t.flip(0), sched.beta, rtol=1e-10, atol=1e-15)
    assert steps.beta_tilde_t[-1].item() == 0.0
    assert steps.alpha_bar_prev[-1].item() == 1.0


@pytest.mark.parametrize("S", [10, 50, 100, 1000])
def test_leading_timesteps_match_diffusers(S):
    """Leading spacing equals diffusers' DDPMScheduler.set_timesteps (S=100: 990, 980, ..., 0)."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000)
    ref.set_timesteps(S)
    assert strided_timesteps(S).tolist() == ref.timesteps.tolist()
    if S == 100:
        assert strided_timesteps(S)[:2].tolist() == [990, 980] and strided_timesteps(S)[-1] == 0


@pytest.mark.parametrize("S", [10, 50, 100])
def test_offset_timesteps_match_diffusers_steps_offset_1(S):
    """The official edit-friendly spacing (steps_offset=1): 991, ..., 1 for S=100."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, steps_offset=1)
    ref.set_timesteps(S)
    assert strided_timesteps(S, spacing="offset").tolist() == ref.timesteps.tolist()


def test_bad_step_counts_and_timesteps_are_refused(sched):
    with pytest.raises(ValueError, match="between 1 and"):
        strided_timesteps(1001)
    with pytest.raises(ValueError, match="S < T"):
        strided_timesteps(1000, spacing="offset")
    with pytest.raises(ValueError, match="descending"):
        make_steps(sched, torch.tensor([5, 10]))


def test_schedule_round_trips_through_alpha_bar(sched):
    """beta recovered from a stored alphas_cumprod (as in a noise-map file) equals the original to 1e-15."""
    torch.testing.assert_close(schedule_from_alpha_bar(sched.alpha_bar).beta, sched.beta, rtol=0, atol=1e-15)


def test_sigma_choices_match_a_closed_form_in_python_floats(sched):
    """fixed_small = sqrt(beta_tilde') (Ho et al. eq. 7), fixed_large = sqrt(beta'), eta scales (DDIM eq. 16), with
    the strided beta' = 1 - alpha_bar_t / alpha_bar_prev, against an oracle in plain Python floats (1e-12)."""
    T, S = 1000, 20
    beta = [1e-4 + (0.02 - 1e-4) * k / (T - 1) for k in range(T)]
    alpha_bar, prod = [], 1.0
    for b in beta:
        prod *= 1.0 - b
        alpha_bar.append(prod)
    ts = [k * (T // S) for k in range(S - 1, -1, -1)]  # 950, 900, ..., 0
    small, large = [], []
    for i, t in enumerate(ts):
        ab_t, ab_prev = alpha_bar[t], (alpha_bar[ts[i + 1]] if i + 1 < S else 1.0)
        beta_prime = 1.0 - ab_t / ab_prev
        small.append(((1.0 - ab_prev) / (1.0 - ab_t) * beta_prime) ** 0.5)
        large.append(beta_prime ** 0.5)
    small, large = torch.tensor(small, dtype=torch.float64), torch.tensor(large, dtype=torch.float64)
    steps = make_steps(sched, strided_timesteps(S))
    torch.testing.assert_close(steps.sigma("fixed_small"), small, rtol=0, atol=1e-12)
    torch.testing.assert_close(steps.sigma("fixed_large"), large, rtol=0, atol=1e-12)
    torch.testing.assert_close(steps.sigma("fixed_small", eta=0.5), 0.5 * small, rtol=0, atol=1e-12)
    assert small[-1] == 0 and large[-1] > 0  # the last step: beta_tilde' = 0, beta' > 0
