"""bench/curves.py: the training curves come from the committed logs, whose segment lines account for every step."""
import pytest

from bench.curves import LOG_START, ROOT, curves, read_jsonl, steps_in_all
from conftest import cli


def test_steps_in_all_continue_through_a_train_state_and_restart_after_a_fresh_adam():
    """A train-state segment ("step" > 0) keeps counting the run's steps; a fresh-Adam segment ("step": 0) starts
    from the previous run's last held-out record (not its last logged step, which the file it starts from lacks)."""
    log = [{"step": 50, "loss": 1}, {"step": 100, "bits_per_dim": 3}, {"step": 150, "loss": 1},
           {"segment": "fresh Adam from the step-100 file", "step": 0}, {"step": 50, "loss": 1},
           {"step": 60, "bits_per_dim": 3},
           {"segment": "train state of step 60", "step": 60}, {"step": 110, "loss": 1}]
    assert [r["total"] for r in steps_in_all(log, 1000)] == [1050, 1100, 1150, 1150, 1160, 1210]


@pytest.mark.parametrize("name", LOG_START)
def test_every_quality_milestone_is_a_step_of_the_committed_log(name):
    """Every `bench.quality` record after the log's start (its `total_steps`) lands on a record of the log, and the
    last one, the shipped file's, on the log's last held-out record."""
    log = steps_in_all(read_jsonl(ROOT / "checkpoints" / f"{name}.log.jsonl"), LOG_START[name])
    totals = {r["total"] for r in log}
    held_out, quality = curves(name)
    assert len(quality) >= 3
    assert {q["total_steps"] for q in quality} <= totals
    assert quality[-1]["total_steps"] == held_out[-1][0]


def test_the_figure_is_drawn(tmp_path):
    r = cli("bench.curves", "--out", tmp_path / "curves.png")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
