"""The shipped checkpoint: its hash is the one on the model card, its numbers come from the committed training
log, and it inverts a shipped real image exactly."""
import json
import re

import torch

from ddpm.checkpoint import file_sha256, load_model
from ddpm.images import load_image
from ddpm.inversion import invert_to_maps

from conftest import ASSETS, ROOT

CKPT = ROOT / "checkpoints" / "cifar10-cpu.safetensors"
CARD = (ROOT / "checkpoints" / "README.md").read_text()


def test_checkpoint_hash_matches_the_model_card():
    assert re.search(r"sha256 `([0-9a-f]{64})`", CARD).group(1) == file_sha256(CKPT)


def test_card_numbers_come_from_the_training_log():
    log = [json.loads(line) for line in (ROOT / "checkpoints" / "cifar10-cpu.log.jsonl").read_text().splitlines()]
    final = [r for r in log if "bits_per_dim" in r][-1]
    assert f"{final['bits_per_dim']:.3f}" in CARD and f"{final['eval_loss']:.4f}" in CARD
    assert f"{final['step']} steps" in CARD


def test_shipped_model_inverts_a_shipped_image_exactly():
    """float32, 100 steps, edit-friendly, last step included: max-abs <= 1e-4, 8-bit identical."""
    model = load_model(CKPT)
    assert model.unet.cfg.image_size == 32
    x0 = load_image(ASSETS / "cifar10" / "horse_0000.jpg", 32)[None]
    maps, rec = invert_to_maps(model, x0, S=100, progress=False)
    assert (rec - x0).abs().max() <= 1e-4
    assert torch.equal(((rec + 1) * 127.5).round(), ((x0 + 1) * 127.5).round())
    assert maps.model_sha256 == file_sha256(CKPT)
