"""Class conditioning and classifier-free guidance (Ho & Salimans 2022, eq. 6) as an eps model.

eps_w(x, t, y) = eps(x, t, null) + w (eps(x, t, y) - eps(x, t, null)); w = 1 is the plain conditional model,
and y = null with any w is the unconditional one. The wrapper has the (x, t) signature of every other eps
model, so the sampler, both inversions and the noise-map regeneration take it unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .diffusion import EpsModel
from .unet import UNet

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_index(name: str, num_classes: int) -> int:
    """A CIFAR-10 class name or an integer label -> label in [0, num_classes)."""
    k = CIFAR10_CLASSES.index(name) if name in CIFAR10_CLASSES else int(name) if name.isdigit() else -1
    if not 0 <= k < num_classes:
        raise ValueError(f"class {name!r} is not one of {CIFAR10_CLASSES[:num_classes]} or 0..{num_classes - 1}")
    return k


UNCONDITIONAL = "this model is unconditional; it takes no --class (train one with train.py --class-cond)"


def guided_eps(unet: UNet, y: Tensor, w: float) -> EpsModel:
    """eps model for labels y (N,) and guidance scale w. Batches that stack several timesteps of the same N
    images (batched inversion: [step i images, step i+1 images, ...]) get y repeated to match."""
    n_cls = unet.cfg.num_classes
    if not n_cls:
        raise ValueError(UNCONDITIONAL)

    def eps(x: Tensor, t: Tensor) -> Tensor:
        yy = y.to(x.device).repeat(x.shape[0] // y.shape[0])
        if w == 1.0:
            return unet(x, t, yy)
        both = unet(torch.cat([x, x]), torch.cat([t, t]), torch.cat([yy, torch.full_like(yy, n_cls)]))
        cond, uncond = both.chunk(2)
        return uncond + w * (cond - uncond)

    return eps


def class_eps(unet: UNet, name: str, w: float, n: int) -> tuple[EpsModel, Tensor]:
    """The guided eps model for n images of class `name` (a CIFAR-10 name or a label), and the labels (n,)."""
    if not unet.cfg.num_classes:
        raise ValueError(UNCONDITIONAL)
    y = torch.full((n,), class_index(name, unet.cfg.num_classes))
    return guided_eps(unet, y, w), y


def file_eps(unet: UNet, extra: dict) -> EpsModel:
    """The eps model a noise-map file was made with: guided by its optional class_label and cfg_scale keys when
    present (docs/noise_map_format.md), the unconditional network otherwise."""
    if "class_label" in extra:
        return guided_eps(unet, extra["class_label"], extra.get("cfg_scale", 1.0))
    return unet
