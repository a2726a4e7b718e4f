"""Every entry point answers bad input with one line `error: ...`, exit code 2, no traceback, and
leaves existing files untouched; untrusted files never run code."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.checkpoint import CheckpointError, save_model
from ddpm.images import load_image
from ddpm.models import load_model
from ddpm.noisemap import invert_to_maps, save_maps

from conftest import ASSETS, ROOT, cli, seeded_unet

CAT = str(ASSETS / "cifar10" / "cat_0000.jpg")


def assert_error(r, pattern):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and pattern in lines[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.fixture
def maps_file(tmp_path, tiny_ckpt):
    m, _ = invert_to_maps(load_model(tiny_ckpt), load_image(CAT, 32)[None], S=5, progress=False)
    path = tmp_path / "maps.npz"
    save_maps(path, m)
    return path


def invert(ckpt, out, *extra, image=CAT):
    return cli("invert", "--ckpt", ckpt, "--image", image, "--steps", 5, "--out", out, "--no-progress", *extra)


@pytest.mark.parametrize("command", [["invert.py"], ["edit.py"], ["train.py", "--preset", "tiny"],
                                     ["-m", "ddpm.sample"], ["-m", "ddpm.verify"], ["bench/quality.py"]])
def test_each_command_in_a_real_process_exits_2_with_one_line_error(tmp_path, command):
    """The real command line (not `cli`'s in-process run): a missing checkpoint or data folder gives exit code 2,
    one line `error: ...` naming the file, no traceback; a bench runs as a file (`python bench/quality.py`, as the
    cards quote it) as well as a module."""
    missing = tmp_path / "missing"
    name = command[1] if command[0] == "-m" else command[0]
    args = {"invert.py": ["--ckpt", missing, "--image", CAT, "--out", tmp_path / "m.npz"],
            "edit.py": [missing, "--ckpt", missing, "--out", tmp_path / "e.png"],
            "train.py": ["--data", missing, "--out", tmp_path / "run"],
            "ddpm.sample": ["--ckpt", missing, "--out", tmp_path / "g.png"],
            "ddpm.verify": [missing, "--ckpt", missing],
            "bench/quality.py": ["--ckpt", missing, "--real", missing, "--ref", missing]}[name]
    r = subprocess.run([sys.executable, *command, *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    assert_error(r, "missing")


def test_missing_corrupt_and_truncated_images(tmp_path, tiny_ckpt):
    out = tmp_path / "m.npz"
    assert_error(invert(tiny_ckpt, out, image=tmp_path / "nope.png"), "no such image file")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    assert_error(invert(tiny_ckpt, out, image=tmp_path / "junk.png"), "not a readable image")
    data = open(CAT, "rb").read()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    assert_error(invert(tiny_ckpt, out, image=tmp_path / "cut.jpg"), "not a readable image")
    assert not out.exists()


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_modes_are_converted_with_a_warning(tmp_path, mode):
    path = tmp_path / f"img_{mode}.png"
    Image.open(CAT).convert(mode).save(path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        x = load_image(path, 32)
    assert x.shape == (3, 32, 32) and any("converted to RGB" in str(m.message) for m in w)


def test_other_sizes_are_resized_with_a_warning_or_refused_in_strict_mode(tmp_path, tiny_ckpt):
    face = ASSETS / "celeba" / "000001.jpg"
    r = invert(tiny_ckpt, tmp_path / "m.npz", image=face)
    assert r.returncode == 0 and "resized to 32x32" in r.stderr
    assert_error(invert(tiny_ckpt, tmp_path / "s.npz", "--strict", image=face), "not the model's 32x32")


def test_out_of_range_arguments(tmp_path, tiny_ckpt, maps_file):
    out = tmp_path / "m.npz"
    assert_error(cli("invert", "--ckpt", tiny_ckpt, "--image", CAT, "--steps", 1001, "--out", out), "--steps")
    assert_error(invert(tiny_ckpt, out, "--skip", 5), "--skip must be between 0 and 4")
    assert_error(invert(tiny_ckpt, out, "--chunk", 0), "--chunk must be >= 1")
    r = cli("edit", maps_file, "--ckpt", tiny_ckpt, "--shift", -40, 0, "--out", tmp_path / "e.png")
    assert_error(r, "smaller than the image")


def test_checkpoint_of_another_architecture_and_truncated_checkpoints(tmp_path, tiny_ckpt):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(tiny_ckpt), "pt") as f:
        meta = f.metadata()
    meta["config"] = json.dumps(seeded_unet("cifar10-cpu").cfg.to_dict())
    other = tmp_path / "other.safetensors"
    save_file(load_file(str(tiny_ckpt)), str(other), metadata=meta)
    with pytest.raises(CheckpointError, match="missing .*shape mismatch|shape mismatch|missing"):
        load_model(other)
    assert_error(invert(other, tmp_path / "m.npz"), "weights do not match its config")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_ckpt.read_bytes()[:5000])
    assert_error(invert(cut, tmp_path / "m.npz"), "truncated or corrupt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert_error(invert(tmp_path / "bad.pt", tmp_path / "m.npz"), "cannot be read safely")


def test_a_pickle_carrying_code_is_refused(tmp_path):
    """torch.load(weights_only=True) refuses a checkpoint whose pickle would call os.system."""
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"config": {}, "ema": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_model(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def rewrite(src, dst, **changes):
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(dst, **arrays)
    return dst


def test_bad_noise_map_files(tmp_path, tiny_ckpt, maps_file):
    verify = lambda f, *a: cli("ddpm.verify", f, "--ckpt", tiny_ckpt, "--no-progress", *a)  # noqa: E731
    with np.load(maps_file) as f:
        zs, xT = f["zs"], f["xT"]
    assert_error(verify(rewrite(maps_file, tmp_path / "a.npz", sigmas=None)), "missing key(s) ['sigmas']")
    assert_error(verify(rewrite(maps_file, tmp_path / "b.npz", zs=zs[1:])), "zs has shape")
    assert_error(verify(rewrite(maps_file, tmp_path / "c.npz", format_version=np.int64(2))), "format_version 2")
    assert_error(verify(rewrite(maps_file, tmp_path / "d.npz", model_sha256=np.str_("0" * 64))), "not this one")
    bad = xT.copy()
    bad[0, 0, 0, 0] = np.inf
    assert_error(verify(rewrite(maps_file, tmp_path / "e.npz", xT=bad)), "NaN or Inf")
    (tmp_path / "f.npz").write_bytes(maps_file.read_bytes()[:300])
    assert_error(verify(tmp_path / "f.npz"), "truncated or corrupt")
    r = verify(rewrite(maps_file, tmp_path / "g.npz", model_sha256=np.str_("0" * 64)), "--ignore-sha")
    assert r.returncode == 0


def test_failed_runs_leave_existing_outputs_untouched(tmp_path, tiny_ckpt, maps_file):
    before = maps_file.read_bytes()
    assert_error(invert(tiny_ckpt, maps_file, image=tmp_path / "missing.png"), "no such image")
    assert_error(invert(tiny_ckpt, maps_file, "--skip", 9), "--skip")
    assert maps_file.read_bytes() == before


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from ddpm.files import atomic_write

    path = tmp_path / "ckpt.safetensors"
    save_model(path, seeded_unet("tiny"))
    before = path.read_bytes()

    def fail(tmp):
        open(tmp, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]
