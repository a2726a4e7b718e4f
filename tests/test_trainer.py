"""trainer.py / train.py: data formats, learning, exact resume (also after SIGTERM and SIGKILL), EMA, DDP."""
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ddpm.checkpoint import load_training_checkpoint
from ddpm.data import DataError, load_dataset
from ddpm.trainer import ema_decay_at, ema_update, seed_for
from ddpm.unet import PRESETS, UNet

from conftest import ASSETS, ROOT, cli

FAST = ["--preset", "tiny", "--batch", "4", "--workers", "0", "--sample-steps", "2", "--eval-images", "4",
        "--log-every", "1", "--warmup", "1", "--lr", "1e-3", "--threads", "1"]


def train(*args, check=True):
    """train.py in this process (`cli`); the kill and torchrun tests start real processes."""
    r = cli("train", *FAST, *args)
    if check:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def cifar_py(tmp_path_factory):
    """A fabricated CIFAR-10 python folder (cifar-10-batches-py), 16 images per batch, written with pickle."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (16, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 16).tolist()}, f, protocol=2)
    return root


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageFolder tree of the real shipped CIFAR-10 test images, two classes."""
    root = tmp_path_factory.mktemp("imgs")
    for k, f in enumerate(sorted((ASSETS / "cifar10").glob("*.jpg"))):
        (root / f"class{k % 2}").mkdir(exist_ok=True)
        shutil.copy(f, root / f"class{k % 2}" / f.name)
    return root


KILL_ARGS = ["--ckpt-every", "4", "--sample-every", "0"]


@pytest.fixture(scope="module")
def uninterrupted_40(image_folder, tmp_path_factory):
    """40 steps in one go: the kill tests' reference and the overfitting test's log."""
    out = tmp_path_factory.mktemp("uninterrupted")
    train("--data", image_folder, *KILL_ARGS, "--out", out, "--steps", 40)
    return out


def weights(out):
    return load_training_checkpoint(sorted(out.glob("ckpt_*.pt"))[-1])


def test_cifar_python_folder_loads_and_trains(cifar_py, tmp_path):
    ds = load_dataset(cifar_py, 32)
    x, y = ds[0]
    assert len(ds) == 80 and x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1 and 0 <= y < 10
    train("--data", cifar_py, "--out", tmp_path / "run", "--steps", 2)
    assert (tmp_path / "run" / "ema.safetensors").exists() and (tmp_path / "run" / "samples_00000002.png").exists()


def test_cifar_reader_refuses_a_pickle_that_carries_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    for name in [f"data_batch_{k}" for k in range(1, 6)]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(DataError, match="refused to unpickle"):
        load_dataset(tmp_path, 32)
    assert not (tmp_path / "pwned").exists()


def test_image_folder_trains_and_logs_progress(image_folder, tmp_path):
    train("--data", image_folder, "--eval-data", image_folder, "--out", tmp_path / "run", "--steps", 3)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "grad_norm", "images_per_s"} <= set(log[0])
    final = log[-1]
    assert final["step"] == 3 and np.isfinite(final["bits_per_dim"]) and final["bits_per_dim_ci95"] > 0


def test_a_run_ending_on_a_milestone_makes_its_last_figures_once(image_folder, tmp_path):
    """--steps 4 with held-out figures, grids and checkpoints every 2 steps: one held-out record per step (2 and 4;
    finish() makes the last step's, the milestone does not repeat it), and the last step's checkpoint is saved."""
    train("--data", image_folder, "--eval-data", image_folder, "--out", tmp_path / "run", "--steps", 4,
          "--eval-every", 2, "--sample-every", 2, "--ckpt-every", 2)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "bits_per_dim" in r] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt_*.pt")) == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert {p.name for p in (tmp_path / "run").glob("samples_*.png")} == {"samples_00000002.png", "samples_00000004.png"}


def test_loss_decreases_when_overfitting_a_few_images(uninterrupted_40):
    """L_simple on 9 real images, 40 steps: the mean of the last 15 logged losses < 60% of the first 15."""
    losses = [r["loss"] for r in map(json.loads, (uninterrupted_40 / "log.jsonl").read_text().splitlines())
              if "loss" in r]
    assert np.mean(losses[-15:]) < 0.6 * np.mean(losses[:15])


