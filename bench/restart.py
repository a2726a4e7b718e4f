"""What a restart costs: K training steps from one checkpoint, three ways, on the same batches and noise.

    python -m bench.restart --ckpt runs/cifar10-cpu-cond-g8d/ckpt_00004400.pt --data data/cifar10-jpeg/train [--k 100]

- resume: the checkpoint as saved (`--resume`), the reference;
- train state: the committable train state of that checkpoint (`ddpm.trainstate`: raw weights as float16 offsets from
  the EMA, Adam's moments in bfloat16), written and read back as `--init X.train-state.safetensors` would;
- warm start: its EMA weights with a fresh Adam from step 0 and the run's learning-rate warm-up (`--init X.safetensors`,
  what every session did before the train state existed).

Printed per way: how far its raw and EMA weights end from the reference's (L2), as a fraction of how far the
reference's own EMA moved in those K steps.
"""
import argparse
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from ddpm.checkpoint import load_training_checkpoint, save_model
from ddpm.cli import main_guard
from ddpm.data import load_dataset
from ddpm.trainer import Position, TrainConfig, TrainLoop, World, batches, unet_config
from ddpm.trainstate import save_train_state
from ddpm.unet import UNet


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def run_k(ck: dict, cfg: TrainConfig, way: str, k: int, tmp: Path, train_set) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, EMA) weights after k steps of `way` from checkpoint `ck`."""
    world = World(0, 1, torch.device("cpu"))
    loop = TrainLoop(cfg, UNet(unet_config(cfg)), train_set, train_set, world)
    if way == "warm start":
        for net in (loop.model, loop.ema):
            net.load_state_dict(ck["ema"])
        loop.gen.set_state(ck["gen"])
    elif way == "train state":
        loop.ema.load_state_dict(ck["ema"])
        save_train_state(tmp / "ema.train-state.safetensors", ck, save_model(tmp / "ema.safetensors", loop.ema))
        loop.restore(tmp / "ema.train-state.safetensors")
    else:
        torch.save(ck, tmp / "resume.pt")
        loop.restore(tmp / "resume.pt")
    it = batches(train_set, cfg, world, Position.of(ck))
    loop.model.train()
    for _ in range(k):
        loop.run_step(loop.model, *next(it))
    return flat(loop.model), flat(loop.ema)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a training checkpoint (ckpt_*.pt)")
    p.add_argument("--data", required=True, help="the run's training images")
    p.add_argument("--k", type=int, default=100, help="steps per way")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ck = load_training_checkpoint(a.ckpt)
    saved = {f.name: ck["config"]["train"][f.name] for f in fields(TrainConfig) if f.name in ck["config"]["train"]}
    cfg = replace(TrainConfig(**saved), data=a.data, workers=0, init="")
    train_set = load_dataset(a.data, unet_config(cfg).image_size, train=True)
    ema0 = torch.cat([v.flatten() for v in ck["ema"].values()])
    with tempfile.TemporaryDirectory() as tmp:
        out = {way: run_k(ck, cfg, way, a.k, Path(tmp), train_set) for way in ("resume", "train state", "warm start")}
    raw_ref, ema_ref = out["resume"]
    moved = (ema_ref - ema0).norm().item()
    print(f"{a.ckpt}: step {ck['step']}, {a.k} steps per way at lr {cfg.lr:g} (warm-up {cfg.warmup}); "
          f"the reference's EMA moved {moved:.4g} (L2)")
    for way in ("train state", "warm start"):
        raw, ema = out[way]
        print(f"  {way:12s} raw weights {(raw - raw_ref).norm().item() / moved:8.4f}, EMA weights "
              f"{(ema - ema_ref).norm().item() / moved:8.4f} of that from the reference's")


if __name__ == "__main__":
    main_guard(main)
