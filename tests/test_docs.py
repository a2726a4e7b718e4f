"""docs/math.md names real functions; the figure script runs in its reduced mode."""
import importlib
import re

import pytest
import torch

from conftest import ROOT, cli


def test_every_function_named_in_math_md_exists():
    text = (ROOT / "docs" / "math.md").read_text()
    names = sorted(set(re.findall(r"`(ddpm\.[a-z_]+\.[A-Za-z_]+(?:\.[A-Za-z_]+)?)`", text)))
    assert len(names) >= 30
    for name in names:
        parts = name.split(".")
        obj = importlib.import_module(".".join(parts[:2]))
        for attr in parts[2:]:
            assert hasattr(obj, attr), f"docs/math.md names {name}, which does not exist"
            obj = getattr(obj, attr)


@pytest.mark.slow
def test_figure_script_regenerates_every_figure_in_reduced_mode(tmp_path, tiny_ckpt):
    r = cli("bench.figures", "--quick", "--ckpt", tiny_ckpt, "--out", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"map_stats_var.png", "map_stats_corr.png", "maps.png", "trajectory.png", "recon_error.png",
                     "shift_sweep.png", "color_sweep.png"}


def test_the_walkthrough_runs_and_reconstructs_exactly(tmp_path, capsys):
    """docs/walkthrough.py end to end on the shipped model (S = 20): its hand-written step matches the library, the
    reconstruction is 8-bit identical, the perturbed one is not, and it writes its three pictures."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("walkthrough", ROOT / "docs" / "walkthrough.py")
    walkthrough = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(walkthrough)
    walkthrough.main(["--out", str(tmp_path), "--steps", "20"])
    text = capsys.readouterr().out
    assert "8-bit identical: True" in text and "the hand-written one: True" in text
    assert {p.name for p in tmp_path.glob("*.png")} == {"1_forward.png", "3_maps.png", "5_edits.png"}


def test_image_grid_takes_rows_of_different_sizes_with_and_without_matplotlib(tmp_path, monkeypatch):
    """The demo's panel mixes 32x32 CIFAR-10 rows with 64x64 face rows: the labelled grid draws both, and the plain
    fallback (no matplotlib) upscales every tile to 4x the largest: 2 x 3 tiles of 256 pixels (plus padding)."""
    from PIL import Image

    from bench import figures

    rows = {"small": torch.zeros(3, 3, 32, 32), "large": torch.ones(3, 3, 64, 64)}
    figures.image_grid(tmp_path / "labelled.png", rows, ["a", "b", "c"], "caption")
    assert Image.open(tmp_path / "labelled.png").size[0] > 0

    def no_matplotlib():
        raise ImportError("matplotlib")

    monkeypatch.setattr(figures, "plt", no_matplotlib)
    figures.image_grid(tmp_path / "plain.png", rows, ["a", "b", "c"], "caption")
    with Image.open(tmp_path / "plain.png") as im:
        width, height = im.size
    assert 3 * 256 <= width < 4 * 256 and 2 * 256 <= height < 3 * 256  # plus the grid's padding
