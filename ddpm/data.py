"""Training data: torchvision CIFAR10 folders, ImageFolder trees, and flat folders of face images.

Every dataset yields (x, y): x a (3, size, size) float32 tensor in [-1, 1] (centre crop + resize), y an
int label (0 where the data has none). Augmentation (the random flip of Ho et al.) is done by the trainer
with its own generator, so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from .images import center_crop_resize, to_unit

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DataError(ValueError):
    """A data path that cannot be used; the message says what to do."""


def _transform(size: int):
    from torchvision.transforms.functional import pil_to_tensor

    return lambda img: to_unit(pil_to_tensor(center_crop_resize(img.convert("RGB"), size)).float() / 255.0)


class FlatImages(Dataset):
    """All images in one folder (e.g. CelebA's img_align_celeba), label 0."""

    def __init__(self, root: Path, size: int):
        from PIL import Image

        self.files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        self.tf, self.open = _transform(size), Image.open

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int):
        with self.open(self.files[k]) as im:
            return self.tf(im), 0


def load_dataset(path: str | Path, size: int, *, train: bool = True, download: bool = False) -> Dataset:
    """CIFAR-10 (a folder holding or named `cifar-10-batches-py`), an ImageFolder tree, or a flat image folder."""
    from torchvision import datasets

    path = Path(path)
    if download:
        return datasets.CIFAR10(str(path), train=train, download=True, transform=_transform(size))
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder (CIFAR-10 python folder, ImageFolder tree or image folder)")
    if path.name == "cifar-10-batches-py":
        path = path.parent
    if (path / "cifar-10-batches-py").is_dir():
        try:
            return datasets.CIFAR10(str(path), train=train, download=False, transform=_transform(size))
        except RuntimeError as e:
            raise DataError(f"{path}: CIFAR-10 folder is incomplete or corrupt ({e}); re-extract it or use --download")
    if any(p.suffix.lower() in IMAGE_EXTS for p in path.iterdir()):
        return FlatImages(path, size)
    try:
        return datasets.ImageFolder(str(path), transform=_transform(size))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{path}: no images found ({e})")


class ResumableSampler(Sampler[int]):
    """Epoch e visits randperm(n, seed + e)[rank::world], starting at position `start` (for exact resume)."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch, self.start, self.rank, self.world = n, seed, epoch, start, rank, world

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.n, generator=g)[self.rank::self.world].tolist()

    def __iter__(self):
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return len(self.indices()) - self.start
