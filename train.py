"""Train a DDPM (Ho et al. 2020 recipe by default).

    python train.py --preset cifar10 --data data/cifar10-jpeg/train --eval-data data/cifar10-jpeg/test --out runs/c10
    python train.py ... --resume              # continue from the newest checkpoint in --out, bit for bit
    python train.py ... --init checkpoints/X.train-state.safetensors --out runs/new  # continue a committed state
    torchrun --nproc_per_node=K train.py ...  # DistributedDataParallel, one process per GPU
"""
import argparse
import dataclasses

import torch

from ddpm.cli import add_dataclass_flags, main_guard
from ddpm.trainer import (TrainConfig, TrainLoop, init_world, latest_checkpoint, seed_for, split, unet_config,
                          warm_start)
from ddpm.trainstate import is_train_state
from ddpm.unet import UNet


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(p, TrainConfig)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    args = vars(p.parse_args(argv))
    resume = args.pop("resume")
    cfg = TrainConfig(**{f.name: args[f.name] for f in dataclasses.fields(TrainConfig)})
    world = init_world(cfg)
    ucfg = unet_config(cfg)
    train_set, eval_set, crop = split(cfg, ucfg.image_size)
    torch.manual_seed(seed_for(cfg.seed, "init"))
    model = UNet(ucfg)
    carry = not resume and is_train_state(cfg.init)
    if cfg.init and not resume and not carry:
        warm_start(model, cfg.init, cfg.preset)
    loop = TrainLoop(cfg, model, train_set, eval_set, world, crop)
    if resume or carry:
        loop.restore(latest_checkpoint(cfg.out) if resume else cfg.init)
    loop.run()


if __name__ == "__main__":
    main_guard(main)
