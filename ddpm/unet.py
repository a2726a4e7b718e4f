"""The UNet of Ho et al. 2020 (appendix B), written out by hand. It knows nothing about diffusion.

Layout (the same network as diffusers' UNet2DModel with DownBlock2D/AttnDownBlock2D/UpBlock2D/
AttnUpBlock2D, downsample_padding=0, freq_shift=1, single-head attention):

    conv_in -> for each resolution level: num_res_blocks x (ResBlock [+ Attention]) [+ Downsample]
            -> mid: ResBlock, Attention, ResBlock
            -> for each level, reversed: (num_res_blocks + 1) x (concat skip, ResBlock [+ Attention]) [+ Upsample]
            -> GroupNorm, SiLU, conv_out
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    image_size: int = 32
    in_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    num_classes: int = 0  # > 0: class-conditional, with a learned null class at index num_classes
    # GroupNorm groups. Ho et al. use 32 at 128 channels (4 per group). With 32 channels, 32 groups normalise each
    # channel on its own and erase its spatial mean, so the network cannot pass the image mean through; at high t
    # x0_hat then amplifies that missing mean by 1/sqrt(alpha_bar_t) into saturated colours. Keep >= 2 per group;
    # every group still removes the mean of its channels' average, so fewer groups pass more (celeba64-cpu: one
    # group of 32 channels).
    num_groups: int = 32

    def __post_init__(self):
        # lists from JSON/safetensors metadata become tuples, and attention resolutions a sorted set (a diffusers
        # folder lists them from the top level down), so configs compare equal
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(sorted(set(self.attn_resolutions))))
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1}")
        if self.ch % self.num_groups or any(self.ch * m % self.num_groups for m in self.ch_mult):
            raise ValueError(f"every channel count must be a multiple of num_groups = {self.num_groups} (GroupNorm)")

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, UNetConfig] = {
    "cifar10": UNetConfig(),  # 35.75M parameters, = google/ddpm-cifar10-32
    "celeba64": UNetConfig(image_size=64, ch_mult=(1, 2, 2, 2, 4)),
    "celebahq256": UNetConfig(image_size=256, ch_mult=(1, 1, 2, 2, 4, 4), dropout=0.0),  # 113.67M, = google/ddpm-celebahq-256
    # 3.0M, trains on a CPU; 8 groups = 4 channels per group as in Ho et al. (the shipped cifar10-cpu*.safetensors,
    # trained before that fix, record num_groups = 32 in their own config)
    "cifar10-cpu": UNetConfig(ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, dropout=0.0, num_groups=8),
    "celeba32-cpu": UNetConfig(ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, dropout=0.0, num_groups=8),  # for faces
    # 3.1M, faces at 64x64: celeba32-cpu with a 32-channel 64x64 level in front (17.5 images/s per training thread,
    # 1.5x the (1, 2, 2, 4) layout at 64x64, measured on the AMD EPYC of session 7). One group: with 8, the output
    # GroupNorm removed most of the image mean the network had to pass through at large t (mean gain 0.15 where the
    # posterior's is 0.99), which drew the samples with colour casts; see the celeba64-cpu card (session 10)
    "celeba64-cpu": UNetConfig(image_size=64, ch=32, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=1, dropout=0.0,
                               num_groups=1),
    "tiny": UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), dropout=0.0),
    "cifar10-cond": UNetConfig(num_classes=10),
}
# Grown from a trained file of the preset before the dash with --init (the new blocks start as identity, ddpm.grow):
# celeba64-cpu with attention also at 32x32 (0.83x its speed in session 12's one-off loop), and the CPU presets with
# Ho et al.'s two res blocks per level (celeba64-cpu: 4.5M parameters, 0.71x its speed in that loop)
PRESETS["celeba64-cpu-attn32"] = replace(PRESETS["celeba64-cpu"], attn_resolutions=(16, 32))
PRESETS["celeba64-cpu-2res"] = replace(PRESETS["celeba64-cpu"], num_res_blocks=2)
PRESETS["cifar10-cpu-2res"] = replace(PRESETS["cifar10-cpu"], num_res_blocks=2)


def timestep_embedding(t: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """Sinusoidal embedding of the timestep (Ho et al. 2020, appendix B; Vaswani et al. 2017, sec. 3.5):
    emb = [sin(t w_k), cos(t w_k)], w_k = exp(-log(10000) k / (dim/2 - 1)), k = 0..dim/2-1.
    Computed in `dtype` (float32 as diffusers does, float64 for a float64 model). (B,) -> (B, dim)."""
    half = dim // 2
    w = torch.exp(-math.log(10000) * torch.arange(half, dtype=dtype, device=t.device) / (half - 1))
    arg = t.to(dtype)[:, None] * w[None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)


def norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, ch, eps=1e-6)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + Dense(SiLU(temb)), GroupNorm-SiLU-dropout-conv, + (1x1-projected) input."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = norm(in_ch, groups), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2, self.dropout = norm(out_ch, groups), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over all pixels (Ho et al. 2020, appendix B), with a residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = norm(ch, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Linear(ch, ch) for _ in range(4))

    def forward(self, x: Tensor) -> Tensor:
        H, W = x.shape[-2:]
        h = rearrange(self.norm(x), "b c h w -> b (h w) c")  # (B, C, H, W) -> (B, HW, C)
        h = F.scaled_dot_product_attention(self.q(h)[:, None], self.k(h)[:, None], self.v(h)[:, None])[:, 0]
        h = rearrange(self.proj_out(h), "b (h w) c -> b c h w", h=H, w=W)
        return x + h


class Downsample(nn.Module):
    """3x3 conv, stride 2, with TF 'SAME' padding (zero row/column at the bottom/right only)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level of the down or up path: res blocks, optional attention after each, optional resampling."""

    def __init__(self, res: list[ResBlock], attn: bool, resample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(Attention(r.conv2.out_channels, r.norm2.num_groups) for r in res) if attn else None
        self.resample = resample


class UNet(nn.Module):
    """eps_theta(x_t, t[, y]): (B, C, H, W), (B,) int64[, (B,) int64] -> (B, C, H, W)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, temb_ch, L, G = cfg.ch, 4 * cfg.ch, len(cfg.ch_mult), cfg.num_groups
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, temb_ch) if cfg.num_classes else None
        self.conv_in = nn.Conv2d(cfg.in_ch, ch, 3, padding=1)

        skips, h_ch, res = [ch], ch, cfg.image_size
        self.down = nn.ModuleList()
        for lvl, mult in enumerate(cfg.ch_mult):
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(h_ch, ch * mult, temb_ch, cfg.dropout, G))
                h_ch = ch * mult
                skips.append(h_ch)
            last = lvl == L - 1
            self.down.append(Level(blocks, res in cfg.attn_resolutions, None if last else Downsample(h_ch)))
            if not last:
                skips.append(h_ch)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(h_ch, h_ch, temb_ch, cfg.dropout, G), Attention(h_ch, G),
                                  ResBlock(h_ch, h_ch, temb_ch, cfg.dropout, G)])

        self.up = nn.ModuleList()
        for lvl, mult in reversed(list(enumerate(cfg.ch_mult))):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(h_ch + skips.pop(), ch * mult, temb_ch, cfg.dropout, G))
                h_ch = ch * mult
            self.up.append(Level(blocks, res in cfg.attn_resolutions, Upsample(h_ch) if lvl else None))
            if lvl:
                res *= 2
        assert not skips

        self.norm_out = norm(h_ch, G)
        self.conv_out = nn.Conv2d(h_ch, cfg.in_ch, 3, padding=1)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.shape[1:] != (self.cfg.in_ch, self.cfg.image_size, self.cfg.image_size):
            raise ValueError(f"UNet expects (B, {self.cfg.in_ch}, {self.cfg.image_size}, {self.cfg.image_size}), "
                             f"got {tuple(x.shape)}")
        emb_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        temb = self.temb(timestep_embedding(t, self.cfg.ch, emb_dtype).to(x.dtype))
        if self.class_emb is not None:
            if y is None:  # unconditional = the null class
                y = torch.full_like(t, self.cfg.num_classes)
            temb = temb + self.class_emb(y)
        elif y is not None:
            raise ValueError("this model is unconditional; it takes no class labels")

        h = self.conv_in(x)
        hs = [h]
        for level in self.down:
            for j, block in enumerate(level.res):
                h = block(h, temb)
                if level.attn is not None:
                    h = level.attn[j](h)
                hs.append(h)
            if level.resample is not None:
                h = level.resample(h)
                hs.append(h)

        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)

        for level in self.up:
            for j, block in enumerate(level.res):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                if level.attn is not None:
                    h = level.attn[j](h)
            if level.resample is not None:
                h = level.resample(h)

        return self.conv_out(F.silu(self.norm_out(h)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
