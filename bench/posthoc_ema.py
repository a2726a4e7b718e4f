"""Post-hoc EMA: a longer weight average than the one a model was trained with, from its EMA snapshots alone.

    python -m bench.posthoc_ema --tau 10000 --out runs/posthoc.safetensors \\
        2804aa5:checkpoints/cifar10-cpu-cond.safetensors@89800 checkpoints/cifar10-cpu-cond.safetensors@95800 ...

Each SNAPSHOT is FILE@STEP (STEP: the steps in all at which the file was written); FILE may be REV:PATH, a version
in this repository's git history (`git show`). The runs here keep an EMA of decay 0.999 (a ~1,000-step average);
Ho et al. 2020 (appendix B) use 0.9999 (~10,000 steps). Karras et al. 2024 ("Analyzing and improving the training
dynamics of diffusion models", section 3.2) show that an EMA of another length can be reconstructed after training
from stored snapshots; they solve a least-squares problem for power-function profiles. Here the profile is the
exponential one, theta_T = integral of exp(-(T - s) / tau) theta_s ds / tau, taken as a quadrature over the
snapshots: weight_i proportional to exp(-(T - s_i) / tau) times the steps snapshot i stands for (half the gap to
each neighbour; T is the newest snapshot's step). Each snapshot is itself a ~1/(1 - decay)-step average, which
smooths the kernel by that much, and the profile is cut at the oldest snapshot: the weights printed say how much
of an exact EMA of time constant tau the snapshots cover (exp(-(T - s_0) / tau) of its mass lies before them).

Writes a model file in this project's format (the newest snapshot's metadata, plus `posthoc_ema`: tau, steps and
weights) for `python -m bench.quality --ckpt`.
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from ddpm.checkpoint import build_unet, read_safetensors
from ddpm.cli import main_guard
from ddpm.files import save_safetensors

ROOT = Path(__file__).resolve().parents[1]


def posthoc_weights(steps: list[int], tau: float) -> list[float]:
    """Quadrature weights (summing to 1) of the exponential EMA profile of time constant tau (decay 1 - 1/tau)
    ending at max(steps), over snapshots at `steps` (sorted ascending): exp(-(T - s_i) / tau) * ds_i, with ds_i half
    the gap to each neighbour (the ends take the half gap they have; one snapshot gets weight 1)."""
    if list(steps) != sorted(set(steps)):
        raise ValueError(f"snapshot steps {steps} must be distinct and ascending")
    T, n = steps[-1], len(steps)
    ds = [((steps[min(i + 1, n - 1)] - steps[max(i - 1, 0)]) / 2) or 1.0 for i in range(n)]
    w = [math.exp(-(T - s) / tau) * d for s, d in zip(steps, ds)]
    total = sum(w)
    return [x / total for x in w]


def read_snapshot(spec: str) -> tuple[dict, dict, int]:
    """(tensors, metadata, step) of FILE@STEP, FILE a path or REV:PATH in this repository's history."""
    file, _, step = spec.rpartition("@")
    if not file or not step.isdigit():
        raise ValueError(f"snapshot {spec!r}: write it as FILE@STEP (e.g. checkpoints/x.safetensors@95800)")
    if ":" in file and not Path(file).exists():
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as tmp:
            blob = subprocess.run(["git", "-C", str(ROOT), "show", file], capture_output=True)
            if blob.returncode:
                raise ValueError(f"snapshot {spec!r}: git show {file} failed ({blob.stderr.decode().strip()})")
            Path(tmp.name).write_bytes(blob.stdout)
            return *read_safetensors(tmp.name), int(step)
    return *read_safetensors(file), int(step)


def posthoc_ema(snapshots: list[tuple[dict, dict, int]], tau: float) -> tuple[dict, dict, list[float]]:
    """(tensors, metadata, weights): the weighted average of the snapshots' tensors (float64 sums, stored in the
    newest snapshot's dtype), which must all belong to one architecture (checked by building each)."""
    snapshots = sorted(snapshots, key=lambda s: s[2])
    steps = [s[2] for s in snapshots]
    for state, meta, step in snapshots:
        if meta.get("config") != snapshots[-1][1].get("config"):
            raise ValueError(f"the snapshot of step {step} has another network config; average one model's files")
        build_unet(json.loads(meta["config"]), state, f"snapshot of step {step}")
    w = posthoc_weights(steps, tau)
    newest = snapshots[-1][0]
    avg = {k: sum(wi * s[0][k].double() for wi, s in zip(w, snapshots)).to(v.dtype) for k, v in newest.items()}
    record = {"tau": tau, "steps": steps, "weights": [round(x, 6) for x in w]}
    return avg, snapshots[-1][1] | {"posthoc_ema": json.dumps(record)}, w


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("snapshots", nargs="+", help="FILE@STEP or REV:PATH@STEP, one model's EMA files")
    p.add_argument("--tau", type=float, default=10_000, help="time constant in steps (decay 1 - 1/tau)")
    p.add_argument("--out", required=True, help="the averaged model file (.safetensors)")
    a = p.parse_args(argv)
    state, meta, w = posthoc_ema([read_snapshot(s) for s in a.snapshots], a.tau)
    steps = json.loads(meta["posthoc_ema"])["steps"]
    save_safetensors(a.out, state, meta)
    cover = 1 - math.exp(-(steps[-1] - steps[0]) / a.tau)
    print(f"post-hoc EMA, tau {a.tau:g} steps, ending at step {steps[-1]}: weights "
          + ", ".join(f"{s}: {x:.3f}" for s, x in zip(steps, w))
          + f"; the snapshots span {cover:.0%} of the exact profile's mass -> {a.out}")


if __name__ == "__main__":
    main_guard(main)
