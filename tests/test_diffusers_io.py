"""diffusers_io.py: numerical parity with diffusers' UNet2DModel and schedulers on the same weights,
export/import round trips, and noise-map files exchanged with a plain diffusers loop in both directions."""
import json

import numpy as np
from dataclasses import replace

import pytest
import torch

from ddpm.checkpoint import CheckpointError
from ddpm.models import load_model

from ddpm.diffusers_io import config_to_diffusers, export_diffusers
from ddpm.files import file_sha256
from ddpm.unet import PRESETS

from conftest import ROOT, cli

diffusers = pytest.importorskip("diffusers")


# The 256x256 CelebA-HQ layout (6 levels, ch_mult 1,1,2,2,4,4, attention at 16) at a quarter of its width: the same
# blocks and key map as google/ddpm-celebahq-256, at 1/16 of the cost.
CONFIGS = {**PRESETS, "celebahq256-narrow": replace(PRESETS["celebahq256"], ch=32),
           "tiny-8-groups": replace(PRESETS["tiny"], num_groups=8)}


def diffusers_folder(tmp_path, preset: str, seed: int = 0):
    """A random-weight diffusers pipeline-style folder (unet/ + scheduler/) for one of our configs."""
    cfg = config_to_diffusers(CONFIGS[preset])
    cfg.pop("_class_name")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**cfg).eval()
    unet.save_pretrained(tmp_path / "pipe" / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=True).save_pretrained(tmp_path / "pipe" / "scheduler")
    return tmp_path / "pipe", unet


@pytest.mark.parametrize("preset", ["tiny", "tiny-8-groups", "celeba64-cpu", "celeba64-cpu-attn32", "cifar10",
                                    "celebahq256-narrow"])
def test_eps_matches_diffusers_unet2dmodel(tmp_path, preset):
    """Same random weights, inputs and timesteps: our eps equals UNet2DModel's to 1e-5 (float32); celeba64-cpu is the
    one-group (norm_num_groups = 1) layout, celeba64-cpu-attn32 the one with attention at two resolutions (16, 32)."""
    folder, ref = diffusers_folder(tmp_path, preset)
    ours = load_model(folder).unet
    assert ours.cfg.attn_resolutions == CONFIGS[preset].attn_resolutions  # the layout survived the round trip
    size = CONFIGS[preset].image_size
    x, t = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 999])
    with torch.no_grad():
        torch.testing.assert_close(ours(x, t), ref(x, t).sample, rtol=0, atol=1e-5)


def test_load_export_load_round_trips_bit_for_bit(tmp_path):
    folder, ref = diffusers_folder(tmp_path, "tiny")
    a = load_model(folder)
    b = load_model(export_diffusers(a, tmp_path / "exported"))
    assert a.unet.cfg == b.unet.cfg and (a.clip_x0, a.variance) == (b.clip_x0, b.variance)
    assert all(torch.equal(v, b.unet.state_dict()[k]) for k, v in a.unet.state_dict().items())
    again = diffusers.UNet2DModel.from_pretrained(tmp_path / "exported" / "unet")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in ref.state_dict().items())


def test_legacy_attention_names_in_bin_files_load(tmp_path):
    """Old diffusers .bin files (query/key/value/proj_attn) load with weights_only=True into the same network."""
    folder, ref = diffusers_folder(tmp_path, "tiny")
    unet = folder / "unet"
    state = {k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
             .replace(".to_out.0.", ".proj_attn."): v for k, v in ref.state_dict().items()}
    (unet / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(state, unet / "diffusion_pytorch_model.bin")
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(load_model(folder).unet(x, t), ref(x, t).sample, rtol=0, atol=1e-5)


def test_unsupported_architecture_names_what_is_unsupported(tmp_path):
    folder, _ = diffusers_folder(tmp_path, "tiny")
    cfg_file = folder / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(attention_head_dim=8, time_embedding_type="fourier")
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="attention_head_dim=8.*|time_embedding_type='fourier'"):
        load_model(folder)


