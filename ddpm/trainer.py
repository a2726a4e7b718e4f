"""Training loop (Ho et al. 2020, Algorithm 1) with EMA, exact resume, evaluation and DDP.

Everything random goes through one explicit `torch.Generator` (timesteps, noise, flips, label dropout)
plus the global torch RNG for dropout; both are saved in every checkpoint, with the data position, so
`resume` continues bit for bit on the same machine.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .checkpoint import LINEAR, CheckpointError, load_training_checkpoint, save_model
from .diffusion import loss_simple, sample
from .files import atomic_write
from .images import save_png
from .schedule import linear_schedule, make_steps, strided_timesteps
from .unet import PRESETS, UNet
from .vlb import bits_per_dim, mean_ci


@dataclass
class TrainConfig:
    preset: str = "cifar10"
    data: str = ""
    eval_data: str = ""  # held-out images; default: a seeded 1% (at most 1000) of --data
    out: str = "runs/default"
    steps: int = 800_000
    batch: int = 128
    lr: float = 2e-4
    warmup: int = 5000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    seed: int = 0
    log_every: int = 50
    sample_every: int = 5000
    sample_steps: int = 100
    ckpt_every: int = 1000
    keep: int = 3
    eval_every: int = 0  # 0: only at the end
    eval_images: int = 1000
    workers: int = 2
    threads: int = 0  # torch CPU threads, 0: torch's default
    compile: bool = False
    class_cond: bool = False
    p_uncond: float = 0.1  # label dropout for classifier-free guidance
    sample_cfg: float = 3.0  # guidance scale of the sample grids of a class-conditional model (one row per class)
    init: str = ""  # start from these weights (a model file); a new class embedding starts at zero
    download: bool = False


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay with warm-up, min(decay, (1 + step) / (10 + step)), so short runs are not dominated by the init."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: UNet, model: torch.nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta (Ho et al. 2020, appendix B)."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr over cfg.warmup steps, then constant (Ho et al. 2020, appendix B)."""
    return cfg.lr * min(1.0, (step + 1) / max(cfg.warmup, 1))


class Stop:
    """Turns SIGINT/SIGTERM into a flag checked after each step, so the loop can save and exit cleanly."""

    def __init__(self):
        self.signum = 0
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.handle)

    def handle(self, signum, frame):
        self.signum = signum


