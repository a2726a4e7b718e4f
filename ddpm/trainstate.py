"""A training state small enough to commit beside the EMA weights it belongs to: what `--resume` restores, with the
raw weights and Adam's moments rounded, so that a run whose `runs/` folder is gone continues instead of restarting.

`<stem>.train-state.safetensors` goes with `<stem>.safetensors` (the EMA weights, float32; in a run folder
`ema.safetensors`, in `checkpoints/` the shipped file) and holds, for every parameter p of the UNet:

    delta.p        float16   theta - theta_EMA: the raw weights as their offset from the EMA file's (|delta| is small,
                             so float16 keeps it to ~5e-4 of itself: far below one Adam step)
    exp_avg.p      bfloat16  Adam's first moment m_t (Kingma & Ba 2015, Algorithm 1)
    exp_avg_sq.p   bfloat16  Adam's second moment v_t (bfloat16 keeps float32's range: v_t spans ~1e-20..1)
    gen, torch_rng uint8     the step stream's generator and the global torch RNG

and metadata {format, ema_sha256 (the EMA file's bytes), step, epoch, pos, data_seed (the data position; a file
without data_seed used its config's seed), adam_step, config}.
About 1.5x the EMA file. Without it a warm start (`--init` of a model file) begins with raw = EMA weights and a fresh
Adam, whose first updates are lr * sign(g) per weight (m_hat / sqrt(v_hat) = g / |g| at t = 1); with it the run goes on
as `--resume` would, from the same step, data position and random streams.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import CheckpointError, load_safetensors, read_safetensors
from .files import save_safetensors
from .unet import UNetConfig

FORMAT = "ddpm-train-state/1"
SUFFIX = ".train-state.safetensors"


def is_train_state(path: str | Path) -> bool:
    return str(path).endswith(SUFFIX)


def ema_path(path: str | Path) -> Path:
    """The EMA weights a train-state file goes with: the same name without `.train-state`."""
    return Path(str(path)[: -len(SUFFIX)] + ".safetensors")


def save_train_state(path: str | Path, ck: dict, ema_sha256: str) -> None:
    """Write the compact state of a training checkpoint dict (`TrainLoop.state()`) whose EMA weights were saved to a
    file with sha256 `ema_sha256`."""
    names = list(ck["model"])
    state = {f"delta.{k}": (ck["model"][k].float() - ck["ema"][k].float()).half() for k in names}
    opt = ck["opt"]["state"]
    adam_step = float(opt[0]["step"]) if opt else 0.0
    for i, k in enumerate(names):
        if i in opt:
            state[f"exp_avg.{k}"] = opt[i]["exp_avg"].bfloat16()
            state[f"exp_avg_sq.{k}"] = opt[i]["exp_avg_sq"].bfloat16()
    state["gen"], state["torch_rng"] = ck["gen"], ck["torch_rng"]
    position = {k: json.dumps(ck[k]) for k in ("step", "epoch", "pos", "data_seed") if k in ck}  # older: no data_seed
    meta = {"format": FORMAT, "ema_sha256": ema_sha256, "config": json.dumps(ck["config"]),
            "adam_step": json.dumps(adam_step), **position}
    save_safetensors(path, {k: v.contiguous() for k, v in state.items()}, meta)


def load_train_state(path: str | Path) -> dict:
    """A training checkpoint dict (as `TrainLoop.restore` takes) from a train-state file and its EMA file, the raw
    weights and Adam's moments back in float32. Refuses a pair that was not saved together."""
    path, ema_file = Path(path), ema_path(path)
    state, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: no '{FORMAT}' metadata; --init a model file (.safetensors) instead")
    if not ema_file.exists():
        raise CheckpointError(f"{path}: its EMA weights {ema_file} are missing; put the pair side by side")
    ema_model = load_safetensors(ema_file)  # hashes the file once, as Model.sha256
    if ema_model.sha256 != meta["ema_sha256"]:
        raise CheckpointError(f"{path}: was saved with other EMA weights than {ema_file} (sha256 "
                              f"{meta['ema_sha256'][:12]}...); use the pair saved together, or --init {ema_file} alone")
    ema = ema_model.unet.state_dict()
    names = [k[len("delta."):] for k in state if k.startswith("delta.")]
    if set(names) != set(ema):
        raise CheckpointError(f"{path}: its weights do not match {ema_file}'s; use the pair saved together")
    order = list(ema)  # the parameter order of the UNet, which indexes the optimiser's state
    opt, adam_step = {}, torch.tensor(json.loads(meta["adam_step"]))
    for i, k in enumerate(order):
        if f"exp_avg.{k}" in state:
            opt[i] = {"step": adam_step.clone(), "exp_avg": state[f"exp_avg.{k}"].float(),
                      "exp_avg_sq": state[f"exp_avg_sq.{k}"].float()}
    config = json.loads(meta["config"])
    config["unet"] = UNetConfig(**config["unet"]).to_dict()  # JSON made its tuples lists
    return {"config": config, "ema": ema, "opt": {"state": opt},
            "model": {k: ema[k] + state[f"delta.{k}"].float() for k in order},
            **{k: json.loads(meta[k]) for k in ("step", "epoch", "pos", "data_seed") if k in meta},
            "gen": state["gen"], "torch_rng": state["torch_rng"], "cuda_rng": []}