def test_loss_weighting_reaches_the_training_loss(image_folder, tmp_path):
    """--loss reaches the loss the trainer minimises: from the same seed (same images, t and eps) the first step's
    loss with p2 (lambda_t = 1 - alpha_bar_t < 1 at every t, diffusion.loss_weight) is below L_simple's; an unknown
    weighting is refused before training."""
    first = {}
    for name in ("simple", "p2"):
        train("--data", image_folder, "--out", tmp_path / name, "--steps", 1, "--loss", name, "--eval-images", 1)
        first[name] = json.loads((tmp_path / name / "log.jsonl").read_text().splitlines()[0])["loss"]
    assert first["p2"] < first["simple"]
    r = train("--data", image_folder, "--out", tmp_path / "bad", "--loss", "l1", check=False)
    assert r.returncode != 0 and "choose from simple, p2, min-snr" in r.stderr


@pytest.fixture(scope="module")
def six_and_three(image_folder, tmp_path_factory):
    """Runs of 6 steps and of 3 steps, same flags: the resume tests' reference and starting point."""
    root = tmp_path_factory.mktemp("six_and_three")
    train("--data", image_folder, "--out", root / "a", "--steps", 6)
    train("--data", image_folder, "--out", root / "b", "--steps", 3)
    return root / "a", root / "b"


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(image_folder, six_and_three, tmp_path):
    """6 steps in one go == 3 steps, then --resume to 6: model, EMA and optimizer bit-identical."""
    shutil.copytree(six_and_three[1], tmp_path / "b")
    train("--data", image_folder, "--out", tmp_path / "b", "--steps", 6, "--resume")
    a, b = weights(six_and_three[0]), weights(tmp_path / "b")
    assert a["step"] == b["step"] == 6
    for part in ("model", "ema"):
        assert all(torch.equal(v, b[part][k]) for k, v in a[part].items()), part
    at3 = load_training_checkpoint(tmp_path / "b" / "ckpt_00000003.pt")  # the steps did change the weights
    assert not all(torch.equal(v, at3["model"][k]) for k, v in a["model"].items())


def test_the_committable_train_state_continues_like_resume_and_a_warm_start_does_not(image_folder, six_and_three,
                                                                                      tmp_path):
    """6 steps in one go vs 3 steps, then --init <run>/ema.train-state.safetensors into a new folder to 6: the
    continued run is at the same step and data position and ends within float16/bfloat16 rounding of the
    uninterrupted run: its weights' L2 distance to them is under 1% of a warm start's (--init of the EMA file, fresh
    Adam), and the median weight is within 1e-5 (Adam's near-sign updates where g ~ 0 amplify a few roundings)."""
    b = six_and_three[1]
    train("--data", image_folder, "--out", tmp_path / "c", "--steps", 6, "--init", b / "ema.train-state.safetensors")
    train("--data", image_folder, "--out", tmp_path / "w", "--steps", 3, "--init", b / "ema.safetensors")
    a, c, w = weights(six_and_three[0]), weights(tmp_path / "c"), weights(tmp_path / "w")
    assert c["step"] == 6 and (c["epoch"], c["pos"]) == (a["epoch"], a["pos"])
    assert [json.loads(r)["step"] for r in (tmp_path / "c" / "log.jsonl").read_text().splitlines()][0] == 4

    def diff(x, y):
        return torch.cat([(x["model"][k] - y["model"][k]).flatten() for k in x["model"]]).abs()

    assert diff(a, c).norm() < 0.01 * diff(a, w).norm() and diff(a, c).median() < 1e-5, (diff(a, c), diff(a, w))


def test_a_continued_run_keeps_its_data_order_whatever_its_seed(image_folder, six_and_three, tmp_path):
    """--seed seeds new runs only: 3 steps, then --resume to 6 with --seed 5 is bit-identical to 6 steps in one go
    (another data order would change the batches of steps 4-6), and says that it kept the run's streams; the train
    state continued with --seed 5 ends bit-identical to the one continued with its own seed."""
    shutil.copytree(six_and_three[1], tmp_path / "b")
    r = train("--data", image_folder, "--out", tmp_path / "b", "--steps", 6, "--resume", "--seed", 5)
    assert "keeps its random streams and data order (data seed 0)" in r.stderr
    a, b = weights(six_and_three[0]), weights(tmp_path / "b")
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    state = six_and_three[1] / "ema.train-state.safetensors"
    for seed in (0, 5):
        train("--data", image_folder, "--out", tmp_path / f"s{seed}", "--steps", 6, "--init", state, "--seed", seed)
    s0, s5 = weights(tmp_path / "s0"), weights(tmp_path / "s5")
    assert s5["data_seed"] == 0 and all(torch.equal(v, s5["model"][k]) for k, v in s0["model"].items())


