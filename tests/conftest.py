"""Shared fixtures: seeded tiny models, the real shipped images, and a small slice of ../shared/data."""
from pathlib import Path

import pytest
import torch

from ddpm.checkpoint import Model, save_model
from ddpm.schedule import linear_schedule
from ddpm.unet import PRESETS, UNet

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
SHARED = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)


def seeded_unet(preset: str, seed: int = 0, dtype=torch.float32) -> UNet:
    """A random-init UNet whose output conv is not zero (PyTorch default init), so eps depends on the input."""
    torch.manual_seed(seed)
    return UNet(PRESETS[preset]).to(dtype).eval()


@pytest.fixture(scope="session")
def sched():
    return linear_schedule()


@pytest.fixture(scope="session")
def cifar_images():
    """Four real CIFAR-10 test images (shipped in assets/) as (4, 3, 32, 32) in [-1, 1]."""
    from ddpm.images import load_image

    files = sorted((ASSETS / "cifar10").glob("*.jpg"))[:4]
    return torch.stack([load_image(f, 32) for f in files])


@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_model(path, seeded_unet("tiny"))
    return path


def tiny_model(dtype=torch.float32) -> Model:
    return Model(seeded_unet("tiny", dtype=dtype), linear_schedule(), sha256="test")
