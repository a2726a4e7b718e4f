"""A small CIFAR-10 classifier, used only as a measuring instrument (does an edit land in the target class?).

    python -m bench.classifier --data data/cifar10-jpeg [--epochs 6] [--out checkpoints/classifier-cifar10.safetensors]

Architecture: torchvision's ResNet with BasicBlocks [1, 1, 1, 1] ("ResNet-10", He et al. 2016), the 7x7/2 stem
replaced by a 3x3/1 convolution for 32x32 inputs (the max-pool kept). Trained on the CIFAR-10 train split with
random crops (4 px reflect padding) and flips, SGD with Nesterov momentum and a one-cycle schedule; the test-split
accuracy is measured at the end and stored in the file's metadata. Weights are saved in float16 (loading restores
float32).
"""
import argparse
import json
import sys
import time
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]

from ddpm import images
from ddpm.checkpoint import CheckpointError
from ddpm.cli import main_guard
from ddpm.files import save_safetensors
from ddpm.guidance import CIFAR10_CLASSES

DEFAULT = ROOT / "checkpoints" / "classifier-cifar10.safetensors"


def build() -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=len(CIFAR10_CLASSES))
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    return net


def load_split(folder: str | Path) -> tuple[Tensor, Tensor]:
    """An ImageFolder split (one sub-folder per CIFAR-10 class) -> uint8 images (N, 3, 32, 32), labels (N,)."""
    from PIL import Image

    folder = Path(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if tuple(classes) != tuple(sorted(CIFAR10_CLASSES)):
        raise ValueError(f"{folder}: expected the ten CIFAR-10 class folders, found {classes}")
    xs, ys = [], []
    for name in classes:
        for f in sorted((folder / name).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("RGB").resize((32, 32))))
            ys.append(CIFAR10_CLASSES.index(name))
    return torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous(), torch.tensor(ys)


def augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random 32x32 crops of the 4-pixel reflect-padded images and random horizontal flips."""
    B = x.shape[0]
    pad = F.pad(x, (4, 4, 4, 4), mode="reflect")
    i, j = torch.randint(0, 9, (2, B), generator=g)
    rows = (i[:, None] + torch.arange(32))[:, None, :, None]
    cols = (j[:, None] + torch.arange(32))[:, None, None, :]
    out = pad[torch.arange(B)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(B, generator=g) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


@torch.no_grad()
def predict(net: nn.Module, x: Tensor, batch: int = 500) -> Tensor:
    """Class probabilities (N, 10) for images in [-1, 1] (the diffusion models' range, taken as it is)."""
    net.eval()
    return torch.cat([net(x[k:k + batch].float()).softmax(1) for k in range(0, len(x), batch)])


def train(data: Path, epochs: int, batch: int, seed: int) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_tr, y_tr = load_split(data / "train")
    x_te, y_te = load_split(data / "test")
    net = build()
    steps = epochs * (len(x_tr) // batch)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps, pct_start=0.25)
    t0 = time.time()
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x_tr), generator=g)
        for k in range(len(x_tr) // batch):
            idx = perm[k * batch:(k + 1) * batch]
            loss = F.cross_entropy(net(augment(images.to_unit(x_tr[idx].float() / 255.0), g)), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = (predict(net, images.to_unit(x_te.float() / 255.0)).argmax(1) == y_te).float().mean().item()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, test accuracy {acc:.4f}, {time.time() - t0:.0f} s",
              flush=True)
    return net, {"test_accuracy": acc, "test_images": len(x_te), "epochs": epochs, "batch": batch,
                 "train_seconds": round(time.time() - t0)}


def save(net: nn.Module, meta: dict, path: Path) -> None:
    state = {k: v.half().contiguous() for k, v in net.state_dict().items() if v.is_floating_point()}
    save_safetensors(path, state, {"format": "cifar10-resnet10/1", "meta": json.dumps(meta)})


def load(path: str | Path = DEFAULT) -> tuple[nn.Module, dict]:
    """The classifier in float32, eval mode, and its metadata (test accuracy, ...)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no classifier; train one with python -m bench.classifier --data ...")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != "cifar10-resnet10/1":
            raise CheckpointError(f"{path}: not a classifier file of this project (format {meta.get('format')!r})")
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    net = build()
    own = net.state_dict()
    net.load_state_dict({**own, **state})  # BatchNorm's integer counters are not stored
    return net.eval(), json.loads(meta["meta"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/cifar10-jpeg", help="folder with train/ and test/ ImageFolder splits")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(DEFAULT))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    net, meta = train(Path(a.data), a.epochs, a.batch, a.seed)
    save(net, meta, Path(a.out))
    print(f"wrote {a.out}: test accuracy {meta['test_accuracy']:.4f}")


if __name__ == "__main__":
    main_guard(main)
