"""diffusion.py: q_sample, L_simple, the reverse step against closed forms and diffusers' schedulers."""
import pytest
import torch

from ddpm.diffusion import (ddim_mean, draw_zs, loss_simple, loss_weight, mu_t, posterior_mean, q_sample, reverse_step,
                            sample, x0_hat)
from ddpm.schedule import at, make_steps, strided_timesteps

from conftest import seeded_unet


def test_q_sample_has_the_mean_and_variance_of_eq4(sched):
    """x_t ~ N(sqrt(ab_t) x0, (1 - ab_t) I) (Ho et al. eq. 4): empirical moments of 200k draws within 5 sigma."""
    g = torch.Generator().manual_seed(0)
    n, x0 = 200_000, torch.full((200_000, 1, 1, 1), 0.7, dtype=torch.float64)
    for t in (0, 300, 999):
        tt = torch.full((n,), t)
        x = q_sample(x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64), sched)
        ab = sched.alpha_bar[t].item()
        se = ((1 - ab) / n) ** 0.5
        assert abs(x.mean().item() - ab ** 0.5 * 0.7) < 5 * se
        assert abs(x.var().item() - (1 - ab)) < 5 * (1 - ab) * (2 / n) ** 0.5


def test_loss_simple_is_the_mean_squared_eps_error(sched):
    """L_simple (Ho et al. eq. 14) = mean over pixels of (eps - eps_theta(x_t, t))^2, per image."""
    model = seeded_unet("tiny")
    x0, eps = torch.rand(3, 3, 32, 32) * 2 - 1, torch.randn(3, 3, 32, 32)
    t = torch.tensor([0, 500, 999])
    with torch.no_grad():
        expected = (model(q_sample(x0, t, eps, sched), t) - eps).pow(2).mean((1, 2, 3))
        torch.testing.assert_close(loss_simple(model, x0, sched, t=t, eps=eps), expected)
        oracle = lambda x_t, t_: eps  # noqa: E731  a perfect predictor has zero loss
        assert loss_simple(oracle, x0, sched, t=t, eps=eps).abs().max() == 0


def test_loss_weights_are_their_closed_forms(sched):
    """simple = 1; p2 (k = 1, gamma = 1) = 1 / (1 + SNR_t) = 1 - alpha_bar_t; min-snr (gamma = 5) = 1 while SNR_t <= 5
    and 5 / SNR_t above, so lambda_t SNR_t = min(SNR_t, 5); an unknown name is refused."""
    t = torch.arange(sched.T)
    ab = sched.alpha_bar
    snr = ab / (1 - ab)
    assert (loss_weight("simple", t, sched) == 1).all()
    torch.testing.assert_close(loss_weight("p2", t, sched), (1 - ab).float())
    lam = loss_weight("min-snr", t, sched).double()
    torch.testing.assert_close(lam * snr, snr.clamp(max=5.0), rtol=1e-6, atol=0)
    assert lam.min() < 0.01 and (lam[snr <= 5] == 1).all() and 0 < (snr > 5).sum() < 200  # only the first t's differ
    with pytest.raises(ValueError, match="choose from simple, p2, min-snr"):
        loss_weight("l1", t, sched)


@pytest.mark.parametrize("clip", [False, True])
def test_ddim_eta1_mean_equals_ddpm_posterior_mean_float64(sched, clip):
    """DDIM (Song et al. eq. 12, eta=1) and DDPM (Ho et al. eq. 7) give the same mean, to 1e-12 in float64."""
    g = torch.Generator().manual_seed(1)
    steps = make_steps(sched, strided_timesteps(50))
    sigma = steps.sigma("fixed_small", eta=1.0)
    for i in range(steps.S):
        x_t = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
        eps = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
        torch.testing.assert_close(ddim_mean(x_t, eps, i, steps, clip, sigma), mu_t(x_t, eps, i, steps, clip),
                                   rtol=0, atol=1e-12)


def test_mu_t_with_true_eps_is_the_posterior_mean(sched):
    """If eps is the noise that made x_t, x0_hat = x0 (eq. 15) and mu_t = mu_tilde(x_t, x0) (eq. 7)."""
    steps = make_steps(sched, strided_timesteps(10))
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    eps = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    for i in range(steps.S):
        x_t = q_sample(x0, steps.t[i].expand(2), eps, sched)
        torch.testing.assert_close(x0_hat(x_t, eps, at(steps.alpha_bar_t, i, x_t), False), x0, rtol=0, atol=1e-9)
        torch.testing.assert_close(mu_t(x_t, eps, i, steps, False), posterior_mean(x0, x_t, i, steps),
                                   rtol=0, atol=1e-9)


@pytest.mark.parametrize("clip", [True, False])
def test_reverse_step_equals_diffusers_ddim_eta1_and_ddpm_step(sched, clip):
    """Our step (same eps, same noise z) equals DDIMScheduler.step(eta=1, variance_noise=z, use_clipped_model_output)
    and DDPMScheduler.step
    (its noise drawn from the same seed) at every strided timestep but the last, to 1e-5 in float32."""
    diffusers = pytest.importorskip("diffusers")
    S = 20
    ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=clip, set_alpha_to_one=True)
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=clip, variance_type="fixed_small")
    ddim.set_timesteps(S)
    ddpm.set_timesteps(S)
    steps = make_steps(sched, strided_timesteps(S))
    sigma = steps.sigma("fixed_small")
    g = torch.Generator().manual_seed(2)
    for i, t in enumerate(steps.t.tolist()[:-1]):
        x_t, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
        z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(100 + i))
        ours = reverse_step(x_t, eps, z, i, steps, sigma, clip=clip)
        ref_ddim = ddim.step(eps, t, x_t, eta=1.0, variance_noise=z, use_clipped_model_output=True).prev_sample
        ref_ddpm = ddpm.step(eps, t, x_t, generator=torch.Generator().manual_seed(100 + i)).prev_sample
        torch.testing.assert_close(ours, ref_ddim, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours, ref_ddpm, rtol=0, atol=1e-5)


def test_sampler_is_a_deterministic_function_of_its_noise(sched):
    """G(x_T, z): the same (x_T, zs) give bit-identical x0; drawing zs from a seed equals passing them; eta=0 ignores z."""
    model = seeded_unet("tiny")
    steps = make_steps(sched, strided_timesteps(5))
    sigma = steps.sigma("fixed_small")
    x_T = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = sample(model, x_T, steps, sigma, generator=torch.Generator().manual_seed(1), progress=False)
    zs = draw_zs(steps.S, x_T, torch.Generator().manual_seed(1))
    b = sample(model, x_T, steps, sigma, zs=zs, progress=False)
    assert torch.equal(a, b)
    c = sample(model, x_T, steps, sigma, zs=zs + 1e-3, progress=False)
    assert (c - a).abs().max() > 1e-6  # negative control: other noise, other image
    s0 = steps.sigma("fixed_small", eta=0.0)
    d0 = sample(model, x_T, steps, s0, zs=zs, mean="ddim", progress=False)
    d1 = sample(model, x_T, steps, s0, zs=torch.randn_like(zs), mean="ddim", progress=False)
    assert torch.equal(d0, d1)
