"""noisemap.py: the stored trajectory lets an edit start at its first changed step, bit-identical to the full run;
a trajectory that does not belong to its maps, model or dtype is never used."""
import warnings

import numpy as np
import pytest
import torch

from ddpm import edits
from ddpm.checkpoint import Model
from ddpm.guidance import guided_eps
from ddpm.noisemap import invert_to_maps, load_maps, regenerate, save_maps, shared_steps
from ddpm.schedule import linear_schedule
from ddpm.unet import UNet, UNetConfig

from conftest import ASSETS, seeded_unet, tiny_model

S = 10  # timesteps 900, 800, ..., 0


class Counted:
    """An eps model that counts its network calls (the cost of a regeneration)."""

    def __init__(self, eps):
        self.eps, self.calls = eps, 0

    def __call__(self, x, t):
        self.calls += 1
        return self.eps(x, t)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def maps(model, cifar_images):
    return invert_to_maps(model, cifar_images[:2], S=S, progress=False)[0]


def mask():
    m = torch.zeros(32, 32)
    m[8:24, 4:20] = 1.0
    return m


EDITS = {  # name -> (edit, index of the first step whose map it changes)
    "color t<=200": (lambda m, o: edits.color(m, torch.tensor([0.1, 0.0, -0.1]), t_range=(200, 0)), 7),
    "shift t<=300": (lambda m, o: edits.shift(m, 2, 1, t_range=(300, 0)), 6),
    "resample t<=400": (lambda m, o: edits.resample(m, (400, 0), torch.Generator().manual_seed(1)), 5),
    "paste with mask t<=500": (lambda m, o: edits.paste(m, o, mask(), t_range=(500, 0)), 4),
    "mix all": (lambda m, o: edits.mix(m, o, 0.3), 0),
}


@pytest.mark.parametrize("name", EDITS)
def test_regeneration_from_the_first_changed_step_is_bit_identical_and_skips_the_unchanged_steps(model, maps,
                                                                                                  cifar_images, name):
    """regenerate(edited, reuse=maps) == regenerate(edited) bit for bit, with S - k network calls instead of S,
    k being the first step whose map the edit changes."""
    other = invert_to_maps(model, cifar_images[2:], S=S, seed=1, progress=False)[0]
    edit, k = EDITS[name]
    edited = edit(maps, other)
    assert shared_steps(maps, edited) == k
    full, fast = Counted(model.eps), Counted(model.eps)
    want = regenerate(full, edited, progress=False)
    got = regenerate(fast, edited, progress=False, reuse=maps)
    assert torch.equal(got, want)
    assert (full.calls, fast.calls) == (S, S - k)


def test_unedited_maps_regenerate_from_the_trajectory_with_no_network_call(model, maps):
    """With nothing changed the regeneration is the trajectory's last entry, the inversion's own reconstruction,
    bit-identical to running the sampler (0 calls instead of S)."""
    fast = Counted(model.eps)
    got = regenerate(fast, maps, progress=False, reuse=maps)
    assert fast.calls == 0 and torch.equal(got, regenerate(model.eps, maps, progress=False))
    assert (got - maps.x0).abs().max() <= 1e-4


def test_color_calibration_reusing_the_trajectory_is_bit_identical_and_costs_only_the_color_steps(model, maps):
    """solve_color with reuse gives the same offset and gain bit for bit; its 2 regenerations cost 3 calls each
    (t <= 200 of S = 10) instead of 10."""
    base = regenerate(model.eps, maps, progress=False)
    target = torch.tensor([0.05, 0.0, 0.0])
    full, fast = Counted(model.eps), Counted(model.eps)
    want = edits.solve_color(full, maps, target, base=base)
    got = edits.solve_color(fast, maps, target, base=base, reuse=maps)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert (full.calls, fast.calls) == (2 * S, 2 * 3)


