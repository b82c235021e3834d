"""Does reading a checkpoint in background threads (``jax_vdit.io.prefetch``) slow the imports it is meant to
overlap? On an H100 host `import jax` took 1.17-1.39 s with the prefetch's four threads reading the 5.5 GB
transformer against 0.66-0.75 s without (experiments/results/first_video/cli_prefetch_h100_2026-12-07/).

Writes a synthetic safetensors file (``--tensors`` tensors of ``--tensor-mb`` MB, read once beforehand so it is in
the page cache, as in a warm command), then times, in fresh processes, the imports `vdit sample` makes before its
load (jax, flax.nnx, jax_vdit.pipeline) with no prefetch and with one of ``--threads`` threads started first, and
how long the prefetch took to read everything. Prints a table and writes ``prefetch_import.json`` and
``prefetch_import.md`` under ``--out``::

    python -m experiments.studies.prefetch_import --out experiments/results/prefetch_import_cpu_DATE
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from experiments.studies.toy_report import median_range, save_report

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys, time
t0 = time.perf_counter()
prefetch = None
if {threads} > 0:
    from jax_vdit.io.prefetch import start_prefetch
    prefetch = start_prefetch([{file!r}], budget=1 << 40, threads={threads})
t1 = time.perf_counter()
import jax
t2 = time.perf_counter()
import flax.nnx
import jax_vdit.pipeline
t3 = time.perf_counter()
read_s = None
if prefetch is not None:
    while prefetch.report()["read_s"] is None:
        time.sleep(0.005)
    read_s = prefetch.report()["read_s"]
print(json.dumps({{"jax_import_s": t2 - t1, "imports_s": t3 - t1, "start_s": t1 - t0, "read_s": read_s,
                   "read_done_s": time.perf_counter() - t0}}))
"""


def write_checkpoint(path: Path, tensors: int, tensor_mb: float) -> int:
    """A safetensors file of ``tensors`` float16 tensors of about ``tensor_mb`` MB each; returns its bytes."""
    from safetensors.numpy import save_file

    n = int(tensor_mb * 2**20 / 2)
    rng = np.random.default_rng(0)
    block = rng.standard_normal(n).astype(np.float16)
    save_file({f"transformer_blocks.{i}.w": block for i in range(tensors)}, str(path))
    return path.stat().st_size


def run_child(file: Path, threads: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", CHILD.format(threads=threads, file=str(file))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tensors", type=int, default=687)
    p.add_argument("--tensor-mb", type=float, default=4.0)
    p.add_argument("--threads", default="4", help="reading threads, one value or several (comma-separated)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.safetensors"
        size = write_checkpoint(file, args.tensors, args.tensor_mb)
        file.read_bytes()  # in the page cache, as for a warm command
        run_child(file, 0)  # the imports' own files cached too
        counts = [int(t) for t in str(args.threads).split(",")]
        rows = {"none": [], **{f"prefetch, {t} threads": [] for t in counts}}
        for _ in range(args.runs):  # alternate, so that drift of the host hits every row alike
            rows["none"].append(run_child(file, 0))
            for t in counts:
                rows[f"prefetch, {t} threads"].append(run_child(file, t))
    record = {"date": date.today().isoformat(), "command": "python -m experiments.studies.prefetch_import "
              + " ".join(argv if argv is not None else sys.argv[1:]),
              "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores (JAX on the CPU)",
              "python": platform.python_version(), "checkpoint_bytes": size, "tensors": args.tensors, "runs": rows}
    lines = [f"# Imports with and without the weights' prefetch ({record['date']})", "",
             f"`{record['command']}`; {record['device']}; checkpoint {size / 1e9:.2f} GB in {args.tensors} tensors "
             f"(page cache warm); {args.runs} fresh processes per row, alternating.", "",
             "| prefetch | `import jax` s, median (min-max) | jax + flax.nnx + jax_vdit.pipeline s, median (min-max) "
             "| prefetch read everything in s, median |", "|---|---:|---:|---:|"]
    for name, runs in rows.items():
        reads = [r["read_s"] for r in runs if r["read_s"] is not None]
        lines.append(f"| {name} | {median_range([r['jax_import_s'] for r in runs])} | "
                     f"{median_range([r['imports_s'] for r in runs])} | "
                     f"{f'{statistics.median(reads):.3f}' if reads else '-'} |")
    table = "\n".join(lines) + "\n"
    save_report(args.out, "prefetch_import", table, record)
    print(table)


if __name__ == "__main__":
    main()
