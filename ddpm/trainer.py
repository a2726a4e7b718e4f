"""Training loop (Ho et al. 2020, Algorithm 1) with EMA, exact resume, milestones and DDP.

`train.py` builds the pieces (`init_world`, `unet_config`, `split`, a `UNet`) and hands them to `TrainLoop`.
Everything random goes through explicit generators seeded by `seed_for`, plus the global torch RNG for weight init
and dropout; every checkpoint saves their states with the data position, so `--resume` continues bit for bit on the
same machine.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .checkpoint import LINEAR, CheckpointError, load_training_checkpoint, save_model
from .data import ResumableSampler, load_dataset
from .diffusion import LOSS_WEIGHTS, loss_simple, loss_weight
from .evaluate import held_out, sample_grid
from .files import atomic_write
from .grow import grow, growable
from .images import save_png
from .schedule import linear_schedule
from .trainstate import SUFFIX, is_train_state, load_train_state, save_train_state
from .unet import PRESETS, UNet, UNetConfig


def flag(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    # model
    preset: str = flag("cifar10", f"UNet preset: {', '.join(PRESETS)}")
    class_cond: bool = flag(False, "add a class embedding (10 classes + a null class) for guidance")
    p_uncond: float = flag(0.1, "label dropout to the null class (classifier-free guidance)")
    init: str = flag("", "start from these weights (a model file of the same preset, or of one it grows from: fewer "
                          "res blocks or attention blocks, no class embedding; ddpm.grow), or continue from a "
                          f"{SUFFIX} file as --resume would (ddpm.trainstate; it may grow too)")
    # data
    data: str = flag("", "training images: CIFAR-10 python folder, ImageFolder tree, CelebA folder, image folder")
    eval_data: str = flag("", "held-out images (default: a seeded 1%, at most 1000, of --data)")
    download: bool = flag(False, "let torchvision download CIFAR-10 into --data")
    workers: int = flag(2, "data-loading processes")
    # optimisation (Ho et al. appendix B by default)
    steps: int = flag(800_000, "train until this step")
    batch: int = flag(128, "images per step, over all processes")
    lr: float = flag(2e-4, "Adam learning rate after warm-up")
    warmup: int = flag(5000, "linear learning-rate warm-up steps")
    grad_clip: float = flag(1.0, "clip the gradient norm to this")
    ema_decay: float = flag(0.9999, "EMA decay (with warm-up, see ema_decay_at)")
    loss: str = flag("simple", f"weighting of L_simple over t: {', '.join(LOSS_WEIGHTS)} (diffusion.loss_weight; "
                               "the logged loss is the weighted one, the held-out figures stay L_simple)")
    seed: int = flag(0, "a new run's random streams derive from it (a continued run keeps its own); held-out split, "
                        "figures and grids do not (seed_for)")
    # milestones
    out: str = flag("runs/default", "run folder: checkpoints, ema.safetensors, log.jsonl, sample grids")
    log_every: int = flag(50, "log a record every N steps")
    ckpt_every: int = flag(1000, "checkpoint every N steps (and on SIGINT/SIGTERM)")
    keep: int = flag(3, "checkpoints kept")
    sample_every: int = flag(5000, "sample grid every N steps (0: only at the end)")
    sample_steps: int = flag(100, "strided steps S of the sample grids")
    sample_cfg: float = flag(3.0, "guidance scale of a class-conditional model's grids (one row per class)")
    eval_every: int = flag(0, "held-out loss and bits/dim every N steps (0: only at the end)")
    eval_images: int = flag(1000, "held-out images for those figures")
    # machine
    threads: int = flag(0, "torch CPU threads (0: torch's default)")
    compile: bool = flag(False, "torch.compile the network")

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if not self.data:
            raise ValueError("--data is required (a CIFAR-10 folder, an ImageFolder tree or an image folder)")
        if self.loss not in LOSS_WEIGHTS:
            raise ValueError(f"unknown --loss {self.loss!r}; choose from {', '.join(LOSS_WEIGHTS)}")


def seed_for(seed: int, stream: str, rank: int = 0) -> int:
    """The seed of one random stream of a run (a resumed run restores states instead). Derived from --seed: init
    (weight init and dropout, global RNG), data (epoch e visits randperm(n, seed + e)), step (timesteps, noise, flips
    and label dropout of process `rank`). Fixed for every --seed, so that runs with different seeds are measured on
    the same yardstick: split (the held-out 1% without --eval-data), eval (held-out figures: images, t and noise) and
    samples (the sample grids' noise). With --seed 0 all streams are as before."""
    fixed = {"split": 12345, "eval": 777, "samples": 0}
    if stream in fixed:
        return fixed[stream]
    return seed + {"init": 0, "data": 0, "step": 1000 * rank}[stream]


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


@dataclass(frozen=True)
class World:
    """This process among the DDP processes (one process: rank 0 of 1), and its device."""

    rank: int
    size: int
    device: torch.device


def init_world(cfg: TrainConfig) -> World:
    """Threads, device and, under torchrun (WORLD_SIZE > 1), the process group."""
    rank, size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if cfg.batch % size:
        raise ValueError(f"--batch {cfg.batch} is not divisible by the {size} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = torch.cuda.is_available()
    return World(rank, size, torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu"))


def unet_config(cfg: TrainConfig) -> UNetConfig:
    """The preset, with a 10-class embedding for --class-cond."""
    ucfg = PRESETS[cfg.preset]
    return UNetConfig(**{**ucfg.to_dict(), "num_classes": 10}) if cfg.class_cond and not ucfg.num_classes else ucfg


def split(cfg: TrainConfig, size: int) -> tuple[Dataset, Dataset, float]:
    """(train, held-out, crop): --data, and --eval-data or else a seeded 1% (at most 1000 images) of --data; crop is
    how the data frames its images (`Model.crop`)."""
    data = load_dataset(cfg.data, size, train=True, download=cfg.download)
    crop = getattr(data, "crop", 1.0)
    if cfg.eval_data:
        return data, load_dataset(cfg.eval_data, size, train=False, download=cfg.download), crop
    n_eval = min(1000, max(1, len(data) // 100))
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed_for(cfg.seed, "split"))).tolist()
    return Subset(data, perm[n_eval:]), Subset(data, perm[:n_eval]), crop


class Stop:
    """Turns SIGINT/SIGTERM into a flag checked after each step, so the loop can save and exit cleanly."""

    def __init__(self):
        self.signum = 0
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self.handle)

    def handle(self, signum, frame):
        self.signum = signum


class TrainLoop:
    """Algorithm 1 on `train_set`, with EMA weights, checkpoints, sample grids and held-out figures."""

    def __init__(self, cfg: TrainConfig, model: UNet, train_set: Dataset, eval_set: Dataset, world: World,
                 crop: float = 1.0):
        if len(train_set) < cfg.batch:
            raise ValueError(f"{cfg.data}: {len(train_set)} training images, fewer than --batch {cfg.batch}")
        self.cfg, self.world, self.crop = cfg, world, crop
        self.train_set, self.eval_set, self.out = train_set, eval_set, Path(cfg.out)
        self.sched, self.model = linear_schedule(), model.to(world.device)
        if world.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(seed_for(cfg.seed, "step", world.rank))
        self.step, self.at = 0, Position(seed_for(cfg.seed, "data"))

    def state(self) -> dict:
        return {"config": {"train": asdict(self.cfg), "unet": self.model.cfg.to_dict(), "schedule": LINEAR},
                "model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "step": self.step, "epoch": self.at.epoch, "pos": self.at.pos, "data_seed": self.at.seed,
                "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def save(self) -> None:
        if self.world.rank:
            return
        state = self.state()
        atomic_write(self.out / f"ckpt_{self.step:08d}.pt", lambda tmp: torch.save(state, tmp))
        sha = save_model(self.out / "ema.safetensors", self.ema,
                         extra={"step": self.step, "preset": self.cfg.preset, "crop": self.crop})
        save_train_state(self.out / f"ema{SUFFIX}", state, sha)
        for old in sorted(self.out.glob("ckpt_*.pt"))[:-self.cfg.keep]:
            old.unlink()

    def restore(self, source: str | Path) -> None:
        """Continue from a checkpoint (.pt) or a train state (ddpm.trainstate): weights, EMA, Adam, step, data, RNGs."""
        ck = load_train_state(source) if is_train_state(source) else load_training_checkpoint(source)
        note = grow_checkpoint(ck, self.model, source, self.cfg.preset)
        ck["opt"].setdefault("param_groups", self.opt.state_dict()["param_groups"])
        for part, state in (("model", self.model), ("ema", self.ema), ("opt", self.opt)):
            state.load_state_dict(ck[part])
        self.step, self.at = ck["step"], Position.of(ck)
        self.gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        torch.cuda.set_rng_state_all(ck["cuda_rng"])  # [] (saved without CUDA) sets nothing
        truncate_log(self.out / "log.jsonl", self.step, self.world)
        log(self.out, self.world, f"resumed from {source} at step {self.step}{self.at.kept(self.cfg.seed)}{note}")

    def forward_backward(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """L_simple (Ho et al. eq. 14) weighted by --loss, on a flipped batch at uniform t, label dropout; backward."""
        B, dev = x.shape[0], self.world.device
        flip = torch.rand(B, generator=self.gen) < 0.5  # random horizontal flip (Ho et al. sec. 4)
        x = torch.where(flip[:, None, None, None], x.flip(3), x).to(dev, non_blocking=True)
        t = torch.randint(0, self.sched.T, (B,), generator=self.gen).to(dev)
        lam = loss_weight(self.cfg.loss, t, self.sched)  # (B,)
        eps = torch.randn(x.shape, generator=self.gen).to(dev)
        eps_model = net
        if self.model.cfg.num_classes:
            drop = torch.rand(B, generator=self.gen) < self.cfg.p_uncond
            y = torch.where(drop, torch.full_like(y, self.model.cfg.num_classes), y).to(dev)
            eps_model = lambda x_t, t_: net(x_t, t_, y)  # noqa: E731
        x = x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = (lam * loss_simple(eps_model, x, self.sched, t=t, eps=eps)).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def run_step(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """One optimiser step at the scheduled learning rate, gradient clipping, then the EMA update."""
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, self.cfg)
        loss = self.forward_backward(net, x, y)
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        ema_update(self.ema, self.model, ema_decay_at(self.step, self.cfg.ema_decay))
        self.step += 1
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}; lower --lr or resume from the "
                                     "last checkpoint")
        return loss.item(), gnorm.item()

    def samples(self) -> None:
        g = torch.Generator().manual_seed(seed_for(self.cfg.seed, "samples"))
        x, cols = sample_grid(self.ema, self.sched, S=self.cfg.sample_steps, cfg_scale=self.cfg.sample_cfg, generator=g)
        save_png(self.out / f"samples_{self.step:08d}.png", x, nrow=cols)

    def evaluate(self) -> dict:
        g = torch.Generator().manual_seed(seed_for(self.cfg.seed, "eval"))
        return {"step": self.step, **held_out(self.ema, self.sched, self.eval_set, n=self.cfg.eval_images,
                                              batch=min(256, self.cfg.batch), generator=g, device=self.world.device)}

    def milestones(self, stop: Stop) -> None:
        """After a step: checkpoint, sample grid, held-out figures as scheduled; a signal, also during those, saves."""
        cfg, step = self.cfg, self.step
        if step % cfg.ckpt_every == 0:
            self.save()
        if not self.world.rank and cfg.sample_every and step % cfg.sample_every == 0:
            self.samples()
        if not self.world.rank and cfg.eval_every and step % cfg.eval_every == 0:
            log(self.out, self.world, self.evaluate())
        if stop.signum and step % cfg.ckpt_every:
            self.save()

    def run(self) -> None:
        cfg = self.cfg
        if not self.world.rank:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(asdict(cfg), indent=1)))
        net = torch.nn.parallel.DistributedDataParallel(self.model) if self.world.size > 1 else self.model
        net = torch.compile(net) if cfg.compile else net
        stop, it, t0, s0 = Stop(), batches(self.train_set, cfg, self.world, self.at), time.time(), self.step
        self.model.train()
        with tqdm(total=cfg.steps, initial=self.step, disable=bool(self.world.rank), dynamic_ncols=True) as bar:
            while self.step < cfg.steps:
                loss, gnorm = self.run_step(net, *next(it))
                dt = time.time() - t0
                sps = (self.step - s0) / max(dt, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{sps:.2f}", img_s=f"{sps * cfg.batch:.1f}")
                if self.step % cfg.log_every == 0:
                    log(self.out, self.world, {"step": self.step, "loss": loss, "lr": lr_at(self.step - 1, cfg),
                                               "grad_norm": gnorm, "steps_per_s": sps, "images_per_s": sps * cfg.batch,
                                               "elapsed_s": dt})
                if self.step == cfg.steps:  # the last step's checkpoint, grid and figures are finish()'s, made once
                    break
                self.milestones(stop)
                if stop.signum:
                    log(self.out, self.world,
                        f"signal {stop.signum}: saved checkpoint at step {self.step}; continue with --resume")
                    raise SystemExit(128 + stop.signum)
        self.finish()

    def finish(self) -> None:
        """The end of a run: checkpoint, sample grid, held-out figures."""
        agree = ranks_agree(self.model, self.world)
        self.save()
        if not self.world.rank:
            self.samples()
            result = {**self.evaluate(), **({"ranks_agree": agree} if self.world.size > 1 else {})}
            log(self.out, self.world, result)
            log(self.out, self.world, f"done: step {self.step}, held-out loss {result['eval_loss']:.4f}, "
                     f"{result['bits_per_dim']:.3f} +- {result['bits_per_dim_ci95']:.3f} bits/dim")
        if self.world.size > 1:
            dist.barrier()
            dist.destroy_process_group()


def latest_checkpoint(out: str | Path) -> Path:
    """--resume: the newest ckpt_*.pt in the run folder."""
    ckpts = sorted(Path(out).glob("ckpt_*.pt"))
    if not ckpts:
        raise CheckpointError(f"--resume: no ckpt_*.pt in {out}; start without --resume")
    return ckpts[-1]


def warm_start(model: UNet, path: str, preset: str) -> None:
    """--init: weights from a model file of the same architecture, or of one the model grows from (`ddpm.grow`:
    fewer res blocks per level, attention at fewer resolutions, no class embedding), whose new parts start so that
    at step 0 the model equals the source (celeba64-cpu -> celeba64-cpu-attn32 or -2res)."""
    from .models import load_model

    src = load_model(path).unet
    try:
        (state,), index = grow(model, src.cfg, src.state_dict())
    except ValueError as e:
        raise CheckpointError(f"--init {path}: does not match --preset {preset} ({e}); use a model of the same "
                              "preset or of one it grows from") from None
    model.load_state_dict(state)
    tqdm.write(f"initialised from {path}{grown_note(index)}", file=sys.stderr)


def grow_checkpoint(ck: dict, model: UNet, source: str | Path, preset: str) -> str:
    """A training checkpoint dict of another UNet config laid out for `model` in place (`ddpm.grow`): weights, EMA
    weights and Adam's moments follow their parameters, new parameters start as identities with a fresh Adam state;
    only from a train state (--init), never on --resume. Returns a note for the log ('' when nothing grew)."""
    src = ck.get("config", {}).get("unet")
    if src == model.cfg.to_dict():
        return ""
    if not is_train_state(source) or growable(UNetConfig(**src), model.cfg):
        raise CheckpointError(f"{source}: was trained with UNet config {src}, not --preset {preset}; use the same "
                              "preset (or one it grows from) or another --out")
    (ck["model"], ck["ema"]), index = grow(model, UNetConfig(**src), ck["model"], ck["ema"])
    opt = ck["opt"]["state"]
    ck["opt"]["state"] = {i: opt[j] for i, j in enumerate(index) if j in opt}
    return grown_note(index)


def grown_note(index: list[int]) -> str:
    new = index.count(-1)
    return f" (grown: {new} of {len(index)} parameter tensors new, starting as identity or zero)" if new else ""


@dataclass
class Position:
    """Where the data order stands: epoch e visits randperm(n, seed + e) from batch `pos` on. `seed` is the data
    stream's, seed_for(--seed, "data") of the run that began it: a continued run keeps it whatever its own --seed."""

    seed: int
    epoch: int = 0
    pos: int = 0

    @classmethod
    def of(cls, ck: dict) -> "Position":
        """The position a checkpoint dict saved; one saved before `data_seed` was kept used its run's --seed."""
        return cls(ck.get("data_seed", seed_for(ck["config"]["train"]["seed"], "data")), ck["epoch"], ck["pos"])

    def kept(self, seed: int) -> str:
        """What a continued run tells a user whose --seed is not the one its data order came from ("" if it is)."""
        if self.seed == seed_for(seed, "data"):
            return ""
        return f"; it keeps its random streams and data order (data seed {self.seed}); --seed {seed} is for new runs"


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def ignore_stop_signals(_worker_id: int) -> None:
    """Data workers ignore SIGINT/SIGTERM. Ctrl-C, `pkill -f train.py` or a container stop signal the workers too; a
    worker that died of it made the main process crash before it could save. The main process ends its workers.
    A worker is born with them blocked (`batches`), so one sent before this runs is dropped here, not fatal."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def batches(train_set: Dataset, cfg: TrainConfig, world: World, at: Position):
    """Endless (x, y) batches of this process's share, advancing `at` (saved in checkpoints for exact resume)."""
    per_rank = cfg.batch // world.size
    while True:
        sampler = ResumableSampler(len(train_set), at.seed, at.epoch, at.pos * per_rank,
                                   world.rank, world.size)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # while the workers are forked (each epoch)
        try:
            loader = iter(DataLoader(train_set, batch_size=per_rank, sampler=sampler, drop_last=True,
                                     num_workers=cfg.workers, pin_memory=world.device.type == "cuda",
                                     worker_init_fn=ignore_stop_signals))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        for x, y in loader:
            at.pos += 1
            yield x, y
        at.epoch, at.pos = at.epoch + 1, 0


def log(out: Path, world: World, msg: str | dict) -> None:
    """A record (dict) appended to out/log.jsonl, or a message (str) on stderr; rank 0 only."""
    if world.rank:
        return
    if isinstance(msg, dict):
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(msg) + "\n")
    else:
        tqdm.write(msg, file=sys.stderr)


def truncate_log(path: Path, step: int, world: World) -> None:
    """Drop the log records of steps after `step` (the resumed checkpoint): a killed run may have logged them, and the
    resumed run logs them again (identically, the resume being exact), so each step keeps one record. Rank 0 only."""
    if world.rank or not path.exists():
        return

    def kept(line: str) -> bool:
        try:
            return json.loads(line).get("step", 0) <= step
        except json.JSONDecodeError:  # a line torn by the kill
            return False

    lines = path.read_text().splitlines()
    keep = [line for line in lines if kept(line)]
    if len(keep) < len(lines):
        atomic_write(path, lambda tmp: Path(tmp).write_text("".join(line + "\n" for line in keep)))


def ranks_agree(model: torch.nn.Module, world: World) -> bool:
    """True when every process holds bit-identical weights (always, for a single process)."""
    if world.size == 1:
        return True
    flat = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    ref = flat.clone()
    dist.broadcast(ref, 0)
    same = torch.tensor([float(torch.equal(flat, ref))], device=flat.device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())
