"""metrics.py: PSNR and SSIM, which the README's edit tables report, against closed forms and a hand-written oracle."""
import math

import numpy as np
import torch

from ddpm.metrics import overlap, psnr, shift_image, ssim


def test_psnr_of_a_constant_error_is_its_closed_form():
    """A constant difference c in [-1, 1] units (peak-to-peak 2): PSNR = 10 log10(4 / c^2)."""
    a = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.6 - 0.8
    for c in (0.01, 0.1, 0.5):
        want = torch.full((3,), 10 * math.log10(4 / c ** 2), dtype=torch.float64)
        torch.testing.assert_close(psnr(a + c, a), want, rtol=0, atol=1e-6)
    assert psnr(a, a).min() > 190  # identical images: the 1e-20 floor, not inf


def test_ssim_of_constant_images_is_the_luminance_term():
    """Constant images p, q in [0, 1] units: the variances vanish, SSIM = (2pq + C1) / (p^2 + q^2 + C1), C1 = 0.01^2."""
    for p, q in ((0.2, 0.7), (0.5, 0.5), (0.0, 1.0)):
        a, b = torch.full((1, 3, 16, 16), 2 * p - 1), torch.full((1, 3, 16, 16), 2 * q - 1)
        want = (2 * p * q + 1e-4) / (p * p + q * q + 1e-4)
        assert abs(ssim(a, b).item() - want) < 1e-6


def test_ssim_on_one_window_equals_a_direct_numpy_computation():
    """On 11x11 images the valid convolution has one window: Wang et al. 2004 eq. 13 with Gaussian weights
    (sigma 1.5) written out with numpy sums, per channel, averaged; identical images give 1, noise gives less."""
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 11, 11, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(1, 3, 11, 11, generator=g)).clamp(-1, 1)
    w = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(w, w) / w.sum() ** 2
    vals = []
    for c in range(3):
        x, y = (a[0, c].double().numpy() + 1) / 2, (b[0, c].double().numpy() + 1) / 2
        mx, my = (w * x).sum(), (w * y).sum()
        vx, vy, cxy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum(), (w * (x - mx) * (y - my)).sum()
        vals.append((2 * mx * my + 1e-4) * (2 * cxy + 9e-4) / ((mx ** 2 + my ** 2 + 1e-4) * (vx + vy + 9e-4)))
    assert abs(ssim(a, b).item() - np.mean(vals)) < 1e-10
    assert abs(ssim(a, a).item() - 1) < 1e-12 and ssim(a, b).item() < 0.9


def test_overlap_keeps_exactly_the_pixels_a_shift_carries_over():
    x = torch.arange(2 * 5 * 6, dtype=torch.float64).view(1, 2, 5, 6)
    s = shift_image(x, 2, -1)
    assert torch.equal(overlap(s, 2, -1), x[..., 1:, :4]) and overlap(s, 2, -1).shape == (1, 2, 4, 4)
