"""Shared command-line plumbing: dataclass fields as flags, and one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import MISSING, fields
from typing import Callable

from .checkpoint import CheckpointError
from .data import DataError
from .images import ImageError

USER_ERRORS = (CheckpointError, DataError, ImageError, FileNotFoundError, PermissionError, ValueError,
               FloatingPointError)


def add_dataclass_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One --flag per dataclass field, default and help from the field (bools become store_true)."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help = f.metadata.get("help", "").replace("%", "%%")
        help += "" if isinstance(default, bool) else " (default: %(default)s)"
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default, help=help)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help)


def main_guard(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run main(argv) (None: sys.argv); a user error prints one line `error: ...` and exits 2 (DDPM_TRACEBACK=1 shows
    the traceback)."""
    try:
        main(argv)
    except USER_ERRORS as e:
        if os.environ.get("DDPM_TRACEBACK"):
            raise
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="our .safetensors/.pt checkpoint, or a diffusers folder")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def model_from_args(args):
    """(Model on the requested device and dtype, device, dtype)."""
    import torch

    from .models import load_model

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    return load_model(args.ckpt).to(device, dtype), device, dtype


def check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")
