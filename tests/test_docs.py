"""docs/math.md names real functions; the figure script runs in its reduced mode."""
import importlib
import re

import pytest

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
