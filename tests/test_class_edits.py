"""Class edits (issue 11): the measuring classifier (bench/classifier.py) and the class-edit bench on the shipped
conditional model."""
import shutil

import pytest
import torch

from bench import classifier
from ddpm.checkpoint import CheckpointError
from ddpm.guidance import CIFAR10_CLASSES
from ddpm.images import load_image

from conftest import ASSETS, ROOT, cli


COND = ROOT / "checkpoints" / "cifar10-cpu-cond.safetensors"


def test_augment_returns_flipped_or_plain_windows_of_the_padded_image():
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = classifier.augment(x, torch.Generator().manual_seed(1))
    pad = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    for b in range(6):
        windows = [pad[b, :, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        assert any(torch.equal(y[b], w) or torch.equal(y[b], w.flip(2)) for w in windows)
    assert not torch.equal(y, x)


def test_classifier_file_round_trips_in_float16_and_refuses_other_files(tmp_path, tiny_ckpt):
    torch.manual_seed(0)
    net = classifier.build().eval()
    classifier.save(net, {"test_accuracy": 0.5}, tmp_path / "c.safetensors")
    back, meta = classifier.load(tmp_path / "c.safetensors")
    assert meta == {"test_accuracy": 0.5}
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(back.state_dict()[k], v.half().float()), k
    with pytest.raises(CheckpointError, match="not a classifier file"):
        classifier.load(tiny_ckpt)


def test_shipped_classifier_is_a_usable_instrument():
    """Its recorded CIFAR-10 test accuracy is >= 0.7 and it labels >= 7 of the 10 shipped test images correctly."""
    net, meta = classifier.load()
    assert meta["test_accuracy"] >= 0.7 and meta["test_images"] == 10000
    files = sorted((ASSETS / "cifar10").glob("*.jpg"))
    x = torch.stack([load_image(f, 32) for f in files])
    y = torch.tensor([CIFAR10_CLASSES.index(f.name.rsplit("_", 1)[0]) for f in files])
    assert (classifier.predict(net, x).argmax(1) == y).sum() >= 7


def test_class_edit_bench_runs_on_the_shipped_models(tmp_path):
    """bench/class_edits.py end to end (S = 6, one pair, one image): edit-friendly and DPM-Encoder reconstruct the
    input with the source class to <= 1e-4; DDIM inversion does not (its error is printed, > 1e-3); panels written."""
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        shutil.copy(ASSETS / "cifar10" / f"{name}_0000.jpg", tmp_path / "data" / name)
    r = cli("bench.class_edits", "--data", tmp_path / "data", "--pairs", "cat:dog", "--n", 1, "--steps", 6,
            "--skips", 2, "--cfgs", 2, "--panel-skip", 2, "--figures", tmp_path / "figs", "--threads", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(s for s in r.stdout.splitlines() if s.strip().startswith("skip 2:"))
    errs = {k: float(v) for k, v in (part.split() for part in line.split(":", 1)[1].split(","))}
    assert errs["edit_friendly"] <= 1e-4 and errs["dpm_encoder"] <= 1e-4 and errs["ddim"] > 1e-3
    assert (tmp_path / "figs" / "class_edits.png").exists() and (tmp_path / "figs" / "class_edits_methods.png").exists()
    assert "| ddim | 2 | 2 |" in r.stdout
