"""Manipulations applied directly to noise maps (Huberman-Spiegelglas et al., arXiv 2304.06140, sec. 4:
"edit-friendly" maps carry the image's structure, so shifting or tinting them shifts or tints the output).

Every function is pure: NoiseMaps in, new NoiseMaps out, shapes and dtypes kept; they compose.
`t_range=(hi, lo)` limits an edit to the maps whose timestep t satisfies lo <= t <= hi (x_T counts as
the map at timesteps[0]); None means all maps. Masks are (H, W) tensors in [0, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .diffusion import EpsModel, sample
from .noisemap import NoiseMaps, regenerate, resume_point

Fill = Literal["noise", "zeros", "reflect", "wrap"]
FILLS: tuple[str, ...] = get_args(Fill)


def selected(maps: NoiseMaps, t_range: tuple[int, int] | None) -> Tensor:
    """(S,) bool: which z_t an edit touches. x_T is touched iff selected[0]."""
    t = maps.timesteps
    if t_range is None:
        return torch.ones_like(t, dtype=torch.bool)
    hi, lo = t_range
    if hi < lo:
        raise ValueError(f"t-range must be HI LO with HI >= LO, got {hi} {lo}")
    return (t >= lo) & (t <= hi)


def apply(maps: NoiseMaps, fn, t_range: tuple[int, int] | None) -> NoiseMaps:
    """New maps with fn(tensor (..., C, H, W), k) applied to x_T (k = -1) and to each selected z_t (k = step)."""
    sel = selected(maps, t_range)
    zs = maps.zs.clone()
    for k in torch.nonzero(sel).flatten().tolist():
        zs[k] = fn(maps.zs[k], k)
    xT = fn(maps.xT, -1) if sel[0] else maps.xT.clone()
    return maps.replace(xT=xT, zs=zs)


def shift_map(z: Tensor, dx: int, dy: int, fill: Fill = "wrap", generator: torch.Generator | None = None) -> Tensor:
    """Translate (N, C, H, W) maps by dx pixels right and dy down; the uncovered border is `fill`:
    fresh N(0, 1) noise, zeros, a reflection of the map, or the wrapped-around pixels."""
    N, C, H, W = z.shape
    if abs(dx) >= W or abs(dy) >= H:
        raise ValueError(f"shift ({dx}, {dy}) must be smaller than the image ({W}x{H})")
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if fill == "wrap" or (dx == 0 and dy == 0):
        return torch.roll(z, shifts=(dy, dx), dims=(2, 3))
    kept = z[:, :, max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))  # left, right, top, bottom
    if fill == "reflect":
        return F.pad(kept, pad, mode="reflect") if max(pad) < min(kept.shape[-2:]) else F.pad(kept, pad, mode="replicate")
    out = F.pad(kept, pad, value=0.0)
    if fill == "noise":
        border = torch.ones(H, W, dtype=torch.bool)
        border[pad[2]:H - pad[3], pad[0]:W - pad[1]] = False
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
        out = torch.where(border.to(z.device), noise, out)
    return out


def shift(maps: NoiseMaps, dx: int, dy: int, *, fill: Fill = "wrap", t_range: tuple[int, int] | None = None,
          generator: torch.Generator | None = None) -> NoiseMaps:
    """Shift x_T and the z_t in t_range by (dx, dy) pixels (paper sec. 4, Fig. 3: shifted maps -> shifted image)."""
    return apply(maps, lambda z, k: shift_map(z, dx, dy, fill, generator), t_range)


def color(maps: NoiseMaps, offset: Tensor, *, mask: Tensor | None = None,
          t_range: tuple[int, int] | None = None) -> NoiseMaps:
    """Add a per-channel constant `offset` (C,), in map units, to the maps (inside `mask` if given).
    See `calibrate_color` for converting an offset in image units to map units."""
    C = maps.x0.shape[1]
    if offset.shape != (C,):
        raise ValueError(f"color offset must have {C} values, got {tuple(offset.shape)}")
    delta = offset.double().view(1, C, 1, 1)
    if mask is not None:
        delta = delta * check_mask(mask, maps)
    return apply(maps, lambda z, k: z + delta.to(z.dtype).to(z.device), t_range)


def check_mask(mask: Tensor, maps: NoiseMaps) -> Tensor:
    H, W = maps.x0.shape[-2:]
    if mask.shape != (H, W):
        raise ValueError(f"mask must be {H}x{W} like the maps, got {tuple(mask.shape)}")
    return mask.to(maps.zs.dtype)


def paste(maps: NoiseMaps, other: NoiseMaps, mask: Tensor, *, t_range: tuple[int, int] | None = None) -> NoiseMaps:
    """Region transplant: inside `mask` take `other`'s maps, outside keep `maps` (same timesteps needed)."""
    if not torch.equal(maps.timesteps, other.timesteps) or maps.zs.shape != other.zs.shape:
        raise ValueError("paste needs two noise-map files with the same timesteps and shapes")
    m = check_mask(mask, maps)
    return apply(maps, lambda z, k: z * (1 - m) + (other.xT if k < 0 else other.zs[k]) * m, t_range)


