"""Reproduce the shipped toy students through the product's commands, and score them beside the shipped ones.

Runs, each as its own process (what a user types):

    vdit distill toy-data     --world W --samples N --seed 1 --out WORK/toy-data
    vdit distill mlcd         --teacher jax_vdit/toy/assets/toy_teacher --data WORK/toy-data --run WORK/mlcd  --set ...
    vdit distill search-masks --student WORK/mlcd/student --data WORK/toy-data --run WORK/search --set ...
    vdit distill kd           --student WORK/search/student --data WORK/toy-data --run WORK/kd --set ...
    vdit toybench STUDENT --split validation --seeds 0,1,2,3,4   (and --split test --seeds 0,1,2)

with the shipped recipe (``jax_vdit.toy.recipes.product_recipe`` of the default ``DistillRecipe``: batch 64,
MLCD 3000 steps at 5e-5, target EMA 0.95, 16 calibration clips at r = 0.1, KD 1000 steps at 3e-5), then scores the
shipped students with the same ``vdit toybench`` calls on the same device. Writes ``reproduce_toy_students.json``
(commands, stage seconds, every score) and ``reproduce_toy_students.md`` (the table) into ``--out``. A scoring run
that fails is recorded as failed (with its log) and the others still run; the script then exits non-zero naming it.

    python -m experiments.reproduce_toy_students --out experiments/results/toy_students_cli
    python -m experiments.reproduce_toy_students --quick --out /tmp/repro      # CPU smoke run (minutes)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from experiments.child_env import child_env

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "jax_vdit" / "toy" / "assets"
WORLD = "toy-9x24x24-subframe"
SHIPPED = {"mlcd": ASSETS / "toy_student_mlcd", "sparse": ASSETS / "toy_student_sparse"}
# the shipped recipe as `vdit distill` settings (jax_vdit.toy.recipes.product_recipe(DistillRecipe()))
RECIPE = ["batch_size=64", "compute_dtype=bfloat16", "teacher_dtype=float32", "remat=false", "seed=1",
          "segments=4", "solver_points=50", "guidance=4.0", "target_decay=0.95", "mlcd_ema_decay=0.999",
          "mlcd_steps=3000", "mlcd_lr=5e-5", "mlcd_warmup=100", "threshold=0.1", "calibration_clips=16",
          "kd_steps=1000", "kd_lr=3e-5", "kd_warmup=50", "kd_ema_decay=0.99", "kd_tile_backend=gather",
          "weight_decay=0.0", "log_every=50", "checkpoint_every=1000", "check_every=1000", "check_prompts=32"]
QUICK = ["batch_size=4", "mlcd_steps=4", "kd_steps=2", "calibration_clips=2", "checkpoint_every=2",
         "check_every=0", "log_every=1", "compute_dtype=float32"]


def _vdit(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from jax_vdit.cli import main; sys.exit(main(sys.argv[1:]))", *args]


def run(cmd: list[str], log_file: Path) -> float:
    """Run one command (output to ``log_file``); returns its wall seconds; raises with the log's tail if it fails."""
    env = child_env(TQDM_MININTERVAL=os.environ.get("TQDM_MININTERVAL", "30"))
    shown = " ".join(["vdit", *cmd[3:]])
    print(f"[{time.strftime('%H:%M:%S')}] {shown}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{shown} failed ({proc.returncode}):\n{log_file.read_text()[-4000:]}")
    return round(seconds, 1)


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--teacher", default=str(ASSETS / "toy_teacher"))
    p.add_argument("--mlcd-time", type=float, default=None, help="--time-limit of the MLCD stage (seconds)")
    p.add_argument("--kd-time", type=float, default=None, help="--time-limit of the KD stage (seconds)")
    p.add_argument("--validation-seeds", default="0,1,2,3,4")
    p.add_argument("--test-seeds", default="0,1,2")
    p.add_argument("--quick", action="store_true", help="a few steps and prompts: checks the commands, not quality")
    p.add_argument("--skip-shipped", action="store_true", help="do not score the shipped students")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = RECIPE + (QUICK if args.quick else [])
    samples = 256 if args.quick else args.samples
    prompts = ["--prompts", "2"] if args.quick else []
    splits = {"validation": "0" if args.quick else args.validation_seeds,
              "test": "0" if args.quick else args.test_seeds}
    command = "python -m experiments.reproduce_toy_students " + " ".join(sys.argv[1:] if argv is None else argv)

    with tempfile.TemporaryDirectory(prefix="toy_students_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        logs = work / "logs"
        logs.mkdir(exist_ok=True)
        data = work / "toy-data"
        limit = lambda t: [] if t is None else ["--time-limit", str(t)]  # noqa: E731
        stages = [
            ("toy-data", _vdit("distill", "toy-data", "--world", WORLD, "--samples", str(samples), "--seed", "1",
                               "--out", str(data))),
            ("mlcd", _vdit("distill", "mlcd", "--teacher", args.teacher, "--data", str(data), "--run",
                           str(work / "mlcd"), "--no-progress", *limit(args.mlcd_time), *_sets(sets))),
            ("search-masks", _vdit("distill", "search-masks", "--student", str(work / "mlcd" / "student"), "--data",
                                   str(data), "--run", str(work / "search"), *_sets(sets))),
            ("kd", _vdit("distill", "kd", "--student", str(work / "search" / "student"), "--data", str(data),
                         "--run", str(work / "kd"), "--no-progress", *limit(args.kd_time), *_sets(sets))),
        ]
        record: dict = {"stages": {}, "scores": {}}
        partial = out / "reproduce_toy_students.partial.json"

        def save_partial() -> None:
            """What is done so far, so that a run stopped by a time limit still leaves its numbers."""
            partial.write_text(json.dumps({"command": command, **record}, indent=1) + "\n")

        for name, cmd in stages:
            record["stages"][name] = {"command": " ".join(["vdit", *cmd[3:]]).replace(str(work), "WORK"),
                                      "seconds": run(cmd, logs / f"{name}.log")}
            save_partial()
        for stage in ("mlcd", "kd"):
            record["stages"][stage] |= stage_progress(work / stage)
        search_report = work / "search" / "mask_search.json"
        if search_report.is_file():
            rep = json.loads(search_report.read_text())
            record["stages"]["search-masks"] |= {"mean_density": rep["mean_density"],
                                                 "masks": [layer["mask"] for layer in rep["layers"]]}
        students = {"mlcd (commands)": work / "mlcd" / "student", "sparse (commands)": work / "kd" / "student"}
        if not args.skip_shipped:
            students |= {"mlcd (shipped)": SHIPPED["mlcd"], "sparse (shipped)": SHIPPED["sparse"]}
        jobs = []
        for label, folder in students.items():
            for split, seeds in splits.items():
                js = work / f"{label.split()[0]}_{'shipped' if 'shipped' in label else 'cli'}_{split}.json"
                cmd = _vdit("toybench", str(folder), "--world", WORLD, "--split", split, "--seeds", seeds, *prompts,
                            "--json", str(js))
                jobs.append((label, split, cmd, js, logs / f"toybench_{js.stem}.log"))
        failures = score_all(jobs, record["scores"], run, save_partial)
        import shutil

        shutil.make_archive(str(out / "logs"), "gztar", logs)

    import jax

    device = jax.devices()[0]
    header = {"date": datetime.date.today().isoformat(), "device": f"{device.platform}:{device.device_kind}",
              "jax": jax.__version__, "python": platform.python_version(), "world": WORLD, "samples": samples,
              "recipe": sets, "quick": args.quick,
              "command": command}
    result = {"header": header, **record}
    (out / "reproduce_toy_students.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "reproduce_toy_students.md").write_text(table(result))
    partial.unlink(missing_ok=True)
    print(table(result))
    if failures:
        raise SystemExit("scoring failed for " + ", ".join(failures) + " (the report holds the rest; logs in "
                         f"{out / 'logs.tar.gz'})")


def stage_progress(run_dir: Path) -> dict:
    """``{"steps_done", "checks"}`` of a distillation run folder: the last logged step (``metrics.jsonl``) and the
    validation checks (``evals.jsonl``); empty when the folder has neither."""
    def rows(name: str) -> list[dict]:
        path = run_dir / name
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    metrics, evals = rows("metrics.jsonl"), rows("evals.jsonl")
    out: dict = {}
    if metrics:
        out["steps_done"] = max(r.get("step", 0) for r in metrics)
    if metrics or evals:
        out["checks"] = evals
    return out


def score_all(jobs: list[tuple[str, str, list[str], Path, Path]], scores: dict,
              runner: Callable[[list[str], Path], float], save_partial: Callable[[], None]) -> list[str]:
    """Run every ``(label, split, command, json file, log file)`` scoring job, even after one fails: each result
    goes into ``scores[label][split]`` (``{"seconds", **toybench JSON}``, or ``{"failed": message, "log": file}``)
    and is saved at once. Returns the ``"label/split"`` of the failed jobs."""
    failures = []
    for label, split, cmd, js, log_file in jobs:
        try:
            seconds = runner(cmd, log_file)
            scores.setdefault(label, {})[split] = {"seconds": seconds, **json.loads(js.read_text())}
        except (RuntimeError, OSError, ValueError) as err:
            message = (str(err).splitlines() or [repr(err)])[0]
            print(f"scoring {label} on {split} failed: {message}", file=sys.stderr, flush=True)
            scores.setdefault(label, {})[split] = {"failed": message, "log": log_file.name}
            failures.append(f"{label}/{split}")
        save_partial()
    return failures


def _alignment(scores: dict) -> tuple[float | None, float | None, dict]:
    """(mean, sd, per-seed) alignment of a ``vdit toybench --json`` record (its first setting)."""
    results = scores.get("results") or {}
    if not results:
        return None, None, {}
    row = next(iter(results.values()))
    per_seed = {seed: v["alignment"] for seed, v in row.get("per_seed", {}).items()}
    return row["mean"]["alignment"], row["sd"]["alignment"], per_seed


def table(result: dict) -> str:
    h = result["header"]
    lines = [f"# Toy students through `vdit distill` ({h['device']}, {h['date']})", "",
             f"Command: `{h['command']}`", "", "| stage | seconds | notes |", "|---|---:|---|"]
    for name, st in result["stages"].items():
        note = ""
        if "mean_density" in st:
            note = f"mean density {st['mean_density']:.3f}; masks {' '.join(st['masks'])}"
        elif "steps_done" in st:
            note = f"{st['steps_done']} steps"
        lines.append(f"| {name} | {st['seconds']} | {note} |")
    lines += ["", "ToyBench alignment, mean +/- sd over noise seeds (per-seed values in the JSON):", "",
              "| student | validation | test |", "|---|---:|---:|"]
    for label, by_split in result["scores"].items():
        cells = []
        for split in ("validation", "test"):
            mean, sd, _ = _alignment(by_split.get(split, {}))
            if "failed" in by_split.get(split, {}):
                cells.append("failed")
                continue
            cells.append("-" if mean is None else f"{mean:.3f}" + ("" if sd is None else f" +/- {sd:.3f}"))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
