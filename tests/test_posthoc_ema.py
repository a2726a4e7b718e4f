"""bench/posthoc_ema.py: the quadrature weights of the exponential EMA profile, and the averaged model file."""
import math

import pytest
import torch
from safetensors.torch import load_file

from bench.posthoc_ema import posthoc_weights
from ddpm.checkpoint import save_model
from ddpm.models import load_model

from conftest import cli, seeded_unet


def test_posthoc_weights_are_the_trapezoid_rule_times_the_exponential_kernel():
    """Evenly spaced snapshots with an infinitely long EMA get the trapezoid weights 1/4, 1/2, 1/4; with tau = 1000
    the middle and newest weights are in the ratio 2 exp(-1): 1 (twice the span, one tau older); weights sum to 1, a
    single snapshot gets 1, and unsorted steps are refused."""
    assert posthoc_weights([0, 1000, 2000], 1e15) == pytest.approx([0.25, 0.5, 0.25])
    w = posthoc_weights([0, 1000, 2000], 1000)
    assert sum(w) == pytest.approx(1) and w[1] / w[2] == pytest.approx(2 * math.exp(-1))
    assert posthoc_weights([5], 10) == [1.0]
    with pytest.raises(ValueError, match="ascending"):
        posthoc_weights([2000, 1000], 1000)


def test_the_averaged_file_is_the_weighted_mean_of_its_snapshots_and_loads(tmp_path):
    """Two files of one network at steps 0 and 1000, tau huge: every tensor of the output is their mean (to float32
    rounding) and it loads as a model; another network's file (read from git history as REV:PATH) is refused with
    exit 2 and a one-line error."""
    a, b, out = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "avg.safetensors"
    save_model(a, seeded_unet("tiny", seed=0))
    save_model(b, seeded_unet("tiny", seed=1))
    r = cli("bench.posthoc_ema", f"{b}@1000", f"{a}@0", "--tau", "1e15", "--out", out)
    assert r.returncode == 0 and "0: 0.500, 1000: 0.500" in r.stdout, r.stderr
    A, B, M = load_file(a), load_file(b), load_file(out)
    assert max((M[k] - (A[k] + B[k]) / 2).abs().max().item() for k in A) < 1e-6
    assert load_model(out).unet.cfg == seeded_unet("tiny").cfg
    r = cli("bench.posthoc_ema", f"{a}@0", "HEAD:checkpoints/celeba64-cpu.safetensors@1000", "--out", out)
    assert r.returncode == 2 and "another network config" in r.stderr, r.stderr
