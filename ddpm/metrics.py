"""Image-quality measures used to check edits: PSNR, SSIM of luminance, per-channel means. Images in [-1, 1]."""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor


def luminance(x: Tensor) -> Tensor:
    """ITU-R BT.601 luma of (N, 3, H, W) -> (N, 1, H, W)."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-20))


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Per-image SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03), averaged over channels."""
    a, b = (a.double() + 1) / 2, (b.double() + 1) / 2
    C = a.shape[1]
    g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    win = (g[:, None] * g[None]) / g.sum() ** 2
    win = win.expand(C, 1, 11, 11).to(a.device)
    k = min(11, a.shape[-1], a.shape[-2])
    if k < 11:
        win = win[..., :k, :k] / win[..., :k, :k].sum((-1, -2), keepdim=True)
    f = lambda x: F.conv2d(x, win, groups=C)  # noqa: E731  valid convolution
    mu_a, mu_b = f(a), f(b)
    s_aa, s_bb, s_ab = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (s_aa + s_bb + c2))
    return m.flatten(1).mean(1)


def overlap(x: Tensor, dx: int, dy: int) -> Tensor:
    """The part of an image shifted by (dx, dy) that came from the original (the border excluded)."""
    H, W = x.shape[-2:]
    return x[..., max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)]


def shift_image(x: Tensor, dx: int, dy: int) -> Tensor:
    """The original image translated by (dx, dy) (wrapped; compare only on `overlap`)."""
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