def test_a_train_state_beside_other_ema_weights_is_refused(image_folder, six_and_three, tmp_path):
    """A train-state file whose EMA file is missing, or is not the one it was saved with: a one-line error."""
    state = six_and_three[1] / "ema.train-state.safetensors"
    (tmp_path / "x").mkdir()
    shutil.copy(state, tmp_path / "x" / state.name)
    r = train("--data", image_folder, "--out", tmp_path / "c", "--steps", 9, "--init", tmp_path / "x" / state.name,
              check=False)
    assert r.returncode != 0 and "are missing; put the pair side by side" in r.stderr
    shutil.copy(six_and_three[0] / "ema.safetensors", tmp_path / "x")  # the 6-step run's EMA weights
    r = train("--data", image_folder, "--out", tmp_path / "c", "--steps", 9, "--init", tmp_path / "x" / state.name,
              check=False)
    assert r.returncode != 0 and "use the pair saved together" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_restart_bench_finds_the_train_state_near_the_resumed_run_and_the_warm_start_far(image_folder, six_and_three):
    """bench.restart from the 3-step checkpoint, 3 steps per way: the train state ends under 1% of the warm start's
    distance from the resumed run, for the raw and for the EMA weights."""
    r = cli("bench.restart", "--ckpt", six_and_three[1] / "ckpt_00000003.pt", "--data", image_folder, "--k", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split("raw")[0].strip(): [float(x) for x in re.findall(r"weights\s+([\d.]+)", line)]
            for line in r.stdout.splitlines() if "raw weights" in line}
    assert all(s < 0.01 * w for s, w in zip(rows["train state"], rows["warm start"])), r.stdout