def diffusers_regenerate(folder, f: dict) -> torch.Tensor:
    """The README's plain diffusers loop: UNet2DModel + DDIMScheduler.step(eta=1) with the file's noise."""
    unet = diffusers.UNet2DModel.from_pretrained(folder / "unet").eval()
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=bool(f["clip_x0"]), set_alpha_to_one=True)
    sched.set_timesteps(1000 // (int(f["timesteps"][0] - f["timesteps"][1])))
    sched.alphas_cumprod = torch.from_numpy(f["alphas_cumprod"])  # the file's float64 schedule
    x = torch.from_numpy(f["xT"])
    with torch.no_grad():
        for i, t in enumerate(f["timesteps"]):
            eps = unet(x, int(t)).sample
            x = sched.step(eps, int(t), x, eta=1.0, variance_noise=torch.from_numpy(f["zs"][i]),
                           use_clipped_model_output=True).prev_sample
    return x + float(f["sigmas"][-1]) * torch.from_numpy(f["zs"][-1])  # diffusers adds no noise at the last step


@pytest.mark.parametrize("method", ["edit_friendly", "dpm_encoder"])
def test_our_invert_file_is_regenerated_by_a_plain_diffusers_loop(tmp_path, method):
    """invert.py on a diffusers folder -> a file that the diffusers loop regenerates to 1e-4 max-abs."""
    folder, _ = diffusers_folder(tmp_path, "tiny")
    out = tmp_path / "maps.npz"
    r = cli("invert", "--ckpt", folder, "--image", ROOT / "assets/cifar10/cat_0000.jpg",
            ROOT / "assets/cifar10/ship_0000.jpg", "--steps", 20, "--method", method, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    with np.load(out, allow_pickle=False) as npz:
        f = {k: npz[k] for k in npz.files}
    assert str(f["model_sha256"]) == file_sha256(folder / "unet" / "diffusion_pytorch_model.safetensors")
    err = (diffusers_regenerate(folder, f) - torch.from_numpy(f["x0"])).abs().max().item()
    assert err <= 1e-4, err


def test_a_diffusers_generated_file_is_accepted_and_a_tampered_one_rejected(tmp_path):
    """A DDPM sample drawn by a plain diffusers loop, written in our format, passes `python -m ddpm.verify`;
    the same file with one map changed fails it (exit code 1)."""
    folder, unet = diffusers_folder(tmp_path, "tiny")
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=True, set_alpha_to_one=True)
    sched.set_timesteps(10)
    sched.alphas_cumprod = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x = xT = torch.randn(1, 3, 32, 32, generator=g)
    zs, sigmas = [], []
    with torch.no_grad():
        for t in sched.timesteps:
            z = torch.randn(1, 3, 32, 32, generator=g)
            prev = t - 100
            ab_t, ab_prev = sched.alphas_cumprod[t], sched.alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0).double()
            sigmas.append(float(((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()))
            x = sched.step(unet(x, t).sample, t, x, eta=1.0, variance_noise=z, use_clipped_model_output=True).prev_sample
            zs.append(z)
    arrays = dict(format_version=np.int64(1), x0=x.numpy(), xT=xT.numpy(), zs=torch.stack(zs).numpy(),
                  timesteps=sched.timesteps.numpy().astype(np.int64), alphas_cumprod=sched.alphas_cumprod.numpy(),
                  sigmas=np.array(sigmas), clip_x0=np.bool_(True), method=np.str_("native"),
                  model_sha256=np.str_(file_sha256(folder / "unet" / "diffusion_pytorch_model.safetensors")))
    np.savez(tmp_path / "theirs.npz", **arrays)
    arrays["zs"] = arrays["zs"].copy()
    arrays["zs"][3, 0, 0, 5, 5] += 1.0
    np.savez(tmp_path / "tampered.npz", **arrays)
    verify = ["ddpm.verify", "--ckpt", folder, "--no-progress"]
    ok = cli(*verify, tmp_path / "theirs.npz")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = cli(*verify, tmp_path / "tampered.npz")
    assert bad.returncode == 1 and "FAIL" in bad.stdout
