"""Growing a trained UNet without changing what it computes: more res blocks per level, attention at more
resolutions, a class embedding. Every new part starts as an identity (or as zero where it is added), so at step 0
the grown network is the source exactly, and training goes on from the source's quality instead of from scratch.

    new down block k >= n (after the level's n old blocks): conv2 = 0, so x -> x + 0 (in = out channels)
    new up blocks: the up path pops the down path's skips in reverse, so the d = m - n new ones come second:
        up block 0      <- old up block 0 (it pops the last down block's output, which the new identity down
                           blocks pass on unchanged)
        up blocks 1..d  new: concat(h, skip) -> h, the 1x1 skip projection [I | 0] and conv2 = 0
        up block k > d  <- old up block k - d (it pops the same skip as before)
    new attention block: proj_out = 0, so x -> x + 0
    new class embedding: 0 (it is added to the timestep embedding), so every label gives the source model

A new block learns from its first step: the gradient of its zero conv2 / proj_out is the product of its own
(random) activations and the incoming gradient, as in zero-initialised residual branches (Goyal et al. 2017).
Only the layout may grow; channel widths must match (a wider network changes its GroupNorm statistics and its
timestep embedding's frequencies, so it cannot start equal to a narrower one); with another num_groups the weights
still map, as a warm start that is not exact (`growable`).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor

from .unet import Attention, ResBlock, UNet, UNetConfig

_BLOCK = re.compile(r"(down|up)\.(\d+)\.(res|attn)\.(\d+)\.(.+)")


def growable(src: UNetConfig, dst: UNetConfig) -> str:
    """'' when a `dst` network can start from a `src` one's weights, else what stands in the way. A different
    num_groups is let through: the weights map one to one, but the normalisation, so the function, changes (a warm
    start, as the GroupNorm fixes of sessions 4 and 10 moved 32- and 8-group weights into 8 and 1 groups)."""
    same = ("image_size", "in_ch", "ch", "ch_mult")
    if diff := [f for f in same if getattr(src, f) != getattr(dst, f)]:
        return f"{', '.join(diff)} differ"
    if dst.num_res_blocks < src.num_res_blocks:
        return f"fewer res blocks per level ({dst.num_res_blocks} < {src.num_res_blocks})"
    if missing := set(src.attn_resolutions) - set(dst.attn_resolutions):
        return f"no attention at {sorted(missing)}"
    if src.num_classes and src.num_classes != dst.num_classes:
        return f"{dst.num_classes} classes, not {src.num_classes}"
    return ""


def names(cfg: UNetConfig) -> list[str]:
    """The parameter names of a UNet of `cfg`, in order (the optimiser's indices), built on the meta device: no
    memory, no draw from the global RNG."""
    with torch.device("meta"):
        return list(UNet(cfg).state_dict())


def source_names(src: UNetConfig, dst: UNetConfig) -> dict[str, str | None]:
    """For every parameter of a `dst` UNet, the name of the `src` parameter it starts from, or None (a new part,
    initialised by `grow`). The layout is the module docstring's."""
    n, d = src.num_res_blocks, dst.num_res_blocks - src.num_res_blocks
    L = len(dst.ch_mult)

    def has_attn(path: str, level: int) -> bool:
        res = dst.image_size >> (level if path == "down" else L - 1 - level)
        return res in src.attn_resolutions

    out = {}
    for name in names(dst):
        m = _BLOCK.fullmatch(name)
        if m is None:
            out[name] = None if name.startswith("class_emb.") and not src.num_classes else name
            continue
        path, level, kind, k, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        if path == "down":
            k_src = k if k < n else None
        else:
            k_src = 0 if k == 0 else (k - d if k > d else None)
        if k_src is None or (kind == "attn" and not has_attn(path, level)):
            out[name] = None
        else:
            out[name] = f"{path}.{level}.{kind}.{k_src}.{rest}"
    return out


def identity_init(model: UNet, new: set[str]) -> None:
    """Make the modules whose parameters are all in `new` identities (or zero), as the module docstring says."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            params = {f"{name}.{p}" for p, _ in mod.named_parameters()}
            if not params or not params <= new:
                continue
            if isinstance(mod, ResBlock):
                mod.conv2.weight.zero_(), mod.conv2.bias.zero_()
                if isinstance(mod.skip, torch.nn.Conv2d):  # concat(h, skip) -> h
                    out_ch = mod.skip.out_channels
                    mod.skip.weight.zero_(), mod.skip.bias.zero_()
                    mod.skip.weight[:, :out_ch, 0, 0] = torch.eye(out_ch)
            elif isinstance(mod, Attention):
                mod.proj_out.weight.zero_(), mod.proj_out.bias.zero_()
            elif name == "class_emb":
                mod.weight.zero_()


def grow(model: UNet, src_cfg: UNetConfig, *states: dict[str, Tensor]) -> tuple[list[dict[str, Tensor]], list[int]]:
    """The `src_cfg` state dicts `states` (weights, EMA weights) laid out for `model`, whose new parts are
    `identity_init`'s, and for the optimiser state: `index[i]`, the source index of model parameter i, -1 when new.
    Raises ValueError (`growable`) when the model cannot start equal to the source."""
    if why := growable(src_cfg, model.cfg):
        raise ValueError(why)
    taken = source_names(src_cfg, model.cfg)
    identity_init(model, {k for k, v in taken.items() if v is None})
    own, src_index = model.state_dict(), {k: i for i, k in enumerate(names(src_cfg))}
    grown = [{k: own[k].clone() if v is None else s[v] for k, v in taken.items()} for s in states]
    return grown, [-1 if v is None else src_index[v] for v in taken.values()]
