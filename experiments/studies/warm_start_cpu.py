"""Study (issue 19): two costs of a warm `vdit sample` that the 2026-12-06 H100 run exposed, measured on the CPU.

A. Building the abstract transformer that loading and random init fill: ``abstract_model`` (shape-only keys,
   ``jax_vdit.abstract_init``) against the earlier ``nnx.eval_shape`` over a model drawing from ``nnx.Rngs``,
   release widths at several depths (one process; each construction traces afresh).
B. `vdit sample` of the tiny golden release model twice with one persistent cache, each in a fresh process: with the
   command's setting (every program cached) and with JAX's default threshold (only programs that compile for over
   a second are cached; restored in the child after the command's cache setup).

    python -m experiments.studies.warm_start_cpu --out experiments/results/first_video/warm_start_cpu_2026-12-06

Writes ``warm_start_cpu.json`` and ``warm_start_cpu.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "data" / "golden" / "opensora_v12" / "tiny_a"

_CHILD = r"""
import sys
from jax_vdit.cli import compile_cache, main
threshold = float(sys.argv[1])
if threshold > 0:  # JAX's default: restore it after the command's own setup
    setup = compile_cache.setup_compile_cache
    def with_default(args):
        out = setup(args)
        import jax
        jax.config.update("jax_persistent_cache_min_compile_time_secs", threshold)
        return out
    compile_cache.setup_compile_cache = with_default
    import jax_vdit.cli.sample as sample_cli
    sample_cli.setup_compile_cache = with_default
sys.exit(main(sys.argv[2:]))
"""


def abstract_times(depths: list[int]) -> list[dict]:
    from flax import nnx

    from jax_vdit.config import get_preset
    from jax_vdit.model.transformer import OpenSoraT2V, abstract_model

    rows = []
    for depth in depths:
        cfg = get_preset("osp-v1.2-29x720p", param_dtype="bfloat16", compute_dtype="bfloat16").replace(num_layers=depth)
        t = time.perf_counter()
        abstract_model(cfg)
        new = time.perf_counter() - t
        t = time.perf_counter()
        nnx.eval_shape(lambda: OpenSoraT2V(cfg, rngs=nnx.Rngs(0)))
        old = time.perf_counter() - t
        rows.append({"layers": depth, "shape_only_keys_s": round(new, 3), "nnx_rngs_s": round(old, 3)})
        print(rows[-1], flush=True)
    return rows


def cli_runs(threshold: float, work: Path) -> dict:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    emb = work / "emb.safetensors"
    save_file({"text": rng.standard_normal((1, 1, 7, 64)).astype(np.float32),
               "text_mask": np.ones((1, 1, 7), np.int32),
               "negative_text": rng.standard_normal((1, 7, 64)).astype(np.float32),
               "negative_mask": np.ones((1, 7), np.int32)}, str(emb))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = {}
    for phase in ("cold", "warm"):
        args = ["sample", str(GOLDEN), "--embeddings", str(emb), "--compile-cache", str(work / "xla"), "--steps", "2",
                "--guidance", "4", "--latents-only", "--out", str(work / f"{phase}.safetensors"),
                "--param-dtype", "float32", "--compute-dtype", "float32", "--quiet"]
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(threshold), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-4000:])
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        out[phase] = {"wall_s": round(wall, 2), "command": "vdit " + " ".join(args),
                      **{k: report[k] for k in ("load_s", "load_compile", "compile_s", "compile", "sampling_s")}}
        print(threshold, phase, out[phase]["wall_s"], report["load_s"], flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--depths", default="4,8,16,32")
    args = p.parse_args()
    import jax

    result = {"date": time.strftime("%Y-%m-%d"), "command": "python -m experiments.studies.warm_start_cpu "
              + " ".join(sys.argv[1:]), "device": "cpu", "jax": jax.__version__, "cores": os.cpu_count(),
              "abstract_model": abstract_times([int(d) for d in args.depths.split(",")]), "cli": {}}
    for name, threshold in (("every program cached (the command now)", 0.0), ("JAX default, 1 s threshold", 1.0)):
        with tempfile.TemporaryDirectory() as work:
            result["cli"][name] = cli_runs(threshold, Path(work))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "warm_start_cpu.json").write_text(json.dumps(result, indent=2))
    lines = ["# Warm-start costs on the CPU", "", f"`{result['command']}`; jax {result['jax']}, XLA:CPU, "
             f"{result['cores']} cores, {result['date']}.", "",
             "| layers (release widths) | abstract model, shape-only keys s | nnx.Rngs under eval_shape s |",
             "|---:|---:|---:|"]
    lines += [f"| {r['layers']} | {r['shape_only_keys_s']} | {r['nnx_rngs_s']} |" for r in result["abstract_model"]]
    lines += ["", "| `vdit sample`, tiny golden model, 2 CFG steps | run | wall s | load s | load programs "
              "(cache hits / misses) | warm-up compile s (programs, hits / misses) |", "|---|---|---:|---:|---|---|"]
    for name, runs in result["cli"].items():
        for phase, r in runs.items():
            lc, c = r["load_compile"], r["compile"]
            lines.append(f"| {name} | {phase} | {r['wall_s']} | {r['load_s']} | {lc['programs']} ({lc['cache_hits']} / "
                         f"{lc['cache_misses']}) | {r['compile_s']} ({c['programs']}, {c['cache_hits']} / "
                         f"{c['cache_misses']}) |")
    (out / "warm_start_cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
