"""Shared fixtures: seeded tiny models, the real shipped images, a small slice of ../shared/data, and `cli`, which
runs a command line in this process."""
import contextlib
import importlib
import io
import signal
import sys
import warnings
from dataclasses import dataclass
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


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def cli(command: str, *args) -> Run:
    """`command` (a script's module name, `invert`, `edit`, `train`, or `ddpm.sample`, `ddpm.verify`, `bench.figures`,
    ...) run in this process through `main_guard(main, argv)`, as its command line runs it: exit code (argparse and
    user errors: 2) and captured stdout/stderr, warnings printed as Python prints them. What a command changes in the
    process (torch's thread count, grad mode, signal handlers) is restored. `tests/test_bad_input.py` runs each
    command once in a real process too."""
    from ddpm.cli import main_guard

    main = importlib.import_module(command).main
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line))
        try:
            main_guard(main, [str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            torch.set_num_threads(threads)
            torch.set_grad_enabled(grad)
            for s, h in handlers.items():
                signal.signal(s, h)
    return Run(code, out.getvalue(), err.getvalue())
