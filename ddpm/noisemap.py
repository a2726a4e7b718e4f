"""The noise-map file: a public contract, format_version 1 (docs/noise_map_format.md).

One .npz read with numpy.load(path, allow_pickle=False):
  format_version int 1 | x0 [N,C,H,W] | xT [N,C,H,W] | zs [S,N,C,H,W] | timesteps int64 [S], descending
  alphas_cumprod float64 [T] | sigmas float64 [S] | clip_x0 bool | method str | model_sha256 str
Optional keys (ignored by readers that do not know them): class_label int64 [N], cfg_scale float,
trajectory [S+1,N,C,H,W] (the sampler's x at each step, so an edit recomputes only the steps it changes) with
trajectory_sha256 str.
Step i: t = timesteps[i], eps = model(x, t), x0_hat = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t) [clipped],
x = mu_tilde(x, x0_hat) + sigmas[i] zs[i], with ab_prev = alphas_cumprod[timesteps[i+1]] (1 at the last step).
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import Model
from .diffusion import EpsModel, sample
from .files import atomic_write
from .inversion import Last, Method, Mode, invert
from .schedule import Spacing, Steps, make_steps, steps_from_alpha_bar, strided_timesteps

FORMAT_VERSION = 1
METHODS = ("edit_friendly", "dpm_encoder", "native")
REQUIRED = ("format_version", "x0", "xT", "zs", "timesteps", "alphas_cumprod", "sigmas", "clip_x0", "method",
            "model_sha256")


class NoiseMapError(ValueError):
    """A noise-map file that cannot be used; the message says what is wrong."""


@dataclass
class NoiseMaps:
    """Noise maps (x_T, z_1..z_S) that regenerate x0 through the sampler, with everything needed to do so."""

    x0: Tensor  # (N, C, H, W), in [-1, 1]
    xT: Tensor  # (N, C, H, W), x at timesteps[0]
    zs: Tensor  # (S, N, C, H, W)
    timesteps: Tensor  # (S,) int64, descending
    alphas_cumprod: Tensor  # (T,) float64
    sigmas: Tensor  # (S,) float64
    clip_x0: bool
    method: str
    model_sha256: str
    extra: dict = field(default_factory=dict)  # optional keys: class_label, cfg_scale
    # (S+1, N, C, H, W): the x the sampler computes from these maps with the model (model_sha256) and condition they
    # were made with: trajectory[i] enters step i, trajectory[S] is the regenerated x0. None when unknown.
    trajectory: Tensor | None = None

    @property
    def steps(self) -> Steps:
        return steps_from_alpha_bar(self.alphas_cumprod, self.timesteps)

    def replace(self, **kw) -> "NoiseMaps":
        """A copy with some fields changed. It carries no trajectory unless one is passed: an edit changes what the
        trajectory was computed from (`regenerate(..., reuse=unedited)` finds the part that still holds)."""
        return NoiseMaps(**{**self.__dict__, "trajectory": None, **kw})

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "NoiseMaps":
        """The maps the sampler consumes (xT, zs) on the model's device and dtype; x0 and the schedule stay. The
        trajectory comes along only in its own dtype (values of another dtype would not be the sampler's)."""
        same = self.trajectory is not None and self.trajectory.dtype == dtype
        return self.replace(xT=self.xT.to(device, dtype), zs=self.zs.to(device, dtype),
                            trajectory=self.trajectory.to(device) if same else None)

    def validate(self, source: str = "noise maps") -> "NoiseMaps":
        S, N = self.timesteps.numel(), self.x0.shape[0]
        if self.x0.dim() != 4 or self.xT.shape != self.x0.shape:
            raise NoiseMapError(f"{source}: x0 {tuple(self.x0.shape)} and xT {tuple(self.xT.shape)} must both be "
                                "[N,C,H,W]")
        if self.zs.shape != (S, *self.x0.shape):
            raise NoiseMapError(f"{source}: zs has shape {tuple(self.zs.shape)}, expected {(S, *self.x0.shape)} "
                                "([S,N,C,H,W] with S = len(timesteps))")
        if self.sigmas.shape != (S,):
            raise NoiseMapError(f"{source}: sigmas has shape {tuple(self.sigmas.shape)}, expected ({S},)")
        if self.method not in METHODS:
            raise NoiseMapError(f"{source}: method {self.method!r} is not one of {METHODS}")
        for name in ("x0", "xT", "zs", "sigmas", "alphas_cumprod"):
            if not torch.isfinite(getattr(self, name)).all():
                raise NoiseMapError(f"{source}: {name} holds NaN or Inf values; regenerate the file")
        if "class_label" in self.extra and self.extra["class_label"].shape != (N,):
            raise NoiseMapError(f"{source}: class_label must have shape ({N},)")
        if self.trajectory is not None and self.trajectory.shape != (S + 1, *self.x0.shape):
            raise NoiseMapError(f"{source}: trajectory has shape {tuple(self.trajectory.shape)}, expected "
                                f"{(S + 1, *self.x0.shape)}")
        try:
            self.steps
        except ValueError as e:
            raise NoiseMapError(f"{source}: timesteps/alphas_cumprod are inconsistent ({e})")
        return self


def check_fits(m: NoiseMaps, model: Model, source: str, *, ignore_sha: bool = False) -> None:
    """Raise NoiseMapError unless the maps were made by `model` (model_sha256; skipped with ignore_sha) and have its
    image shape (C, H, W)."""
    size = model.unet.cfg.image_size
    if m.model_sha256 != model.sha256 and not ignore_sha:
        raise NoiseMapError(f"{source}: made with the model of sha256 {m.model_sha256[:12]}..., not this one "
                            f"({model.sha256[:12]}...); pass the checkpoint the maps were made with, or --ignore-sha")
    if m.x0.shape[1:] != (model.unet.cfg.in_ch, size, size):
        raise NoiseMapError(f"{source}: images {tuple(m.x0.shape[1:])} do not fit the model's "
                            f"({model.unet.cfg.in_ch}, {size}, {size})")


def save_maps(path: str | Path, m: NoiseMaps) -> None:
    """Write a format_version 1 file atomically (arrays in their own dtype: float32 or float64)."""
    m.validate(str(path))
    arrays = {"format_version": np.int64(FORMAT_VERSION), "x0": m.x0.cpu().numpy(), "xT": m.xT.cpu().numpy(),
              "zs": m.zs.cpu().numpy(), "timesteps": m.timesteps.cpu().numpy().astype(np.int64),
              "alphas_cumprod": m.alphas_cumprod.cpu().numpy().astype(np.float64),
              "sigmas": m.sigmas.cpu().numpy().astype(np.float64), "clip_x0": np.bool_(m.clip_x0),
              "method": np.str_(m.method), "model_sha256": np.str_(m.model_sha256),
              **{k: np.asarray(v.cpu().numpy() if isinstance(v, Tensor) else v) for k, v in m.extra.items()}}
    if m.trajectory is not None:
        arrays["trajectory"] = m.trajectory.cpu().numpy()
        arrays["trajectory_sha256"] = np.str_(content_sha256(arrays))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_maps(path: str | Path) -> NoiseMaps:
    """Read and validate a noise-map file; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise NoiseMapError(f"{path}: no such noise-map file")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except ValueError as e:
        raise NoiseMapError(f"{path}: refused ({e}); noise-map files never hold Python objects")
    except Exception as e:  # BadZipFile, OSError, EOFError
        raise NoiseMapError(f"{path}: not a readable .npz ({type(e).__name__}: {e}); the file is truncated or corrupt")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise NoiseMapError(f"{path}: missing key(s) {missing}; not a noise-map file of format_version 1")
    if int(data["format_version"]) != FORMAT_VERSION:
        raise NoiseMapError(f"{path}: format_version {int(data['format_version'])} is not supported "
                            f"(this build reads {FORMAT_VERSION}); upgrade ddpm")
    extra = {k: torch.from_numpy(np.asarray(data[k])) for k in ("class_label",) if k in data}
    if "cfg_scale" in data:
        extra["cfg_scale"] = float(data["cfg_scale"])
    trajectory = None
    if "trajectory" in data:
        if str(data.get("trajectory_sha256", "")) == content_sha256(data):
            trajectory = torch.from_numpy(data["trajectory"])
        else:
            warnings.warn(f"{path}: its trajectory does not belong to its maps (the file was changed after it was "
                          "written); ignored, so edits recompute every step", stacklevel=2)
    m = NoiseMaps(x0=torch.from_numpy(data["x0"]), xT=torch.from_numpy(data["xT"]), zs=torch.from_numpy(data["zs"]),
                  timesteps=torch.from_numpy(data["timesteps"].astype(np.int64)),
                  alphas_cumprod=torch.from_numpy(data["alphas_cumprod"].astype(np.float64)),
                  sigmas=torch.from_numpy(data["sigmas"].astype(np.float64)), clip_x0=bool(data["clip_x0"]),
                  method=str(data["method"]), model_sha256=str(data["model_sha256"]), extra=extra,
                  trajectory=trajectory)
    return m.validate(str(path))


# What the sampler's trajectory depends on (with the trajectory itself): a stored trajectory is used only while
# these hash to the stored trajectory_sha256.
TRAJECTORY_INPUTS = ("xT", "zs", "timesteps", "alphas_cumprod", "sigmas", "clip_x0", "model_sha256", "class_label",
                     "cfg_scale", "trajectory")


def content_sha256(arrays: dict) -> str:
    """sha256 over the name, dtype, shape and bytes of each TRAJECTORY_INPUTS array present (numpy values)."""
    h = hashlib.sha256()
    for k in TRAJECTORY_INPUTS:
        if k in arrays:
            a = np.ascontiguousarray(arrays[k])
            h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def shared_steps(a: NoiseMaps, b: NoiseMaps) -> int:
    """How many leading steps the sampler runs identically on a and b: 0 unless x_T, the timesteps, the schedule,
    clipping and the condition agree, else the index of the first step whose sigma or z differs (S if none)."""
    same = (a.xT.shape == b.xT.shape and torch.equal(a.timesteps, b.timesteps) and a.clip_x0 == b.clip_x0
            and torch.equal(a.alphas_cumprod, b.alphas_cumprod) and a.model_sha256 == b.model_sha256
            and a.extra.keys() == b.extra.keys()
            and all(torch.equal(torch.as_tensor(a.extra[k]), torch.as_tensor(b.extra[k])) for k in a.extra)
            and torch.equal(a.xT, b.xT))
    if not same:
        return 0
    for i in range(len(a.timesteps)):
        if a.sigmas[i] != b.sigmas[i] or not torch.equal(a.zs[i], b.zs[i]):
            return i
    return len(a.timesteps)


def resume_point(m: NoiseMaps, reuse: NoiseMaps | None, stop: int) -> tuple[int, Tensor]:
    """(k, x): the first step of m the sampler must compute, at most `stop`, and the x that enters it, read from
    reuse's trajectory (the steps before k being the same in m and reuse); (0, m.xT) without a trajectory."""
    if reuse is None or reuse.trajectory is None:
        return 0, m.xT
    k = min(shared_steps(reuse, m), stop)
    return k, (reuse.trajectory[k] if k else m.xT)


def regenerate(eps_model: EpsModel, m: NoiseMaps, *, progress: bool = True, reuse: NoiseMaps | None = None) -> Tensor:
    """x0 from the maps by the file's regeneration rule: the sampler with zs as its noise.

    reuse: maps with a trajectory (the unedited maps of an edit) that `eps_model` made: the same model (check
    model_sha256) and condition. The steps before the first one whose input differs are read from the trajectory
    instead of recomputed, so an edit costs only the steps it changes; the result is bit-identical to the full run."""
    S = len(m.timesteps)
    k, x = resume_point(m, reuse, S)
    if k == S:
        return x
    return sample(eps_model, x, m.steps[k:], m.sigmas[k:], zs=m.zs[k:], clip=m.clip_x0, progress=progress)


def invert_to_maps(model: Model, x0: Tensor, *, S: int, skip: int = 0, spacing: Spacing = "leading",
                   method: Method = "edit_friendly", mode: Mode = "exact", seed: int = 0, chunk: int = 8,
                   last: Last = "fixed_large", progress: bool = True, eps_model: EpsModel | None = None,
                   extra: dict | None = None, trajectory: bool = True) -> tuple[NoiseMaps, Tensor]:
    """Invert x0 (N, C, H, W, on the model's device and dtype) with S strided steps, starting at step
    `skip` (the paper's T_skip: the maps cover timesteps[skip:]). Returns (maps, x0_rec).
    eps_model defaults to the model's unconditional eps (pass a `guidance.guided_eps` for a class);
    extra holds the file's optional keys (class_label, cfg_scale); trajectory keeps the sampler's trajectory."""
    T = model.sched.T
    if not 1 <= S <= T:
        raise ValueError(f"the number of steps must be between 1 and {T}, got {S}")
    if not 0 <= skip < S:
        raise ValueError(f"skip must be between 0 and steps-1 = {S - 1}, got {skip}")
    steps = make_steps(model.sched, strided_timesteps(S, T, spacing))[skip:]
    g = torch.Generator().manual_seed(seed)
    inv = invert(eps_model or model.eps, x0, steps, model.sched, method=method, mode=mode, generator=g,
                 clip=model.clip_x0, last=last, chunk=chunk, progress=progress)
    maps = NoiseMaps(x0=x0.cpu(), xT=inv.xT.cpu(), zs=inv.zs.cpu(), timesteps=steps.t,
                     alphas_cumprod=model.sched.alpha_bar, sigmas=inv.sigma, clip_x0=model.clip_x0, method=method,
                     model_sha256=model.sha256, extra=dict(extra or {}),
                     trajectory=inv.xs.cpu() if trajectory else None)
    return maps, inv.x0_rec