@pytest.mark.parametrize("w", [1.0, 3.0])
def test_class_edit_with_skip_reuses_the_source_steps_bit_identically(cifar_images, w):
    """Class edit (paper sec. 5): maps inverted with class 3 at guidance w; switching to class 5 after skip = 4
    steps equals the full run bit for bit and calls the source model 0 times instead of 4."""
    torch.manual_seed(0)
    unet = UNet(UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, dropout=0.0, num_classes=10)).eval()
    model = Model(unet, linear_schedule(), sha256="cond")
    src = guided_eps(unet, torch.tensor([3, 3]), w)
    maps = invert_to_maps(model, cifar_images[:2], S=S, eps_model=src, progress=False,
                          extra={"class_label": torch.tensor([3, 3]), "cfg_scale": w})[0]
    tgt = guided_eps(unet, torch.tensor([5, 5]), w)
    src_full, src_fast = Counted(src), Counted(src)
    want = edits.regenerate_switched(src_full, tgt, maps, 4)
    got = edits.regenerate_switched(src_fast, tgt, maps, 4, reuse=maps)
    assert torch.equal(got, want) and (src_full.calls, src_fast.calls) == (4, 0)
    shifted = edits.shift(maps, 1, 0, t_range=(700, 0))  # changes step 2 < skip: the source runs steps 2, 3
    src_fast.calls = 0
    got = edits.regenerate_switched(src_fast, tgt, shifted, 4, reuse=maps)
    assert torch.equal(got, edits.regenerate_switched(src, tgt, shifted, 4)) and src_fast.calls == 2


def test_two_model_switch_reuses_model_a_steps_bit_identically(model, maps):
    """CycleDiffusion switch: model A's first 6 steps come from the trajectory, model B runs the rest; equal to the
    full run bit for bit."""
    b = seeded_unet("tiny", seed=1)
    want = edits.regenerate_switched(model.eps, b, maps, 6)
    fast = Counted(model.eps)
    assert torch.equal(edits.regenerate_switched(fast, b, maps, 6, reuse=maps), want) and fast.calls == 0


def test_the_trajectory_round_trips_through_the_file_and_an_edited_file_loses_it(maps, tmp_path):
    """The optional trajectory key survives save/load; a file whose zs were changed afterwards (trajectory_sha256
    no longer matches) loads with a warning and without a trajectory; --no-trajectory files have none."""
    path = tmp_path / "m.npz"
    save_maps(path, maps)
    back = load_maps(path)
    assert torch.equal(back.trajectory, maps.trajectory)
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    data["zs"] = data["zs"] + np.float32(1e-3)
    np.savez(tmp_path / "edited.npz", **data)
    with pytest.warns(UserWarning, match="does not belong to its maps"):
        assert load_maps(tmp_path / "edited.npz").trajectory is None
    save_maps(path, maps.replace())  # replace() drops it: a changed copy has no known trajectory
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_maps(path).trajectory is None


def test_a_trajectory_never_crosses_dtypes(maps):
    """A float32 trajectory is dropped when the maps move to float64 (its values are not the float64 sampler's)."""
    assert maps.to("cpu", torch.float32).trajectory is not None
    assert maps.to("cpu", torch.float64).trajectory is None


def test_edit_py_uses_the_trajectory_only_for_its_own_model(tmp_path, monkeypatch):
    """edit.py --color gives byte-identical PNGs from a file with and without a trajectory, at 3 x 3 network calls
    (3 regenerations of the 3 steps with t <= 200) instead of 4 x 10; with another model (--ignore-sha) the
    trajectory is not used, so the result is that model's full regeneration."""
    import edit
    import invert

    from ddpm.checkpoint import save_model
    from ddpm.images import load_image
    from ddpm.models import load_model

    calls = []
    forward = UNet.forward
    monkeypatch.setattr(UNet, "forward", lambda self, *a: calls.append(1) or forward(self, *a))
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(a, seeded_unet("tiny", seed=0))
    save_model(b, seeded_unet("tiny", seed=1))
    cat = ASSETS / "cifar10" / "cat_0000.jpg"
    for name, extra in (("with", []), ("without", ["--no-trajectory"])):
        invert.main(["--ckpt", str(a), "--image", str(cat), "--steps", "10", "--out", str(tmp_path / f"{name}.npz"),
                     "--no-progress", *extra])
        calls.clear()
        edit.main([str(tmp_path / f"{name}.npz"), "--ckpt", str(a), "--color", "0.1", "0", "0", "--out",
                   str(tmp_path / f"{name}.png"), "--no-progress"])
        assert len(calls) == {"with": 9, "without": 40}[name]
    assert load_maps(tmp_path / "with.npz").trajectory is not None
    assert load_maps(tmp_path / "without.npz").trajectory is None
    assert (tmp_path / "with.png").read_bytes() == (tmp_path / "without.png").read_bytes()
    edit.main([str(tmp_path / "with.npz"), "--ckpt", str(b), "--ignore-sha", "--out", str(tmp_path / "b.png"),
               "--no-progress"])
    m = load_maps(tmp_path / "with.npz")
    want = regenerate(load_model(b).eps, m, progress=False)
    assert (load_image(tmp_path / "b.png", 32) - want.clamp(-1, 1)).abs().max() <= 1 / 127.5
    assert (want - m.x0).abs().max() > 0.05  # negative control: model B's regeneration is another image
