"""Images <-> tensors in [-1, 1]: the one pair of conversions, file reading with checks, PNG writing."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from .files import atomic_write


class ImageError(ValueError):
    """An image file that cannot be used; the message says what to do."""


def to_unit(img: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1] (Ho et al. 2020, sec. 3.3: data scaled linearly to [-1, 1])."""
    return img * 2.0 - 1.0


def from_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(x: Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) uint8, rounding to the nearest level."""
    return (from_unit(x.detach().cpu().double()) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()


def center_crop_resize(img: Image.Image, size: int, crop: float = 1.0) -> Image.Image:
    """Centred square of side crop * min(w, h) (1.0: the largest), then a bicubic (antialiased) resize to size x size.
    CelebA's usual framing is crop = 140 / 178 (a 140-pixel square of the 178x218 aligned faces)."""
    w, h = img.size
    s = round(min(w, h) * crop)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img if s == size else img.resize((size, size), Image.BICUBIC)


def load_image(path: str | Path, size: int, *, strict: bool = False, crop: float = 1.0) -> Tensor:
    """An image file as a (3, size, size) float32 tensor in [-1, 1].

    Non-RGB modes are converted with a warning; another size is centre-cropped (a square of crop * the short
    side, see `center_crop_resize`) and resized with a warning, or refused when strict.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            img = im
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageError(f"{path}: not a readable image ({e}); the file is corrupt, truncated or not an image")
    if img.mode != "RGB":
        warnings.warn(f"{path}: mode {img.mode} converted to RGB", stacklevel=2)
        img = img.convert("RGBA").convert("RGB") if img.mode == "P" else img.convert("RGB")
    if img.size != (size, size):
        if strict:
            raise ImageError(f"{path}: size {img.size[0]}x{img.size[1]} is not the model's {size}x{size}; "
                             "resize it or drop --strict")
        warnings.warn(f"{path}: {img.size[0]}x{img.size[1]} centre-cropped and resized to {size}x{size}",
                      stacklevel=2)
        img = center_crop_resize(img, size, crop)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return to_unit(arr.float() / 255.0)


def load_mask(path: str | Path, H: int, W: int) -> Tensor:
    """A mask image as an (H, W) float32 tensor of 0 and 1 (white = 1), resized (nearest) to H x W."""
    try:
        with Image.open(path) as im:
            m = im.convert("L").resize((W, H), Image.NEAREST)
    except OSError as e:
        raise ImageError(f"{path}: not a readable mask image ({e})")
    return torch.from_numpy((np.asarray(m) > 127).astype(np.float32))


def grid(x: Tensor, nrow: int | None = None, pad: int = 2) -> Tensor:
    """(N, C, H, W) -> (C, H', W') tiled with `pad` pixels of white between tiles, values in [-1, 1]."""
    N, C, H, W = x.shape
    nrow = nrow or int(np.ceil(np.sqrt(N)))
    ncol = int(np.ceil(N / nrow))
    out = x.new_ones(C, ncol * (H + pad) + pad, nrow * (W + pad) + pad)
    for k in range(N):
        r, c = divmod(k, nrow)
        out[:, pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = x[k]
    return out


def save_png(path: str | Path, x: Tensor, nrow: int | None = None) -> None:
    """Write a (C, H, W) image in [-1, 1] (or a (N, C, H, W) batch, as a grid of nrow columns) to a PNG, atomically."""
    if x.dim() == 4:
        x = grid(x, nrow)
    img = Image.fromarray(to_uint8(x))
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
