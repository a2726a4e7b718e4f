"""Any model file people have -> a `Model`: this project's checkpoints (`ddpm.checkpoint`) and diffusers folders
(`ddpm.diffusers_io`); the one dispatcher above both formats."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import (LINEAR, CheckpointError, Model, build_unet, load_safetensors, load_training_checkpoint,
                         schedule_meta)
from .diffusers_io import load_diffusers
from .files import file_sha256


def load_model(path: str | Path) -> Model:
    """Load a network from: our .safetensors, our training checkpoint .pt (its EMA weights), or a
    diffusers UNet2DModel/pipeline folder."""
    path = Path(path)
    if path.is_dir():
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
