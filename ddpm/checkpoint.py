"""Model files: this project's inference checkpoints (safetensors + JSON metadata), its training
checkpoints (torch.save dicts read with weights_only=True), diffusers folders (see `ddpm.diffusers_io`),
and atomic writes for every file the project produces.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from .schedule import Schedule, Variance, linear_schedule
from .unet import UNet, UNetConfig

FORMAT = "ddpm-unet/1"


class CheckpointError(ValueError):
    """A model file that cannot be used; the message says what to do."""


@dataclass
class Model:
    """A loaded network with the diffusion settings it was trained with."""

    unet: UNet
    sched: Schedule
    clip_x0: bool = True
    variance: Variance = "fixed_small"
    sha256: str = ""  # sha256 of the weights file's bytes (the noise-map file's model_sha256)
    source: str = ""
    crop: float = 1.0  # framing of its training images: centred square of crop * short side (CelebA: 140/178)

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        return self.unet(x, t)

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "Model":
        """Move the network (never the schedule, which stays float64 on the CPU)."""
        device = torch.device(device)
        if dtype == torch.float64 and device.type == "mps":
            raise ValueError("float64 is not supported on mps; use --device cpu or --dtype float32")
        self.unet.to(device=device, dtype=dtype)
        return self


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


def schedule_meta(sched_kind: dict) -> Schedule:
    if sched_kind.get("kind") != "linear":
        raise CheckpointError(f"unsupported schedule {sched_kind}; only 'linear' is known")
    return linear_schedule(int(sched_kind["T"]), float(sched_kind["beta_start"]), float(sched_kind["beta_end"]))


LINEAR = {"kind": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}


def save_model(path: str | Path, unet: UNet, *, schedule: dict = LINEAR, clip_x0: bool = True,
               dtype: torch.dtype = torch.float32, extra: dict | None = None) -> str:
    """Write an inference checkpoint (.safetensors): weights in `dtype` (float16 halves the size;
    loading restores float32) and metadata {format, config, schedule, clip_x0, ...}. Returns its sha256."""
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in unet.state_dict().items()}
    meta = {"format": FORMAT, "config": json.dumps(unet.cfg.to_dict()), "schedule": json.dumps(schedule),
            "clip_x0": json.dumps(clip_x0), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    save_safetensors(path, state, meta)
    return file_sha256(path)


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


def build_unet(cfg_dict: dict, state: dict[str, Tensor], source: str) -> UNet:
    """UNet(UNetConfig(**cfg)) with the given weights in float32; explains any mismatch."""
    try:
        cfg = UNetConfig(**cfg_dict)
    except TypeError as e:
        raise CheckpointError(f"{source}: config does not fit UNetConfig ({e}); was it written by another version?")
    unet = UNet(cfg)
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}" if missing else "",
                 f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}" if unexpected else "",
                 f"shape mismatch {shapes[:3]}" if shapes else ""]
        raise CheckpointError(f"{source}: weights do not match its config ({'; '.join(p for p in parts if p)}); "
                              "the file is corrupt or belongs to another architecture")
    unet.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    for k, v in unet.state_dict().items():
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: weight {k} holds NaN or Inf; use an earlier checkpoint")
    return unet.eval()


def load_safetensors(path: Path) -> Model:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is truncated or corrupt")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: no '{FORMAT}' metadata; for a diffusers model pass its folder instead")
    unet = build_unet(json.loads(meta["config"]), state, str(path))
    return Model(unet, schedule_meta(json.loads(meta["schedule"])), json.loads(meta.get("clip_x0", "true")),
                 sha256=file_sha256(path), source=str(path), crop=float(json.loads(meta.get("crop", "1.0"))))


def load_training_checkpoint(path: str | Path) -> dict:
    """A training checkpoint dict, read with weights_only=True (a pickle carrying code is refused)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint")
    except Exception as e:  # UnpicklingError, RuntimeError (truncated zip), EOFError
        raise CheckpointError(f"{path}: cannot be read safely ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                              "it is truncated, corrupt, or not a weights-only checkpoint")


def load_model(path: str | Path) -> Model:
    """Load a network from: our .safetensors, our training checkpoint .pt (its EMA weights), or a
    diffusers UNet2DModel/pipeline folder."""
    path = Path(path)
    if path.is_dir():
        from .diffusers_io import load_diffusers

        return load_diffusers(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or folder")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    if path.suffix in (".pt", ".pth"):
        ckpt = load_training_checkpoint(path)
        if not isinstance(ckpt, dict) or "config" not in ckpt or "ema" not in ckpt:
            raise CheckpointError(f"{path}: not a training checkpoint of this project (no 'config'/'ema')")
        unet = build_unet(ckpt["config"]["unet"], ckpt["ema"], str(path))
        return Model(unet, schedule_meta(ckpt["config"].get("schedule", LINEAR)), sha256=file_sha256(path),
                     source=str(path))
    raise CheckpointError(f"{path}: unknown checkpoint type; expected .safetensors, .pt or a diffusers folder")
