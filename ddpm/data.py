"""Training data: CIFAR-10 python folders (torchvision's `--download` layout), ImageFolder trees, and flat folders of face images.

Every dataset yields (x, y): x a (3, size, size) float32 tensor in [-1, 1] (centre crop + resize), y an
int label (0 where the data has none). Augmentation (the random flip of Ho et al.) is done by the trainer
with its own generator, so a resumed run sees exactly the same batches.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .images import center_crop_resize, to_unit

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class DataError(ValueError):
    """A data path that cannot be used; the message says what to do."""


def _transform(size: int, crop: float = 1.0):
    from torchvision.transforms.functional import pil_to_tensor

    return lambda img: to_unit(pil_to_tensor(center_crop_resize(img.convert("RGB"), size, crop)).float() / 255.0)


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


CELEBA_CROP = 140 / 178  # the usual CelebA framing: a 140-pixel centred square of the 178x218 aligned faces
CELEBA_LAST_TRAIN_ID = 162770  # CelebA's list_eval_partition: ids 1-162770 train, 162771-182637 val, the rest test


class CelebAFaces(Dataset):
    """CelebA aligned faces from folders laid out as `<folder>/faces/<id>.jpg` + `<folder>/identity.txt`
    (the archives in ../shared/data), framed the usual way (CELEBA_CROP), label 0.

    train=True: the faces of CelebA's train partition, at most `cap` per identity (one archive is 200 people x 30
    images; uncapped they would dominate). train=False: the val and test partitions, whose identities no training
    face shows: the held-out set. An id present in several folders is read from the one with the largest images.
    """

    def __init__(self, folders: list[Path], size: int, train: bool, cap: int = 5):
        from PIL import Image

        def width(folder: Path) -> int:
            with Image.open(next((folder / "faces").iterdir())) as im:
                return im.size[0]

        best: dict[int, tuple[Path, int]] = {}  # id -> (file, identity), from the folder with the largest images
        for folder in sorted(folders, key=width):
            for line in (folder / "identity.txt").read_text().split("\n"):
                if line.strip():
                    name, ident = line.split()
                    best[int(Path(name).stem)] = (folder / "faces" / name, int(ident))
        per_identity: dict[int, int] = {}
        self.files = []
        for k in sorted(best):
            file, ident = best[k]
            if train != (k <= CELEBA_LAST_TRAIN_ID):
                continue
            per_identity[ident] = per_identity.get(ident, 0) + 1
            if not train or per_identity[ident] <= cap:
                self.files.append(file)
        if not self.files:
            raise DataError(f"{', '.join(map(str, folders))}: no {'train' if train else 'val/test'}-partition faces")
        self.crop = CELEBA_CROP  # recorded in the model file, so new faces are framed the same way
        self.tf, self.open = _transform(size, self.crop), Image.open

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int):
        with self.open(self.files[k]) as im:
            return self.tf(im), 0


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches (dicts of numpy arrays and lists) and nothing else:
    any other global (os.system, builtins.eval, ...) is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refused to unpickle {module}.{name}: CIFAR-10 batches hold only numpy arrays")
        return super().find_class(module, name)


class CifarBatches(Dataset):
    """The CIFAR-10 python format (`cifar-10-batches-py/data_batch_1..5`, `test_batch`), as torchvision's
    CIFAR10 reads it, but through `NumpyOnlyUnpickler` and without the md5 lock to the official files."""

    def __init__(self, folder: Path, size: int, train: bool):
        names = [f"data_batch_{k}" for k in range(1, 6)] if train else ["test_batch"]
        data, labels = [], []
        for name in names:
            f = folder / name
            if not f.is_file():
                raise DataError(f"{f}: missing; re-extract cifar-10-python.tar.gz or use --download")
            try:
                with open(f, "rb") as fh:
                    d = NumpyOnlyUnpickler(fh, encoding="latin1").load()
                data.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels += list(d.get("labels", d.get("fine_labels", [])))
            except DataError:
                raise
            except Exception as e:
                raise DataError(f"{f}: not a CIFAR-10 batch ({type(e).__name__}: {e}); the file is corrupt")
        self.data, self.labels = torch.from_numpy(np.concatenate(data)), labels
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k: int):
        x = to_unit(self.data[k].float() / 255.0)
        if self.size != 32:
            x = torch.nn.functional.interpolate(x[None], size=(self.size, self.size), mode="bicubic",
                                                align_corners=False, antialias=True)[0]
        return x, self.labels[k]


def load_dataset(path: str | Path, size: int, *, train: bool = True, download: bool = False) -> Dataset:
    """CIFAR-10 (a folder holding or named `cifar-10-batches-py`), CelebA faces (a folder with `identity.txt` and
    `faces/`, or a folder of such folders), an ImageFolder tree, or a flat image folder."""
    from torchvision import datasets

    path = Path(path)
    if download:  # torchvision fetches and md5-checks the archive; we read it like any other folder
        datasets.CIFAR10(str(path), train=train, download=True)
        return CifarBatches(path / "cifar-10-batches-py", size, train)
    if not path.is_dir():
        raise DataError(f"{path}: no such data folder (CIFAR-10 python folder, ImageFolder tree or image folder)")
    if path.name == "cifar-10-batches-py":
        path = path.parent
    if (path / "cifar-10-batches-py").is_dir():
        return CifarBatches(path / "cifar-10-batches-py", size, train)
    celeba = [d for d in [path, *sorted(path.iterdir())] if (d / "identity.txt").is_file() and (d / "faces").is_dir()]
    if celeba:
        return CelebAFaces(celeba, size, train)
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
