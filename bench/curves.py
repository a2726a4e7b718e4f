"""The training curves of the models still in training, drawn from their committed files alone
(python -m bench.curves; matplotlib, `pip install -r requirements-docs.txt`):

    held-out bits/dim   every held-out record of checkpoints/<name>.log.jsonl, coloured by the learning rate then
    Frechet distance    every milestone of checkpoints/<name>.quality.jsonl (bench/quality.py), beside its floor,
                        with bars of 2 bootstrap standard errors where the record has them (`frechet_se`)

both against the steps in all (images seen / 32), into docs/figures/training_curves.png. A model's log is the
concatenation of its runs, each after a `segment` line naming where it starts (see `steps_in_all`).
"""
import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as `python bench/<name>.py`: import ddpm and bench from the repository root, not bench/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.figures import plt, save_figure
from ddpm.cli import main_guard

ROOT = Path(__file__).resolve().parents[1]
# steps of the runs before each log's first segment (their logs are `<name>-v1.log.jsonl`): for cifar10-cpu-cond
# 4800 unconditional + 8000 v1 steps, for celeba64-cpu the 6000 steps of its 8-group v1
LOG_START = {"cifar10-cpu-cond": 12_800, "celeba64-cpu": 6_000}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def steps_in_all(log: list[dict], start: int) -> list[dict]:
    """The log's records with `total` (steps in all) added. A segment line starts the next run: from a train state
    ("step" > 0) the run continues the previous one's step count, so the offset stays; from an EMA file with a fresh
    Adam ("step": 0) its steps restart at 0 after the previous run's last held-out record, the file it started from."""
    offset, last_eval, out = start, 0, []
    for r in log:
        if "segment" in r:
            if r["step"] == 0:
                offset += last_eval
            continue
        if "bits_per_dim" in r:
            last_eval = r["step"]
        out.append(r | {"total": offset + r["step"]})
    return out


def curves(name: str) -> tuple[list[tuple], list[dict]]:
    """((steps in all, bits/dim, lr) of every held-out record, the quality records) of checkpoints/<name>.*, from the
    log's first segment on (the network of the shipped file; the v1 networks' records are in the model card)."""
    lr, held_out = None, []
    for r in steps_in_all(read_jsonl(ROOT / "checkpoints" / f"{name}.log.jsonl"), LOG_START[name]):
        lr = r.get("lr", lr)
        if "bits_per_dim" in r:
            held_out.append((r["total"], r["bits_per_dim"], lr))
    quality = sorted((q for q in read_jsonl(ROOT / "checkpoints" / f"{name}.quality.jsonl")
                      if q["total_steps"] > LOG_START[name]), key=lambda q: q["total_steps"])
    return held_out, quality


def main(argv=None):
    pa = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pa.add_argument("--out", default=str(ROOT / "docs" / "figures" / "training_curves.png"))
    args = pa.parse_args(argv)
    p = plt()
    fig, axes = p.subplots(len(LOG_START), 2, figsize=(12, 4.2 * len(LOG_START)), squeeze=False)
    for (a, b), name in zip(axes, LOG_START):
        held_out, quality = curves(name)
        native = any("frechet_distance_native" in q for q in quality)  # larger than the classifier's 32x32
        series = [("frechet_distance", "frechet_floor", " pooled to 32x32" if native else "")]
        series += [("frechet_distance_native", "frechet_floor_native", " 64x64 (native)")] if native else []
        for k, (key, floor_key, label) in enumerate(series):
            measured, se_key = [q for q in quality if key in q], key.replace("frechet_distance", "frechet_se")
            a.plot([q["total_steps"] for q in measured], [q[key] for q in measured], "o-", color=f"C{k}",
                   label=f"samples{label}")
            with_se = [q for q in measured if se_key in q]  # measured since session 24
            if with_se:
                a.errorbar([q["total_steps"] for q in with_se], [q[key] for q in with_se],
                           yerr=[2 * q[se_key] for q in with_se], fmt="none", color=f"C{k}", capsize=3,
                           label=f"2 bootstrap s.e.{label}")
            a.axhline(measured[-1][floor_key], color=f"C{k}", ls="--", lw=0.8, label=f"floor{label}: real vs real")
        a.set(ylim=(0, None), xlabel="steps in all (batch 32)", ylabel="Frechet distance, classifier features",
              title=f"{name}: sample quality (bench/quality.py)")
        a.legend(fontsize=8)
        for k, lr in enumerate(sorted({h[2] for h in held_out}, reverse=True)):
            pts = [(s, bpd) for s, bpd, r in held_out if r == lr]
            b.plot(*zip(*pts), ".", color=f"C{k}", label=f"lr {lr:g}")
        b.set(xlabel="steps in all (batch 32)", ylabel="bits/dim (upper bound)",
              title=f"{name}: held-out bits/dim (train.py's log)")
        b.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, Path(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
