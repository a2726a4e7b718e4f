"""The noise-map file: a public contract, format_version 1 (docs/noise_map_format.md).

One .npz read with numpy.load(path, allow_pickle=False):
  format_version int 1 | x0 [N,C,H,W] | xT [N,C,H,W] | zs [S,N,C,H,W] | timesteps int64 [S], descending
  alphas_cumprod float64 [T] | sigmas float64 [S] | clip_x0 bool | method str | model_sha256 str
Optional keys (ignored by readers that do not know them): class_label int64 [N], cfg_scale float.
Step i: t = timesteps[i], eps = model(x, t), x0_hat = (x - sqrt(1 - ab_t) eps) / sqrt(ab_t) [clipped],
x = mu_tilde(x, x0_hat) + sigmas[i] zs[i], with ab_prev = alphas_cumprod[timesteps[i+1]] (1 at the last step).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import atomic_write
from .diffusion import EpsModel, sample
from .schedule import Schedule, Steps, make_steps, schedule_from_alpha_bar

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

    @property
    def sched(self) -> Schedule:
        return schedule_from_alpha_bar(self.alphas_cumprod)

    @property
    def steps(self) -> Steps:
        return make_steps(self.sched, self.timesteps)

    def replace(self, **kw) -> "NoiseMaps":
        return NoiseMaps(**{**self.__dict__, **kw})

    def to(self, device: str | torch.device, dtype: torch.dtype) -> "NoiseMaps":
        """The maps the sampler consumes (xT, zs) on the model's device and dtype; x0 and the schedule stay."""
        return self.replace(xT=self.xT.to(device, dtype), zs=self.zs.to(device, dtype))

    def validate(self, source: str = "noise maps") -> "NoiseMaps":
        S, N = self.timesteps.numel(), self.x0.shape[0]
        if self.x0.dim() != 4 or self.xT.shape != self.x0.shape:
            raise NoiseMapError(f"{source}: x0 {tuple(self.x0.shape)} and xT {tuple(self.xT.shape)} must both be [N,C,H,W]")
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
        try:
            self.steps
        except ValueError as e:
            raise NoiseMapError(f"{source}: timesteps/alphas_cumprod are inconsistent ({e})")
        return self


def save_maps(path: str | Path, m: NoiseMaps) -> None:
    """Write a format_version 1 file atomically (arrays in their own dtype: float32 or float64)."""
    m.validate(str(path))
    arrays = {"format_version": np.int64(FORMAT_VERSION), "x0": m.x0.cpu().numpy(), "xT": m.xT.cpu().numpy(),
              "zs": m.zs.cpu().numpy(), "timesteps": m.timesteps.cpu().numpy().astype(np.int64),
              "alphas_cumprod": m.alphas_cumprod.cpu().numpy().astype(np.float64),
              "sigmas": m.sigmas.cpu().numpy().astype(np.float64), "clip_x0": np.bool_(m.clip_x0),
              "method": np.str_(m.method), "model_sha256": np.str_(m.model_sha256),
              **{k: np.asarray(v.cpu().numpy() if isinstance(v, Tensor) else v) for k, v in m.extra.items()}}

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
    m = NoiseMaps(x0=torch.from_numpy(data["x0"]), xT=torch.from_numpy(data["xT"]), zs=torch.from_numpy(data["zs"]),
                  timesteps=torch.from_numpy(data["timesteps"].astype(np.int64)),
                  alphas_cumprod=torch.from_numpy(data["alphas_cumprod"].astype(np.float64)),
                  sigmas=torch.from_numpy(data["sigmas"].astype(np.float64)), clip_x0=bool(data["clip_x0"]),
                  method=str(data["method"]), model_sha256=str(data["model_sha256"]), extra=extra)
    return m.validate(str(path))


def regenerate(eps_model: EpsModel, m: NoiseMaps, *, progress: bool = True) -> Tensor:
    """x0 from the maps by the file's regeneration rule: the sampler with zs as its noise."""
    return sample(eps_model, m.xT, m.steps, m.sigmas, zs=m.zs, clip=m.clip_x0, progress=progress)
