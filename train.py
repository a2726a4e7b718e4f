"""Train a DDPM (Ho et al. 2020 recipe by default).

    python train.py --config cifar10 --data data/cifar10-jpeg/train --out runs/cifar10 [--steps N] [--resume]
    torchrun --nproc_per_node=K train.py ...   # DistributedDataParallel, one process per GPU
"""
import argparse
import dataclasses

from ddpm.cli import add_dataclass_flags, main_guard
from ddpm.trainer import TrainConfig, Trainer


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataclass_flags(p, TrainConfig)
    p.add_argument("--config", dest="preset", help="alias of --preset")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    args = vars(p.parse_args())
    resume = args.pop("resume")
    cfg = TrainConfig(**{f.name: args[f.name] for f in dataclasses.fields(TrainConfig)})
    Trainer(cfg, resume=resume).run()


if __name__ == "__main__":
    main_guard(main)
