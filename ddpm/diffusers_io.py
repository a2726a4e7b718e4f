"""diffusers folders <-> this project's UNet, by an explicit key map (no diffusers import needed).

Supported: UNet2DModel with the Ho et al. blocks (DownBlock2D/AttnDownBlock2D, UpBlock2D/AttnUpBlock2D,
single-head attention, positional timestep embedding with freq_shift=1), e.g. google/ddpm-cifar10-32 and
google/ddpm-celebahq-256, as a UNet folder (config.json + weights) or a pipeline folder (unet/ + scheduler/).
Weights: diffusion_pytorch_model.safetensors, or .bin read with torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import CheckpointError, Model, build_unet
from .files import atomic_write, file_sha256, save_safetensors
from .schedule import Schedule, linear_schedule
from .unet import UNet, UNetConfig

LEAF = {".temb_proj.": ".time_emb_proj.", ".skip.": ".conv_shortcut.", ".norm.": ".group_norm.",
        ".q.": ".to_q.", ".k.": ".to_k.", ".v.": ".to_v.", ".proj_out.": ".to_out.0."}
PREFIX = [(r"^(down|up)\.(\d+)\.res\.", r"\1_blocks.\2.resnets."), (r"^(down|up)\.(\d+)\.attn\.", r"\1_blocks.\2.attentions."),
          (r"^down\.(\d+)\.resample\.", r"down_blocks.\1.downsamplers.0."), (r"^up\.(\d+)\.resample\.", r"up_blocks.\1.upsamplers.0."),
          (r"^mid\.0\.", "mid_block.resnets.0."), (r"^mid\.1\.", "mid_block.attentions.0."), (r"^mid\.2\.", "mid_block.resnets.1."),
          (r"^temb\.0\.", "time_embedding.linear_1."), (r"^temb\.2\.", "time_embedding.linear_2."),
          (r"^class_emb\.", "class_embedding."), (r"^norm_out\.", "conv_norm_out.")]
# attention names of diffusers < 0.15 (the google/ddpm-* .bin files) -> current names
LEGACY = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}

# UNet2DModel settings this architecture implies: (key, diffusers default, required value)
REQUIRED = [("act_fn", "silu", "silu"), ("norm_eps", 1e-5, 1e-6),
            ("time_embedding_type", "positional", "positional"), ("flip_sin_to_cos", True, False),
            ("freq_shift", 0, 1), ("downsample_padding", 1, 0), ("center_input_sample", False, False),
            ("mid_block_scale_factor", 1, 1), ("resnet_time_scale_shift", "default", "default"),
            ("add_attention", True, True), ("class_embed_type", None, None), ("downsample_type", "conv", "conv"),
            ("upsample_type", "conv", "conv"), ("attn_norm_num_groups", None, None)]


def diffusers_key(k: str) -> str:
    """Our state-dict key -> the UNet2DModel key for the same tensor."""
    for pat, rep in PREFIX:
        k = re.sub(pat, rep, k)
    for a, b in LEAF.items():
        k = k.replace(a, b)
    return k


def config_from_diffusers(c: dict, source: str) -> UNetConfig:
    """UNetConfig for a UNet2DModel config.json, or a CheckpointError naming what is unsupported."""
    if c.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise CheckpointError(f"{source}: {c['_class_name']} is not supported; only UNet2DModel")
    bad = [f"{k}={c.get(k, d)!r} (need {want!r})" for k, d, want in REQUIRED if c.get(k, d) != want]
    down, up = list(c.get("down_block_types", [])), list(c.get("up_block_types", []))
    kinds = {"DownBlock2D": False, "AttnDownBlock2D": True}
    if any(b not in kinds for b in down) or not down:
        bad.append(f"down_block_types={down} (need DownBlock2D/AttnDownBlock2D)")
    elif up != [("AttnUpBlock2D" if kinds[b] else "UpBlock2D") for b in reversed(down)]:
        bad.append(f"up_block_types={up} (need the mirror of down_block_types)")
    boc = list(c.get("block_out_channels", []))
    ch = boc[0] if boc else 0
    if len(boc) != len(down) or any(b % ch for b in boc):
        bad.append(f"block_out_channels={boc}")
    head_dim = c.get("attention_head_dim", 8)
    attn_ch = [b for b, d in zip(boc, down) if kinds.get(d)] + boc[-1:]
    if head_dim is not None and any(head_dim != a for a in attn_ch):
        bad.append(f"attention_head_dim={head_dim} (need None: single-head attention)")
    if c.get("in_channels", 3) != c.get("out_channels", 3):
        bad.append("in_channels != out_channels")
    if bad:
        raise CheckpointError(f"{source}: unsupported UNet2DModel settings: {'; '.join(bad)}")
    size = c.get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) else size
    n_cls = c.get("num_class_embeds") or 0
    return UNetConfig(image_size=int(size), in_ch=c.get("in_channels", 3), ch=ch, ch_mult=tuple(b // ch for b in boc),
                      num_res_blocks=c.get("layers_per_block", 2),
                      attn_resolutions=tuple(size // 2 ** i for i, d in enumerate(down) if kinds[d]),
                      dropout=c.get("dropout", 0.0), num_classes=max(n_cls - 1, 0),
                      num_groups=c.get("norm_num_groups", 32))


def config_to_diffusers(cfg: UNetConfig) -> dict:
    L = len(cfg.ch_mult)
    res = [cfg.image_size // 2 ** i for i in range(L)]
    down = ["AttnDownBlock2D" if r in cfg.attn_resolutions else "DownBlock2D" for r in res]
    c = {"_class_name": "UNet2DModel", "sample_size": cfg.image_size, "in_channels": cfg.in_ch,
         "out_channels": cfg.in_ch, "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
         "layers_per_block": cfg.num_res_blocks, "down_block_types": down,
         "up_block_types": [("AttnUpBlock2D" if d.startswith("Attn") else "UpBlock2D") for d in reversed(down)],
         "attention_head_dim": None, "dropout": cfg.dropout,
         "num_class_embeds": cfg.num_classes + 1 if cfg.num_classes else None, "norm_num_groups": cfg.num_groups}
    c.update({k: want for k, _, want in REQUIRED})
    return c


def schedule_from_diffusers(c: dict, source: str) -> tuple[Schedule, bool, str]:
    """(Schedule, clip_sample, variance_type) from a DDPMScheduler/DDIMScheduler config."""
    if c.get("trained_betas") is not None:
        sched = Schedule(torch.tensor(c["trained_betas"], dtype=torch.float64))
    elif c.get("beta_schedule", "linear") == "linear":
        sched = linear_schedule(c.get("num_train_timesteps", 1000), c.get("beta_start", 1e-4), c.get("beta_end", 0.02))
    else:
        raise CheckpointError(f"{source}: beta_schedule {c['beta_schedule']!r} is not supported; only 'linear'")
    variance = c.get("variance_type", "fixed_small")
    if variance not in ("fixed_small", "fixed_large"):
        raise CheckpointError(f"{source}: variance_type {variance!r} is not supported (fixed_small, fixed_large)")
    if c.get("prediction_type", "epsilon") != "epsilon":
        raise CheckpointError(f"{source}: prediction_type {c['prediction_type']!r} is not supported; only 'epsilon'")
    return sched, bool(c.get("clip_sample", True)), variance


def read_weights(folder: Path) -> tuple[dict[str, Tensor], Path]:
    st, bn = folder / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.bin"
    if st.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(st)), st
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{st}: not a readable safetensors file ({e}); the download is truncated or corrupt")
    if bn.is_file():
        try:
            return torch.load(bn, map_location="cpu", weights_only=True), bn
        except Exception as e:
            raise CheckpointError(f"{bn}: cannot be read safely with weights_only=True ({type(e).__name__}); "
                                  "convert it to safetensors")
    raise CheckpointError(f"{folder}: no diffusion_pytorch_model.safetensors or .bin")


def load_diffusers(folder: str | Path) -> Model:
    """A UNet2DModel folder, or a pipeline folder with unet/ (and scheduler/), as a Model."""
    folder = Path(folder)
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (unet_dir / "config.json").is_file():
        raise CheckpointError(f"{folder}: not a diffusers folder (no config.json or unet/config.json)")
    sched_file = next((p for p in (folder / "scheduler" / "scheduler_config.json", folder / "scheduler_config.json")
                       if p.is_file()), None)
    try:
        cfg = config_from_diffusers(json.loads((unet_dir / "config.json").read_text()), str(unet_dir / "config.json"))
        sched_cfg = json.loads(sched_file.read_text()) if sched_file else {}
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder}: a config file is not valid JSON ({e})")
    theirs, weights_file = read_weights(unet_dir)
    for a, b in LEGACY.items():
        theirs = {k.replace(a, b): v for k, v in theirs.items()}
    keys = UNet(cfg).state_dict().keys()
    missing = [diffusers_key(k) for k in keys if diffusers_key(k) not in theirs]
    if missing:
        raise CheckpointError(f"{weights_file}: missing {missing[:3]}; the weights do not match config.json")
    unet = build_unet(cfg.to_dict(), {k: theirs[diffusers_key(k)] for k in keys}, str(weights_file))
    sched, clip, variance = schedule_from_diffusers(sched_cfg, str(sched_file))
    return Model(unet, sched, clip, variance, sha256=file_sha256(weights_file), source=str(folder))


def export_diffusers(model: Model, folder: str | Path) -> Path:
    """Write a diffusers DDPM pipeline folder (model_index.json, unet/, scheduler/) for `model`.

    `DDPMPipeline.from_pretrained(folder)` loads it; so does `load_model(folder)`, bit for bit."""
    folder = Path(folder)
    beta = model.sched.beta
    linear = torch.equal(beta, linear_schedule(beta.numel(), beta[0].item(), beta[-1].item()).beta)
    sched_cfg = {"_class_name": "DDPMScheduler", "num_train_timesteps": beta.numel(), "clip_sample": model.clip_x0,
                 "variance_type": model.variance, "prediction_type": "epsilon",
                 **({"beta_schedule": "linear", "beta_start": beta[0].item(), "beta_end": beta[-1].item()} if linear
                    else {"trained_betas": beta.tolist()})}
    state = {diffusers_key(k): v.detach().cpu().contiguous() for k, v in model.unet.state_dict().items()}
    files = {"model_index.json": {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                                  "scheduler": ["diffusers", "DDPMScheduler"]},
             "unet/config.json": config_to_diffusers(model.unet.cfg), "scheduler/scheduler_config.json": sched_cfg}
    for name, obj in files.items():
        atomic_write(folder / name, lambda tmp, obj=obj: Path(tmp).write_text(json.dumps(obj, indent=2)))
    save_safetensors(folder / "unet" / "diffusion_pytorch_model.safetensors", state)
    return folder
