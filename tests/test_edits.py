"""edits.py: pure functions on noise maps, with the documented shapes; edit.py regenerates exactly with no edit."""

import pytest
import torch

from ddpm import edits
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, save_maps

from conftest import cli, tiny_model


@pytest.fixture(scope="module")
def maps(cifar_images):
    return invert_to_maps(tiny_model(), cifar_images[:2], S=10, progress=False)[0]


def same(a, b):
    return torch.equal(a.xT, b.xT) and torch.equal(a.zs, b.zs)


def test_zero_shift_and_zero_color_leave_maps_bit_identical(maps):
    assert same(edits.shift(maps, 0, 0), maps)
    assert same(edits.color(maps, torch.zeros(3)), maps)


@pytest.mark.parametrize("fill", edits.FILLS)
def test_shift_then_unshift_restores_all_but_the_border(maps, fill):
    """shift(dx, dy) then shift(-dx, -dy) restores the maps except the |dx|, |dy| border; shapes/dtypes kept."""
    g = torch.Generator().manual_seed(0)
    back = edits.shift(edits.shift(maps, 3, -2, fill=fill, generator=g), -3, 2, fill=fill, generator=g)
    assert back.zs.shape == maps.zs.shape and back.zs.dtype == maps.zs.dtype
    inner = (..., slice(2, -2), slice(3, -3))
    assert torch.equal(back.zs[inner], maps.zs[inner]) and torch.equal(back.xT[inner], maps.xT[inner])


def test_shift_moves_content_right_and_down(maps):
    s = edits.shift(maps, 2, 1, fill="zeros")
    assert torch.equal(s.zs[..., 1:, 2:], maps.zs[..., :-1, :-2])
    assert (s.zs[..., :, :2] == 0).all() and (s.zs[..., :1, :] == 0).all()


def test_color_adds_the_offset_only_inside_mask_and_t_range(maps):
    mask = torch.zeros(32, 32)
    mask[8:16, 8:16] = 1
    out = edits.color(maps, torch.tensor([0.5, 0.0, -0.5]), mask=mask, t_range=(500, 0))
    sel = edits.selected(maps, (500, 0))
    d = out.zs - maps.zs
    assert sel.any() and not sel.all()
    assert (d[~sel] == 0).all() and torch.equal(out.xT, maps.xT)  # x_T (t=900) is outside the range
    torch.testing.assert_close(d[sel][:, :, 0, 8:16, 8:16], torch.full_like(d[sel][:, :, 0, 8:16, 8:16], 0.5))
    assert (d[sel][..., mask == 0] == 0).all() and (d[sel][:, :, 1] == 0).all()


def test_paste_takes_the_other_maps_inside_the_mask_only(maps):
    other = maps.replace(xT=torch.randn_like(maps.xT), zs=torch.randn_like(maps.zs))
    mask = torch.zeros(32, 32)
    mask[:, :16] = 1
    out = edits.paste(maps, other, mask)
    assert torch.equal(out.zs[..., :16], other.zs[..., :16]) and torch.equal(out.zs[..., 16:], maps.zs[..., 16:])
    assert torch.equal(out.xT[..., :16], other.xT[..., :16])


def test_mix_endpoints_and_resample_range(maps):
    other = maps.replace(zs=torch.randn_like(maps.zs), xT=torch.randn_like(maps.xT))
    assert same(edits.mix(maps, other, 0.0), maps) and same(edits.mix(maps, other, 1.0), other)
    r = edits.resample(maps, (300, 0), torch.Generator().manual_seed(0))
    sel = edits.selected(maps, (300, 0))
    assert torch.equal(r.zs[~sel], maps.zs[~sel]) and not torch.equal(r.zs[sel], maps.zs[sel])


def test_bad_edit_arguments_are_refused(maps):
    with pytest.raises(ValueError, match="smaller than the image"):
        edits.shift(maps, 40, 0)
    with pytest.raises(ValueError, match="3 values"):
        edits.color(maps, torch.zeros(2))
    with pytest.raises(ValueError, match="HI >= LO"):
        edits.selected(maps, (0, 100))


def test_edit_py_without_edit_reproduces_x0_and_color_hits_its_target(tmp_path, tiny_ckpt, cifar_images):
    """edit.py with no edit regenerates x0 within 1e-4; --color 0.2 0 0 changes the red mean by ~0.2 (+-0.03)."""
    model = load_model(tiny_ckpt)
    maps, _ = invert_to_maps(model, cifar_images[:2], S=10, progress=False)
    save_maps(tmp_path / "m.npz", maps)
    base = ["edit", tmp_path / "m.npz", "--ckpt", tiny_ckpt, "--no-progress"]
    r = cli(*base, "--out", tmp_path / "same.png", "--save-maps", tmp_path / "same.npz")
    assert r.returncode == 0, r.stderr
    err = float(r.stdout.split("inverted image ")[1].split()[0])
    assert err <= 1e-4 and (tmp_path / "same_0.png").exists() and (tmp_path / "same_1.png").exists()
    r = cli(*base, "--color", 0.2, 0, 0, "--out", tmp_path / "red.png")
    assert r.returncode == 0, r.stderr
    measured = [float(v) for v in r.stdout.split("measured mean change [")[1].split("]")[0].split(",")]
    assert abs(measured[0] - 0.2) < 0.03 and abs(measured[1]) < 0.03
