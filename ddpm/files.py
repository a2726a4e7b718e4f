"""File plumbing at the bottom of the package: atomic writes, content hashes, a deterministic safetensors writer.
Every file the project produces goes through `atomic_write`."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from torch import Tensor


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temp file in path's folder, fsync it, then rename it onto path.

    A crash, a full disk or a permission error leaves any existing `path` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_safetensors(path: str | Path, state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a .safetensors file atomically, with the same bytes for the same tensors and metadata: the library's
    own serialisation with its JSON header re-written with sorted keys (the library orders the metadata at random,
    so the same weights would get another sha256 at every save; the format allows any key order and space padding)."""
    from safetensors.torch import save

    raw = save(state, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header)
            f.write(memoryview(raw)[8 + n:])

    atomic_write(path, write)