def start_until_checkpoint(args: list[str], out, **popen) -> subprocess.Popen:
    """train.py with `args` in a subprocess, returned once its first checkpoint in `out` exists (and 1 s more)."""
    p = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, **popen)
    deadline = time.time() + 120
    while not list(out.glob("ckpt_*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    return p


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_training_resumes_to_identical_weights(image_folder, uninterrupted_40, tmp_path, sig):
    """A run killed mid-way (SIGTERM: saves on the spot; SIGKILL: loses the steps since the last checkpoint)
    and resumed ends with the same weights as an uninterrupted run."""
    args = ["--data", image_folder, *KILL_ARGS]
    out = tmp_path / "b"
    p = start_until_checkpoint([*FAST, *map(str, args), "--out", str(out), "--steps", "400"], out)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if sig == signal.SIGTERM:
        assert p.returncode == 128 + signal.SIGTERM and "continue with --resume" in err
    stopped = weights(out)["step"]
    assert 0 < stopped < 40, stopped
    train(*args, "--out", out, "--steps", 40, "--resume")
    a, b = weights(uninterrupted_40), weights(out)
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    # the log holds one record per step, as the uninterrupted run's: the killed run's records after its checkpoint go
    steps = [[(r["step"], r["loss"]) for r in map(json.loads, (d / "log.jsonl").read_text().splitlines()) if "loss" in r]
             for d in (uninterrupted_40, out)]
    assert steps[0] == steps[1] and len(steps[1]) == 40


def test_a_signal_during_the_held_out_figures_still_saves_that_step(image_folder, tmp_path, monkeypatch):
    """SIGTERM that arrives while the held-out figures of step 2 are computed (minutes at 64x64; checkpoints are due
    every 100 steps): the run still saves step 2 and exits 128 + 15, and --resume continues from step 2."""
    from ddpm.trainer import TrainLoop

    evaluate = TrainLoop.evaluate

    def evaluate_then_signal(self):
        result = evaluate(self)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(TrainLoop, "evaluate", evaluate_then_signal)
    args = ["--data", image_folder, "--out", tmp_path / "run", "--ckpt-every", 100, "--sample-every", 0,
            "--eval-every", 2, "--eval-images", 1]
    r = train(*args, "--steps", 400, check=False)
    assert r.returncode == 128 + signal.SIGTERM and "continue with --resume" in r.stderr, r.stderr[-1500:]
    assert [p.name for p in (tmp_path / "run").glob("ckpt_*.pt")] == ["ckpt_00000002.pt"]
    monkeypatch.setattr(TrainLoop, "evaluate", evaluate)
    train(*args, "--steps", 3, "--resume")
    assert weights(tmp_path / "run")["step"] == 3


def test_sigterm_to_the_whole_process_group_still_saves(image_folder, tmp_path):
    """`pkill -f train.py`, Ctrl-C or a container stop signal the data workers too: with --workers 1, SIGTERM sent to
    the process group still ends in a checkpoint at the current step and exit code 128 + 15 (workers ignore it)."""
    out = tmp_path / "run"
    args = [*FAST, "--data", str(image_folder), "--ckpt-every", "4", "--sample-every", "0", "--out", str(out),
            "--steps", "400"]
    args[args.index("--workers") + 1] = "1"
    p = start_until_checkpoint(args, out, start_new_session=True)
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM and "continue with --resume" in err, err[-1500:]


def test_ema_update_matches_its_formula():
    """theta_ema <- d theta_ema + (1 - d) theta, with warm-up d = min(decay, (1 + step) / (10 + step))."""
    torch.manual_seed(0)
    ema, model = UNet(PRESETS["tiny"]), UNet(PRESETS["tiny"])
    before = [p.clone() for p in ema.parameters()]
    d = ema_decay_at(5, 0.9999)
    assert d == pytest.approx(6 / 15) and ema_decay_at(10**6, 0.9999) == 0.9999
    ema_update(ema, model, d)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(e, d * b + (1 - d) * p, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_two_process_gloo_run_finishes_with_agreeing_ranks(image_folder, tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    r = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"), *FAST,
                        "--data", str(image_folder), "--out", str(tmp_path / "ddp"), "--steps", "3"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((tmp_path / "ddp" / "log.jsonl").read_text().splitlines()[-1])
    assert final["ranks_agree"] is True and final["step"] == 3


def test_corrupt_or_mismatched_checkpoint_gives_a_one_line_error(image_folder, tmp_path):
    out = tmp_path / "run"
    train("--data", image_folder, "--out", out, "--steps", 2)
    r = train("--data", image_folder, "--out", out, "--steps", 4, "--resume", "--preset", "cifar10-cpu", check=False)
    assert r.returncode == 2 and "not --preset cifar10-cpu" in r.stderr and "Traceback" not in r.stderr
    ck = sorted(out.glob("ckpt_*.pt"))[-1]
    ck.write_bytes(ck.read_bytes()[:1000])
    r = train("--data", image_folder, "--out", out, "--steps", 4, "--resume", check=False)
    assert r.returncode == 2 and "truncated, corrupt" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_init_from_an_unconditional_model_starts_equal_to_it_for_every_label(image_folder, tmp_path):
    """--class-cond --init UNCOND, one step at lr 0 (so a checkpoint is written, weights unchanged):
    the conditional EMA equals the source model for every label and the null class; the class embedding is zero.
    The sample grid has one row of 8 per class."""
    from ddpm.models import load_model

    train("--data", image_folder, "--out", tmp_path / "src", "--steps", 2)
    src = load_model(tmp_path / "src" / "ema.safetensors").unet
    train("--data", image_folder, "--out", tmp_path / "cond", "--steps", 1, "--lr", 0, "--class-cond",
          "--init", tmp_path / "src" / "ema.safetensors")
    cond = load_model(tmp_path / "cond" / "ema.safetensors").unet
    assert cond.cfg.num_classes == 10 and torch.count_nonzero(cond.class_emb.weight) == 0
    x, t = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 500, 999])
    with torch.no_grad():
        ref = src(x, t)
        for y in (0, 7, 10):
            torch.testing.assert_close(cond(x, t, torch.full((3,), y)), ref, rtol=0, atol=1e-6)
    from PIL import Image
    w, h = Image.open(sorted((tmp_path / "cond").glob("samples_*.png"))[-1]).size
    assert (w, h) == (2 + 8 * 34, 2 + 10 * 34)


def test_init_grows_attention_blocks_that_start_as_identity(image_folder, tmp_path):
    """--init from a model without attention at 32x32 into one with it: the grown model's output equals the source's
    exactly (float64, 0 difference) at every t, the new blocks' proj_out is zero and gets a gradient; the other way
    round (dropping attention blocks) is refused."""
    from dataclasses import replace

    from ddpm.checkpoint import CheckpointError
    from ddpm.models import load_model
    from ddpm.trainer import warm_start

    train("--data", image_folder, "--out", tmp_path / "src", "--steps", 2)
    path = str(tmp_path / "src" / "ema.safetensors")
    src = load_model(path).unet.double()
    grown = UNet(replace(PRESETS["tiny"], attn_resolutions=(16, 32)))
    warm_start(grown, path, "tiny")
    grown.double()
    new = [grown.down[0].attn[0], *grown.up[1].attn]
    assert all(torch.count_nonzero(a.proj_out.weight) == 0 for a in new)
    x, t = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64), \
        torch.tensor([0, 500, 999])
    with torch.no_grad():
        assert torch.equal(grown(x, t), src(x, t))
    grown(x, t).square().mean().backward()
    assert all(a.proj_out.weight.grad.abs().max() > 0 for a in new)
    shrunk = UNet(replace(PRESETS["tiny"], attn_resolutions=()))
    with pytest.raises(CheckpointError, match="does not match --preset tiny"):
        warm_start(shrunk, path, "tiny")


def test_a_train_state_grows_into_two_res_blocks_per_level_with_its_adam_moments(image_folder, tmp_path):
    """--init of a cifar10-cpu train state with --preset cifar10-cpu-2res (ddpm.grow): before its first step the grown
    raw and EMA networks compute exactly the source's (float64, 0 difference) and every source parameter keeps its
    Adam moments while the new ones start without; the run goes on from the source's step and says it grew; a .pt
    checkpoint of another preset (--resume) stays refused."""
    from ddpm.trainer import grow_checkpoint
    from ddpm.trainstate import load_train_state

    train("--data", image_folder, "--out", tmp_path / "src", "--steps", 2, "--preset", "cifar10-cpu")
    state = tmp_path / "src" / "ema.train-state.safetensors"
    src, ck = load_train_state(state), load_train_state(state)
    net = UNet(PRESETS["cifar10-cpu-2res"])
    assert "grown: " in grow_checkpoint(ck, net, state, "cifar10-cpu-2res")
    x, t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64), \
        torch.tensor([10, 900])
    for part in ("model", "ema"):
        a, b = UNet(PRESETS["cifar10-cpu"]).double(), UNet(PRESETS["cifar10-cpu-2res"]).double()
        a.load_state_dict(src[part]), b.load_state_dict(ck[part])
        with torch.no_grad():
            assert torch.equal(a(x, t), b(x, t)), part
    old, new = list(src["model"]), list(ck["model"])
    moved = {new.index(k): old.index(k) for k in ("conv_in.weight", "up.0.res.0.conv1.weight", "mid.1.q.weight")}
    moved[new.index("up.0.res.2.conv1.weight")] = old.index("up.0.res.1.conv1.weight")
    for i, j in moved.items():
        assert torch.equal(ck["opt"]["state"][i]["exp_avg_sq"], src["opt"]["state"][j]["exp_avg_sq"])
    assert new.index("up.0.res.1.conv1.weight") not in ck["opt"]["state"]
    assert len(ck["opt"]["state"]) == len(src["opt"]["state"]) < len(new)
    r = train("--data", image_folder, "--out", tmp_path / "g", "--steps", 3, "--preset", "cifar10-cpu-2res",
              "--init", state)
    assert "grown: " in r.stderr and weights(tmp_path / "g")["step"] == 3
    r = train("--data", image_folder, "--out", tmp_path / "src", "--steps", 3, "--preset", "cifar10-cpu-2res",
              "--resume", check=False)
    assert r.returncode != 0 and "use the same preset" in r.stderr.strip().splitlines()[-1]


