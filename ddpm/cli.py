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
    """One --flag per dataclass field, default from the field (bools become store_true)."""
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)


def main_guard(main: Callable[[], None]) -> None:
    """Run main(); a user error prints one line `error: ...` and exits 2 (DDPM_TRACEBACK=1 shows the traceback)."""
    try:
        main()
    except USER_ERRORS as e:
        if os.environ.get("DDPM_TRACEBACK"):
            raise
        msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