def mix(maps: NoiseMaps, other: NoiseMaps, w: float, *, t_range: tuple[int, int] | None = None) -> NoiseMaps:
    """Interpolate two sets of maps, variance-preserving: ((1 - w) a + w b) / sqrt((1 - w)^2 + w^2)."""
    if not torch.equal(maps.timesteps, other.timesteps) or maps.zs.shape != other.zs.shape:
        raise ValueError("mix needs two noise-map files with the same timesteps and shapes")
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"mix weight must be in [0, 1], got {w}")
    s = ((1 - w) ** 2 + w ** 2) ** 0.5
    return apply(maps, lambda z, k: ((1 - w) * z + w * (other.xT if k < 0 else other.zs[k])) / s, t_range)


def resample(maps: NoiseMaps, t_range: tuple[int, int], generator: torch.Generator) -> NoiseMaps:
    """Replace the maps in t_range with fresh N(0, 1) noise: variations of one image (fine detail when
    the range is the low timesteps, layout too when it reaches the high ones)."""
    return apply(maps, lambda z, k: torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device), t_range)


# Offsets in the maps of high timesteps are amplified by ~1/sqrt(alpha_bar_t) and saturate the output
# (measured on the shipped model: +0.01 in every map moved the red mean by 0.84); restricted to t <= 200
# the response is close to linear (+0.01 -> 0.026, +0.1 -> 0.254). So color edits default to this range.
COLOR_T_RANGE = (200, 0)


def mean_change(x: Tensor, base: Tensor, mask: Tensor | None) -> Tensor:
    """(C,) float64 mean over images and (masked) pixels of x - base."""
    w = torch.ones(base.shape[-2:], dtype=torch.float64) if mask is None else mask.double()
    w = w.to(base.device)
    return (((x.double() - base.double()) * w).sum((0, 2, 3)) / (w.sum() * base.shape[0])).cpu()


@torch.no_grad()
def solve_color(eps_model: EpsModel, maps: NoiseMaps, target: Tensor, *, base: Tensor, mask: Tensor | None = None,
                t_range: tuple[int, int] | None = COLOR_T_RANGE, probe: float = 0.05, newton_steps: int = 1,
                progress: bool = False, reuse: NoiseMaps | None = None) -> tuple[Tensor, Tensor]:
    """The map offset (C,) whose `color` edit changes the output's per-channel mean by `target` (image units).

    Measures the gain (output change per unit map offset) with one regeneration at +probe in every channel
    (the response is near-diagonal), then refines offset += (target - measured) / gain `newton_steps`
    times, one regeneration each. `base` is the unedited regeneration; with `reuse` (see `regenerate`) each
    regeneration computes only the steps of t_range. Returns (offset, gain).
    """
    C = maps.x0.shape[1]
    edit = lambda o: regenerate(eps_model, color(maps, o, mask=mask, t_range=t_range), progress=progress,  # noqa: E731
                                reuse=reuse)
    gain = mean_change(edit(torch.full((C,), probe, dtype=torch.float64)), base, mask) / probe
    if (gain.abs() < 1e-3).any():
        raise ValueError(f"color gain {gain.tolist()} is ~0 for t-range {t_range}; widen it")
    offset = target.double() / gain
    for _ in range(newton_steps):
        offset = offset + (target.double() - mean_change(edit(offset), base, mask)) / gain
    return offset, gain


