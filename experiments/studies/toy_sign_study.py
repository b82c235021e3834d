"""Compare toy teacher runs on the sign of motion: direction accuracy and time-odd RoPE share against steps.

Reads each run folder written by ``python -m experiments.train_toy_teacher --check-every N`` (``evals.jsonl``: ToyBench of
the EMA teacher at each check; ``metrics.jsonl``: ``rope_odd_t``, the mean share of the self-attention heads'
rotary forms that is odd in the time offset, see :func:`jax_vdit.diagnostics.rope_odd_fraction`), prints one table
and saves a plot. A run that learns "left" vs "right" shows ``direction_acc`` well above 0.5 in a 4-direction world
(0.5 is "right axis, random sign").

Usage::

    python -m experiments.studies.toy_sign_study --run plain=runs/sign/run_toy-sign-5x16x16 \
        --run subframe=runs/sign/run_toy-sign-5x16x16-subframe --out experiments/results/toy_teacher/sign_study

A run that started from another run's exported weights counts its steps from 0; ``--step-offset NAME=STEPS`` puts
it on the same axis (its steps + STEPS), e.g. a run continued from a 9,000-step export gets ``NAME=9000``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.studies.toy_guidance_sweep import parse_teachers
from experiments.studies.toy_report import command_line, save_report

from jax_vdit.training import read_evals, read_metrics

ATTRIBUTES = ("alignment", "direction_acc", "overall")  # what a training check records (evals.jsonl)


def rope_odd_at(metrics: list[dict], step: int) -> float:
    """``rope_odd_t`` of the last logged row at or before ``step`` (NaN if none logged it)."""
    rows = [r for r in metrics if r.get("step", 0) <= step and "rope_odd_t" in r]
    return float(rows[-1]["rope_odd_t"]) if rows else float("nan")


def study_rows(runs: dict[str, Path], offsets: dict[str, int] | None = None) -> list[dict]:
    """One row per (run, check): the run's name, the step (plus the run's offset), ToyBench means and
    ``rope_odd_t`` at that step."""
    offsets = offsets or {}
    rows = []
    for name, folder in runs.items():
        metrics = read_metrics(folder)
        for ev in read_evals(folder):
            scores = ev.get("toybench", ev)
            rows.append({"run": name, "step": int(ev["step"]) + offsets.get(name, 0),
                         **{a: float(scores[a]) for a in ATTRIBUTES},
                         "rope_odd_t": rope_odd_at(metrics, int(ev["step"]))})
    return rows


def parse_offsets(values: list[str], runs: dict[str, Path]) -> dict[str, int]:
    """``["NAME=STEPS", ...]`` -> {name: steps}; a name that is not one of the runs is refused."""
    offsets = {}
    for v in values:
        name, sep, steps = v.partition("=")
        if not sep or name not in runs:
            raise SystemExit(f"--step-offset {v!r}: expected NAME=STEPS with NAME one of {sorted(runs)}")
        try:
            offsets[name] = int(steps)
        except ValueError:
            raise SystemExit(f"--step-offset {v!r}: STEPS must be an integer") from None
    return offsets


def table(rows: list[dict]) -> str:
    lines = ["| run | step | " + " | ".join(ATTRIBUTES) + " | rope_odd_t |",
             "|---|---:|" + "---:|" * (len(ATTRIBUTES) + 1)]
    for r in rows:
        cells = " | ".join(f"{r[a]:.3f}" for a in (*ATTRIBUTES, "rope_odd_t"))
        lines.append(f"| {r['run']} | {r['step']} | {cells} |")
    return "\n".join(lines)


def plot(rows: list[dict], runs: dict[str, Path], path: Path, offsets: dict[str, int] | None = None) -> None:
    """Alignment and direction accuracy at the checks, ``rope_odd_t`` at every logged step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, folder in runs.items():
        mine = [r for r in rows if r["run"] == name]
        for ax, key in zip(axes, ("alignment", "direction_acc")):
            ax.plot([r["step"] for r in mine], [r[key] for r in mine], marker="o", label=name)
        logged = [r for r in read_metrics(folder) if "rope_odd_t" in r]
        shift = (offsets or {}).get(name, 0)
        axes[2].plot([r["step"] + shift for r in logged], [r["rope_odd_t"] for r in logged], label=name)
    for ax, key in zip(axes, ("alignment", "direction_acc", "rope_odd_t (mean over heads and layers)")):
        ax.set_title(key)
        ax.set_xlabel("step")
    axes[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="NAME=RUN_FOLDER (repeatable)")
    p.add_argument("--step-offset", action="append", default=[],
                   help="NAME=STEPS: add STEPS to that run's steps (a run started from another run's export)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    runs = parse_teachers(args.run)
    if not runs:
        raise SystemExit("nothing to compare: pass --run NAME=RUN_FOLDER")
    runs = {k: Path(v) for k, v in runs.items()}
    offsets = parse_offsets(args.step_offset, runs)
    rows = study_rows(runs, offsets)
    if not rows:
        raise SystemExit("no checks found: were the runs trained with --check-every?")
    command = command_line()
    text = "\n".join(["# Sign study: direction accuracy against steps", "", f"Command: `{command}`", "",
                      table(rows), ""])
    print(text)
    out = save_report(args.out, "sign_study", text, {"command": command, "rows": rows})
    if out is not None:
        plot(rows, runs, out / "sign_study.png", offsets)


if __name__ == "__main__":
    main()
