"""Study (issue 19): the abstract release transformer and VAE (the shapes that loading fills) built by tracing
their construction against unpickled from the executable store, each in a fresh process sharing one store.

    python -m experiments.studies.abstract_model_store --out experiments/results/first_video/abstract_model_store_cpu_2026-12-07

Each row is one fresh process: ``first`` traces the construction and writes the store, ``later`` reads it. Writes
``abstract_model_store.json`` and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys, time
import jax
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
import jax.numpy as jnp
from jax_vdit.config import get_preset
from jax_vdit.model.transformer import abstract_model
from jax_vdit.vae import VAEConfig, abstract_vae
out = {}
t = time.perf_counter()
abstract_model(get_preset("osp-v1.2-29x720p", param_dtype="bfloat16", compute_dtype="bfloat16"))
out["transformer_s"] = time.perf_counter() - t
t = time.perf_counter()
abstract_vae(VAEConfig(), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
out["vae_s"] = time.perf_counter() - t
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=3, help="fresh stores (each: one first and one later process)")
    args = p.parse_args()
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            for phase in ("first", "later"):
                proc = subprocess.run([sys.executable, "-c", _CHILD, cache], cwd=ROOT, capture_output=True,
                                      text=True, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
                row = {"repeat": repeat, "phase": phase} | {k: round(v, 3) for k, v in
                                                           json.loads(proc.stdout.strip().splitlines()[-1]).items()}
                rows.append(row)
                print(row, flush=True)
    result = {"date": time.strftime("%Y-%m-%d"), "device": f"CPU host ({platform.machine()}, {os.cpu_count()} cores)",
              "command": f"python -m experiments.studies.abstract_model_store --out {args.out} --repeats "
                         f"{args.repeats}", "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "abstract_model_store.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Abstract release transformer and VAE: traced against read from the store ({result['device']})", "",
             f"    {result['command']}", "", "| store | process | transformer s | VAE s |", "|---:|---|---:|---:|"]
    lines += [f"| {r['repeat']} | {r['phase']} | {r['transformer_s']:.3f} | {r['vae_s']:.3f} |" for r in rows]
    (out / "abstract_model_store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