def split(dataset, cfg: TrainConfig, size: int):
    """(train, held-out): --eval-data if given, else a seeded 1% (at most 1000 images) of the data."""
    from .data import load_dataset

    if cfg.eval_data:
        return dataset, load_dataset(cfg.eval_data, size, train=False, download=cfg.download)
    n_eval = min(1000, max(1, len(dataset) // 100))
    perm = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed + 12345)).tolist()
    return Subset(dataset, perm[n_eval:]), Subset(dataset, perm[:n_eval])


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        from .data import load_dataset

        self.cfg = cfg
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if cfg.batch % self.world:
            raise ValueError(f"--batch {cfg.batch} is not divisible by the {self.world} processes")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
        ucfg = PRESETS[cfg.preset]
        if cfg.class_cond and not ucfg.num_classes:
            ucfg = type(ucfg)(**{**ucfg.to_dict(), "num_classes": 10})
        self.ucfg = ucfg
        self.out = Path(cfg.out)
        self.sched = linear_schedule()

        torch.manual_seed(cfg.seed)
        self.model = UNet(ucfg).to(self.device)
        self.ema = UNet(ucfg).to(self.device).eval().requires_grad_(False)
        self.ema.load_state_dict(self.model.state_dict())
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1000 * self.rank)
        self.step, self.epoch, self.pos = 0, 0, 0
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

        data = load_dataset(cfg.data, ucfg.image_size, train=True, download=cfg.download) if cfg.data else None
        if data is None:
            raise ValueError("--data is required (a CIFAR-10 folder, an ImageFolder tree or an image folder)")
        self.crop = getattr(data, "crop", 1.0)  # how the training images were framed (Model.crop)
        self.train_set, self.eval_set = split(data, cfg, ucfg.image_size)
        if len(self.train_set) < cfg.batch:
            raise ValueError(f"{cfg.data}: {len(self.train_set)} training images, fewer than --batch {cfg.batch}")
        if resume:
            self.load_latest()
        elif cfg.init:
            self.init_from(cfg.init)
        self.net = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        if cfg.compile:
            self.net = torch.compile(self.net)

    # ---- checkpoints -------------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"config": {"train": asdict(self.cfg), "unet": self.ucfg.to_dict(), "schedule": LINEAR},
                "model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "epoch": self.epoch, "pos": self.pos,
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def save(self) -> None:
        if self.rank:
            return
        path = self.out / f"ckpt_{self.step:08d}.pt"
        atomic_write(path, lambda tmp: torch.save(self.state(), tmp))
        save_model(self.out / "ema.safetensors", self.ema,
                   extra={"step": self.step, "preset": self.cfg.preset, "crop": self.crop})
        for old in sorted(self.out.glob("ckpt_*.pt"))[:-self.cfg.keep]:
            old.unlink()

    def load_latest(self) -> None:
        ckpts = sorted(self.out.glob("ckpt_*.pt"))
        if not ckpts:
            raise CheckpointError(f"--resume: no ckpt_*.pt in {self.out}; start without --resume")
        ck = load_training_checkpoint(ckpts[-1])
        if ck.get("config", {}).get("unet") != self.ucfg.to_dict():
            raise CheckpointError(f"{ckpts[-1]}: was trained with UNet config {ck.get('config', {}).get('unet')}, "
                                  f"not --preset {self.cfg.preset}; use the same preset or another --out")
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.epoch, self.pos = ck["step"], ck["epoch"], ck["pos"]
        self.gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        if ck["cuda_rng"]:
            torch.cuda.set_rng_state_all(ck["cuda_rng"])
        self.truncate_log()
        self.log(f"resumed from {ckpts[-1]} at step {self.step}")

    def truncate_log(self) -> None:
        """Drop the log records of steps after the resumed checkpoint: a killed run may have logged them, and the
        resumed run logs them again (identically, the resume being exact), so each step keeps one record."""
        path = self.out / "log.jsonl"
        if self.rank or not path.exists():
            return
        def kept(line: str) -> bool:
            try:
                return json.loads(line).get("step", 0) <= self.step
            except json.JSONDecodeError:  # a line torn by the kill
                return False

        lines = path.read_text().splitlines()
        keep = [line for line in lines if kept(line)]
        if len(keep) < len(lines):
            atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))

    def init_from(self, path: str) -> None:
        """Warm start: weights from a model file of the same architecture. A conditional model may start from an
        unconditional one: its class embedding starts at zero, so at step 0 it equals the source model for every
        label (the embedding is added to the timestep embedding)."""
        from .models import load_model

        src, own = load_model(path).unet.state_dict(), self.model.state_dict()
        new = set(own) - set(src)
        bad = (set(src) - set(own)) | (new - {"class_emb.weight"})
        bad |= {k for k in set(src) & set(own) if src[k].shape != own[k].shape}
        if bad:
            raise CheckpointError(f"--init {path}: does not match --preset {self.cfg.preset} "
                                  f"({', '.join(sorted(bad)[:3])}); use a model of the same preset")
        with torch.no_grad():
            if new:
                self.model.class_emb.weight.zero_()
            self.model.load_state_dict({**self.model.state_dict(), **src})
        self.ema.load_state_dict(self.model.state_dict())
        self.log(f"initialised from {path}" + (" (class embedding at zero)" if new else ""))

    # ---- data --------------------------------------------------------------------------------------------
    def batches(self):
        """Endless (x, y) batches; self.epoch/self.pos track the position for exact resume."""
        from .data import ResumableSampler

        per_rank = self.cfg.batch // self.world
        while True:
            sampler = ResumableSampler(len(self.train_set), self.cfg.seed, self.epoch, self.pos * per_rank,
                                       self.rank, self.world)
            loader = DataLoader(self.train_set, batch_size=per_rank, sampler=sampler, drop_last=True,
                                num_workers=self.cfg.workers, pin_memory=self.device.type == "cuda",
                                persistent_workers=False)
            for x, y in loader:
                self.pos += 1
                yield x, y
            self.epoch, self.pos = self.epoch + 1, 0

    # ---- one step ----------------------------------------------------------------------------------------
    def train_step(self, x, y) -> tuple[float, float]:
        cfg, B = self.cfg, x.shape[0]
        flip = torch.rand(B, generator=self.gen) < 0.5  # random horizontal flip (Ho et al. sec. 4)
        x = torch.where(flip[:, None, None, None], x.flip(3), x).to(self.device, non_blocking=True)
        t = torch.randint(0, self.sched.T, (B,), generator=self.gen).to(self.device)
        eps = torch.randn(x.shape, generator=self.gen).to(self.device)
        if self.ucfg.num_classes:
            drop = torch.rand(B, generator=self.gen) < cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, self.ucfg.num_classes), y).to(self.device)
            eps_model = lambda x_t, t_: self.net(x_t, t_, y)  # noqa: E731
        else:
            eps_model = self.net
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = loss_simple(eps_model, x, self.sched, t=t, eps=eps).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        ema_update(self.ema, self.model, ema_decay_at(self.step, cfg.ema_decay))
        self.step += 1
        return loss.item(), gnorm.item()

    # ---- reporting ---------------------------------------------------------------------------------------
    def log(self, msg: str | dict) -> None:
        if self.rank:
            return
        if isinstance(msg, dict):
            line = json.dumps(msg)
            with open(self.out / "log.jsonl", "a") as f:
                f.write(line + "\n")
        else:
            tqdm.write(msg, file=sys.stderr)

    @torch.no_grad()
    def samples(self, n: int = 64) -> None:
        if self.rank:
            return
        from .guidance import guided_eps

        steps = make_steps(self.sched, strided_timesteps(self.cfg.sample_steps, self.sched.T))
        k = self.ucfg.num_classes
        n = 8 * k if k else n
        eps_model = guided_eps(self.ema, torch.arange(n) // 8, self.cfg.sample_cfg) if k else self.ema
        g = torch.Generator().manual_seed(self.cfg.seed)
        x_T = torch.randn((n, 3, self.ucfg.image_size, self.ucfg.image_size), generator=g).to(self.device)
        x0 = sample(eps_model, x_T, steps, steps.sigma("fixed_small"), generator=g, progress=False)
        save_png(self.out / f"samples_{self.step:08d}.png", x0, nrow=8)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Held-out L_simple and the bound in bits/dim with 95% intervals, on the EMA weights, over eval_images
        images evenly spaced through the held-out set (a conditional model is given their true labels)."""
        N = len(self.eval_set)
        n = min(self.cfg.eval_images, N)
        every = range(0, N, N // n)[:n]  # evenly spaced: an ImageFolder lists its images class by class
        loader = DataLoader(Subset(self.eval_set, every), batch_size=min(256, self.cfg.batch))
        g = torch.Generator().manual_seed(self.cfg.seed + 777)
        losses, bpds = [], []
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            eps_model = (lambda x_t, t_: self.ema(x_t, t_, y)) if self.ucfg.num_classes else self.ema  # noqa: E731
            t = torch.randint(0, self.sched.T, (x.shape[0],), generator=g).to(self.device)
            eps = torch.randn(x.shape, generator=g).to(self.device)
            losses.append(loss_simple(eps_model, x, self.sched, t=t, eps=eps).cpu())
            bpds.append(bits_per_dim(eps_model, x, self.sched, g).cpu())
        (loss, loss_ci), (bpd, bpd_ci) = mean_ci(torch.cat(losses)), mean_ci(torch.cat(bpds))
        return {"step": self.step, "eval_images": n, "eval_loss": loss, "eval_loss_ci95": loss_ci,
                "bits_per_dim": bpd, "bits_per_dim_ci95": bpd_ci}

    def run(self) -> None:
        cfg = self.cfg
        if not self.rank:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(asdict(cfg), indent=1)))
        stop = Stop()
        self.model.train()
        bar = tqdm(total=cfg.steps, initial=self.step, disable=bool(self.rank), dynamic_ncols=True)
        t0, s0 = time.time(), self.step
        it = self.batches()
        while self.step < cfg.steps:
            x, y = next(it)
            loss, gnorm = self.train_step(x, y)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at step {self.step}; lower --lr or resume from the last checkpoint")
            dt = time.time() - t0
            sps = (self.step - s0) / max(dt, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{sps:.2f}", img_s=f"{sps * cfg.batch:.1f}")
            if self.step % cfg.log_every == 0:
                self.log({"step": self.step, "loss": loss, "lr": lr_at(self.step - 1, cfg), "grad_norm": gnorm,
                          "steps_per_s": sps, "images_per_s": sps * cfg.batch, "elapsed_s": dt})
            if self.step % cfg.ckpt_every == 0 or stop.signum:
                self.save()
            if cfg.sample_every and self.step % cfg.sample_every == 0:
                self.samples()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and not self.rank:
                self.log(self.evaluate())
            if stop.signum:
                bar.close()
                self.log(f"signal {stop.signum}: saved checkpoint at step {self.step}; continue with --resume")
                raise SystemExit(128 + stop.signum)
        bar.close()
        agree = self.ranks_agree()
        self.save()
        if not (cfg.sample_every and self.step % cfg.sample_every == 0 and self.step > s0):  # not just drawn
            self.samples()
        if not self.rank:
            result = {**self.evaluate(), **({"ranks_agree": agree} if self.world > 1 else {})}
            self.log(result)
            self.log(f"done: step {self.step}, held-out loss {result['eval_loss']:.4f}, "
                     f"{result['bits_per_dim']:.3f} +- {result['bits_per_dim_ci95']:.3f} bits/dim")
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()

    def ranks_agree(self) -> bool:
        """True when every process holds bit-identical weights (always, for a single process)."""
        if self.world == 1:
            return True
        flat = torch.nn.utils.parameters_to_vector(self.model.parameters()).detach()
        ref = flat.clone()
        dist.broadcast(ref, 0)
        same = torch.tensor([float(torch.equal(flat, ref))], device=flat.device)
        dist.all_reduce(same, op=dist.ReduceOp.MIN)
        return bool(same.item())