@torch.no_grad()
def regenerate_switched(eps_src: EpsModel, eps_tgt: EpsModel, maps: NoiseMaps, skip: int, progress: bool = False,
                        reuse: NoiseMaps | None = None) -> Tensor:
    """Semantic edit by changing the condition (paper sec. 5; CycleDiffusion with two models): the first
    `skip` steps run with the source eps model (reproducing the inversion's x at timesteps[skip] exactly),
    the remaining ones with the target eps model and the same maps. With `reuse` (unedited maps with a trajectory
    that eps_src made, see `noisemap.regenerate`) the source steps shared with them are not recomputed."""
    S = len(maps.timesteps)
    if not 0 <= skip < S:
        raise ValueError(f"skip must be between 0 and {S - 1}, got {skip}")
    steps, sig = maps.steps, maps.sigmas
    k, x = resume_point(maps, reuse, skip)
    if k < skip:
        x = sample(eps_src, x, steps[k:skip], sig[k:skip], zs=maps.zs[k:skip], clip=maps.clip_x0, progress=progress)
    return sample(eps_tgt, x, steps[skip:], sig[skip:], zs=maps.zs[skip:], clip=maps.clip_x0, progress=progress)


@dataclass(frozen=True)
class EditSpec:
    """The edits of one `edit.py` run, applied by `apply_spec` in this order: paste or mix with other maps (same
    timesteps), shift, color, resample. Each is optional; t_range limits all of them (color: COLOR_T_RANGE if None).
    mask (H, W) in [0, 1] is the region of paste and color; color is the requested per-channel change of the
    output's mean, in image units (calibrated by `solve_color`)."""

    paste: NoiseMaps | None = None
    mix: tuple[NoiseMaps, float] | None = None
    mask: Tensor | None = None
    shift: tuple[int, int] | None = None
    fill: Fill = "wrap"
    color: Tensor | None = None
    resample: tuple[int, int] | None = None
    t_range: tuple[int, int] | None = None
    seed: int = 0

    def __post_init__(self):
        if self.paste is not None and self.mask is None:
            raise ValueError("paste needs a mask")


@torch.no_grad()
def apply_spec(eps_model: EpsModel, maps: NoiseMaps, spec: EditSpec, *, reuse: NoiseMaps | None = None,
               progress: bool = False) -> tuple[NoiseMaps, dict]:
    """(edited maps, notes): the spec's edits in order. notes holds, for a color edit, the unedited regeneration
    `base` and the calibration's `color_offset` and `color_gain`. reuse: see `noisemap.regenerate`."""
    g, rng, notes = torch.Generator().manual_seed(spec.seed), spec.t_range, {}
    mask = None if spec.mask is None else spec.mask.to(maps.zs.device)
    edited = maps
    if spec.paste is not None:
        edited = paste(edited, spec.paste, mask, t_range=rng)
    if spec.mix is not None:
        edited = mix(edited, *spec.mix, t_range=rng)
    if spec.shift is not None:
        edited = shift(edited, *spec.shift, fill=spec.fill, t_range=rng, generator=g)
    if spec.color is not None:
        c_range = rng or COLOR_T_RANGE
        base = regenerate(eps_model, maps, progress=progress, reuse=reuse)
        offset, gain = solve_color(eps_model, maps, spec.color, base=base, mask=mask, t_range=c_range,
                                   progress=progress, reuse=reuse)
        edited = color(edited, offset, mask=mask, t_range=c_range)
        notes = {"base": base, "color_offset": offset, "color_gain": gain, "color_t_range": c_range}
    if spec.resample is not None:
        edited = resample(edited, spec.resample, g)
    return edited, notes