def test_init_with_another_architecture_is_refused(image_folder, tmp_path):
    train("--data", image_folder, "--out", tmp_path / "src", "--steps", 1)
    r = train("--data", image_folder, "--out", tmp_path / "b", "--steps", 1, "--preset", "cifar10-cpu",
              "--init", tmp_path / "src" / "ema.safetensors", check=False)
    assert r.returncode == 2 and "does not match --preset cifar10-cpu" in r.stderr.strip().splitlines()[-1]


def test_held_out_figures_of_a_conditional_model_use_the_true_labels_of_every_class(image_folder):
    """held_out() spreads its images over the whole held-out set (an ImageFolder lists class by class) and gives a
    conditional model their true labels: changing the embedding of a held-out label changes the figures, changing
    an unused row (the null class) does not."""
    from dataclasses import replace

    from ddpm.evaluate import held_out
    from ddpm.schedule import linear_schedule

    torch.manual_seed(0)
    unet = UNet(replace(PRESETS["tiny"], num_classes=10)).eval()
    data = load_dataset(image_folder, 32)
    figures = lambda: held_out(unet, linear_schedule(), data, n=4, batch=4,  # noqa: E731
                               generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        unet.class_emb.weight.normal_()
    base = figures()
    with torch.no_grad():
        unet.class_emb.weight[10] += 1.0
    assert figures() == base
    with torch.no_grad():
        unet.class_emb.weight[1] += 1.0
    assert figures()["eval_loss"] != base["eval_loss"]  # class 1 comes after class 0: the subset reaches it


def test_held_out_figures_and_grids_are_the_same_yardstick_for_every_seed():
    """Runs with different --seed compare: the held-out split, the held-out figures' draws and the grids' noise do not
    depend on --seed, while the training streams (init, data order, step noise) do."""
    for stream in ("split", "eval", "samples"):
        assert seed_for(0, stream) == seed_for(14, stream)
    for stream in ("init", "data", "step"):
        assert seed_for(0, stream) != seed_for(14, stream)
