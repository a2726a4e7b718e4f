"""This project's model files: inference checkpoints (safetensors + JSON metadata) and training checkpoints
(torch.save dicts read with weights_only=True). `ddpm.models.load_model` reads these and diffusers folders.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .files import file_sha256, save_safetensors
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


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file; a truncated or corrupt file gives a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); the file is truncated or corrupt")


def load_safetensors(path: Path) -> Model:
    state, meta = read_safetensors(path)
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
