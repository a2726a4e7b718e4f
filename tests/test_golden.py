"""The committed golden vectors (tests/golden/): what another implementation checks itself against."""
import json

import torch

from ddpm.images import load_image
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, load_maps

from conftest import ROOT, cli

GOLDEN = ROOT / "tests" / "golden"


def test_golden_file_verifies_against_the_golden_model_float64_and_float32():
    """python -m ddpm.verify passes at 1e-10 in float64 and at 1e-4 in float32."""
    for dtype, tol in (("float64", "1e-10"), ("float32", "1e-4")):
        r = cli("ddpm.verify", GOLDEN / "maps.npz", "--ckpt", GOLDEN / "tiny.safetensors", "--dtype", dtype, "--tol",
                tol, "--no-progress")
        assert r.returncode == 0, r.stdout + r.stderr


def test_this_build_regenerates_the_golden_maps():
    """Same model, image, seed and settings give the committed maps (to 1e-9: other CPUs round differently)."""
    exp = json.loads((GOLDEN / "expected.json").read_text())
    model = load_model(GOLDEN / "tiny.safetensors").to("cpu", torch.float64)
    assert model.sha256 == exp["model_sha256"]
    x0 = load_image(GOLDEN / "input.png", 32)[None].double()
    maps, _ = invert_to_maps(model, x0, S=exp["steps"], seed=exp["seed"], method=exp["method"], progress=False)
    gold = load_maps(GOLDEN / "maps.npz")
    assert torch.equal(gold.x0, x0) and torch.equal(gold.timesteps, maps.timesteps)
    torch.testing.assert_close(maps.zs, gold.zs, rtol=0, atol=1e-9)
    torch.testing.assert_close(maps.xT, gold.xT, rtol=0, atol=1e-12)
