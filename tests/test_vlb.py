"""vlb.py: the terms of the variational bound (Ho et al. eq. 5) against closed forms, with an oracle eps model."""
import math

import torch

from ddpm.vlb import bits_per_dim, fixed_large_var, prior_kl, vlb_term

from conftest import seeded_unet


def oracle(x0, sched):
    """eps_theta that returns the true noise: (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)."""
    ab = sched.alpha_bar

    def eps(x_t, t):
        a = ab[t.cpu()].view(-1, 1, 1, 1).to(x_t.dtype)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return eps


def test_decoder_term_with_oracle_equals_the_gaussian_bin_mass(sched):
    """t = 0, exact mean: -log p(x0|x1) = sum over pixels of -log(2 Phi(1/(255 sigma)) - 1) (interior pixels),
    -log Phi(1/(255 sigma)) at the edge bins x0 = +-1 (Ho et al. eq. 13)."""
    x0 = torch.tensor([-1.0, -0.5, 0.0, 1.0], dtype=torch.float64).view(1, 1, 2, 2).expand(1, 3, 2, 2).contiguous()
    eps = torch.randn_like(x0)
    nll = vlb_term(oracle(x0, sched), x0, torch.tensor([0]), eps, sched).item()
    s = fixed_large_var(sched)[0].sqrt().item()
    Phi = lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2)))  # noqa: E731
    inner, edge = -math.log(2 * Phi(1 / (255 * s)) - 1), -math.log(Phi(1 / (255 * s)))
    assert abs(nll - 3 * (2 * inner + 2 * edge)) < 1e-6 * abs(nll)


def test_kl_terms_with_oracle_reduce_to_the_variance_mismatch(sched):
    """t >= 1 with mu_p = mu_q: KL = D/2 (log(v_p/v_q) + v_q/v_p - 1), v_q = beta_tilde_t, v_p = beta_t."""
    x0 = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    for t in (1, 10, 500, 999):
        kl = vlb_term(oracle(x0, sched), x0, torch.tensor([t, t]), torch.randn_like(x0), sched)
        ab, beta = sched.alpha_bar, sched.beta
        v_q = ((1 - ab[t - 1]) / (1 - ab[t]) * beta[t]).item()
        v_p = beta[t].item()
        expected = 48 / 2 * (math.log(v_p / v_q) + v_q / v_p - 1)
        torch.testing.assert_close(kl, torch.full_like(kl, expected), rtol=1e-6, atol=1e-9)


def test_prior_term_is_tiny_and_bound_is_worse_for_an_untrained_model(sched):
    x0 = torch.rand(4, 3, 32, 32) * 2 - 1
    assert prior_kl(x0.double(), sched).max() / (3 * 32 * 32 * math.log(2)) < 1e-4
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        random_bpd = bits_per_dim(seeded_unet("tiny"), x0, sched, g).mean().item()
        oracle_bpd = bits_per_dim(oracle(x0, sched), x0, sched, g).mean().item()
    assert oracle_bpd < random_bpd and oracle_bpd > 0
