"""The shipped checkpoint: its hash is the one on the model card, its numbers come from the committed training
log, and it inverts a shipped real image exactly."""
import json
import re

import pytest
import torch

from ddpm.files import file_sha256
from ddpm.images import load_image
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, regenerate

from conftest import ASSETS, ROOT

CKPT = ROOT / "checkpoints" / "cifar10-cpu-cond.safetensors"
MODELS = ["cifar10-cpu-cond", "celeba32-cpu", "celeba64-cpu"]
FACE_MODELS = {"celeba32-cpu": 32, "celeba64-cpu": 64}  # name: image size


def card(name: str) -> str:
    """The model card's section for checkpoints/<name>.safetensors (from its heading to the next model's)."""
    text = (ROOT / "checkpoints" / "README.md").read_text()
    parts = re.split(r"^## `([\w.-]+)\.safetensors`", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))[name]


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_hash_matches_the_model_card(name):
    assert re.search(r"sha256 `([0-9a-f]{64})`", card(name)).group(1) == file_sha256(ROOT / "checkpoints" / f"{name}.safetensors")


@pytest.mark.parametrize("name", MODELS)
def test_card_numbers_come_from_the_training_log(name):
    text = card(name)
    log = [json.loads(line) for line in (ROOT / "checkpoints" / f"{name}.log.jsonl").read_text().splitlines()]
    final = [r for r in log if "bits_per_dim" in r][-1]
    assert f"{final['bits_per_dim']:.3f}" in text and f"{final['eval_loss']:.4f}" in text
    assert f"{final['step']} steps" in text


@pytest.mark.parametrize("name", MODELS)
def test_card_sample_quality_comes_from_the_committed_bench_output(name):
    """checkpoints/<name>.quality.jsonl holds `python -m bench.quality` output per milestone; the record of the
    shipped file (its sha256) exists, and its Frechet distance(s) with their standard errors, chroma and (conditional
    models) class agreement are the card's."""
    records = [json.loads(line) for line in (ROOT / "checkpoints" / f"{name}.quality.jsonl").read_text().splitlines()]
    shipped = [r for r in records if r["sha256"] == file_sha256(ROOT / "checkpoints" / f"{name}.safetensors")]
    assert len(shipped) == 1
    q, text = shipped[0], card(name)
    shown = {"frechet_distance": ".2f", "chroma_samples": ".3f"}
    if "class_agreement_cfg1" in q:  # a conditional model
        shown |= {"class_agreement_cfg1": ".3f", "class_agreement_cfg3": ".3f"}
    if FACE_MODELS.get(name, 32) > 32:  # larger than the classifier's 32x32: the distance on the images themselves too
        shown["frechet_distance_native"] = ".2f"
    shown |= {k: ".2f" for k in ("frechet_se", "frechet_se_native") if k in q}  # records since session 24
    shown |= {k: "+.2f" for k in ("frechet_change", "frechet_change_native") if k in q}  # paired, since session 28
    shown |= {k: ".2f" for k in ("frechet_change_se", "frechet_change_se_native") if k in q}
    for key, fmt in shown.items():
        assert format(q[key], fmt) in text, key


@pytest.mark.parametrize("name", ["cifar10-cpu-cond", "celeba64-cpu"])
def test_a_model_still_in_training_ships_the_train_state_it_continues_from(name):
    """checkpoints/<name>.train-state.safetensors pairs with the shipped EMA file (load_train_state checks its
    sha256) and stands at the step of the log's last held-out record, which the card names."""
    from ddpm.trainstate import load_train_state

    state = load_train_state(ROOT / "checkpoints" / f"{name}.train-state.safetensors")
    log = [json.loads(line) for line in (ROOT / "checkpoints" / f"{name}.log.jsonl").read_text().splitlines()]
    assert state["step"] == [r for r in log if "bits_per_dim" in r][-1]["step"]
    assert state["config"]["unet"] == load_model(ROOT / "checkpoints" / f"{name}.safetensors").unet.cfg.to_dict()


def test_shipped_model_inverts_a_shipped_image_exactly():
    """float32, 100 steps, edit-friendly, last step included: max-abs <= 1e-4, 8-bit identical."""
    model = load_model(CKPT)
    assert model.unet.cfg.image_size == 32
    x0 = load_image(ASSETS / "cifar10" / "horse_0000.jpg", 32)[None]
    maps, rec = invert_to_maps(model, x0, S=100, progress=False)
    assert (rec - x0).abs().max() <= 1e-4
    assert torch.equal(((rec + 1) * 127.5).round(), ((x0 + 1) * 127.5).round())
    assert maps.model_sha256 == file_sha256(CKPT)


def test_saving_the_same_weights_gives_the_same_bytes(tmp_path):
    """save_model is deterministic (safetensors alone orders the metadata at random, so every save had its own
    sha256); the re-written header still loads, in safetensors and in load_model."""
    from safetensors import safe_open

    from ddpm.checkpoint import save_model

    model = load_model(CKPT)
    extra = {"step": 4800, "preset": "cifar10-cpu"}
    hashes = {save_model(tmp_path / f"{k}.safetensors", model.unet, extra=extra) for k in range(5)}
    assert len(hashes) == 1
    with safe_open(str(tmp_path / "0.safetensors"), "pt") as f:
        assert f.metadata()["preset"] == '"cifar10-cpu"'
    again = load_model(tmp_path / "0.safetensors").unet.state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.unet.state_dict().items())


@pytest.mark.parametrize("name,size", FACE_MODELS.items())
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_face_model_inverts_held_out_faces_exactly(name, size, dtype, tol):
    """Each shipped face model (32x32, 64x64) on two held-out CelebA faces (val/test partition, identities it never
    saw), framed as in training (the crop the model file records), S = 20, last step included: max-abs <= 1e-4 /
    1e-10."""
    model = load_model(ROOT / "checkpoints" / f"{name}.safetensors").to("cpu", dtype)
    assert model.crop == pytest.approx(140 / 178)
    assert model.unet.cfg.image_size == size
    faces = sorted((ASSETS / "celeba-heldout").glob("*.jpg"))[:2]
    x0 = torch.stack([load_image(f, size, crop=model.crop) for f in faces]).to(dtype)
    maps, rec = invert_to_maps(model, x0, S=20, progress=False)
    assert (rec - x0).abs().max() <= tol
    zs = maps.zs.clone()
    zs[10] += 1e-3  # negative control: a perturbed map does not reconstruct
    assert (regenerate(model.eps, maps.replace(zs=zs), progress=False) - x0).abs().max() > tol


def test_face_model_passes_the_image_mean_at_large_t():
    """The 64x64 face model's eps_theta follows the image mean of x_t where the noise hides it (t = 990, exact
    posterior gain 0.99): bench.quality.mean_gain > 0.4 on the 8 shipped held-out faces. The 8-group file it
    replaced had 0.15 (its output GroupNorm removed the mean), which drew every sample with a colour cast."""
    from bench.quality import mean_gain

    model = load_model(ROOT / "checkpoints" / "celeba64-cpu.safetensors")
    x0 = torch.stack([load_image(f, 64, crop=model.crop) for f in sorted((ASSETS / "celeba-heldout").glob("*.jpg"))])
    with torch.no_grad():
        gain = mean_gain(model, x0, (990,), seed=0)
    assert gain["mean_gain_exact_t990"] > 0.98 and gain["mean_gain_t990"] > 0.4, gain
