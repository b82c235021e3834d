"""What importing JAX costs a fresh process, by the version of ml_dtypes beside it.

Every `vdit sample` pays its imports before it can load a weight (and so does each VAE compile process it starts,
and each test worker). On a 2-core CPU, `import ml_dtypes` 0.7.0 took about a second (a profile: NumPy's
``PyUFunc_AddLoop`` comparing tuples, i.e. registering its loops) against 0.01 s for 0.5.4 and 0.6.0. This study
times, in fresh interpreters and alternating between the sites so that drift of the host hits both alike,
``import ml_dtypes``, ``import jax``, and the imports `vdit sample` makes before its load (jax, flax.nnx,
jax_vdit.pipeline) with the installed ml_dtypes and with each ``--alt-site`` folder first on ``PYTHONPATH`` (one
holding another ml_dtypes, e.g. ``pip install --no-deps --target DIR ml_dtypes==0.6.0``). Prints a table and
writes ``import_cost.json`` and ``import_cost.md`` under ``--out``::

    python -m experiments.studies.import_cost --alt-site /tmp/ml_dtypes_060 --runs 5 --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

from experiments.studies.toy_report import median_range, save_report

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, time
t0 = time.perf_counter()
import ml_dtypes
t1 = time.perf_counter()
import jax
t2 = time.perf_counter()
import flax.nnx
import jax_vdit.pipeline
t3 = time.perf_counter()
print(json.dumps({"ml_dtypes": ml_dtypes.__version__, "jax": jax.__version__, "ml_dtypes_s": t1 - t0,
                  "jax_s": t2 - t0, "imports_s": t3 - t0}))
"""


def run_child(site: str | None) -> dict:
    """One fresh interpreter's import times; ``site`` first on its PYTHONPATH when given."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, str(ROOT), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--alt-site", action="append", default=[], help="a folder put first on PYTHONPATH (repeatable)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sites: list[str | None] = [None, *args.alt_site]
    run_child(None)  # the files of the imports in the page cache
    rows: dict[str, list[dict]] = {}
    for _ in range(args.runs):
        for site in sites:
            result = run_child(site)
            rows.setdefault(f"ml_dtypes {result['ml_dtypes']}" + ("" if site is None else f" ({site})"),
                            []).append(result)
    command = " ".join(argv if argv is not None else sys.argv[1:])
    record = {"date": date.today().isoformat(), "command": "python -m experiments.studies.import_cost " + command,
              "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
              "jax_platforms": os.environ.get("JAX_PLATFORMS", "cpu"), "python": platform.python_version(),
              "runs": rows}
    lines = [f"# Import times by ml_dtypes version ({record['date']})", "",
             f"`{record['command']}`; {record['device']}, Python {record['python']}; {args.runs} fresh "
             "interpreters per row, alternating; seconds from the start of the child's code, median (min-max).", "",
             "| site | jax | `import ml_dtypes` s | `import jax` s (ml_dtypes included) | jax + flax.nnx + "
             "jax_vdit.pipeline s |", "|---|---|---:|---:|---:|"]
    for name, runs in rows.items():
        lines.append(f"| {name} | {runs[0]['jax']} | {median_range([r['ml_dtypes_s'] for r in runs])} | "
                     f"{median_range([r['jax_s'] for r in runs])} | {median_range([r['imports_s'] for r in runs])} |")
    table = "\n".join(lines) + "\n"
    save_report(args.out, "import_cost", table, record)
    print(table)


if __name__ == "__main__":
    main()
