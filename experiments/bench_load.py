"""Time loading a release-format transformer folder in fresh processes: the loader's grouping against one group
per tensor (the per-tensor layout it replaced), each cold (empty persistent cache) and warm.

    python -m experiments.bench_load --preset osp-v1.2-29x720p --out $OUT      # GPU, about 120 s
    python -m experiments.bench_load --preset toy-tiny --out /tmp/load          # CPU check of the whole driver

The parent writes a random bf16 release folder with the preset's tensor names and shapes (values drawn as bits,
in a finite range; no model is built), then runs one child per (grouping, phase) with a persistent compile cache
per grouping. Each child reports: `read_s` (every tensor read from the file, nothing placed: the host side's
floor), `load_s` (`stream_release_params` until every array is ready), `programs` / `cache_misses` /
`compile_s` of the load (JAX's compile events), and `to_model_s` (`model_from_pure_params`). Writes
`bench_load.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.child_env import ROOT, child_env, parent_releases_gpu_memory

GROUPINGS = ("grouped", "per_tensor")


def write_random_release_folder(preset: str, folder: Path, seed: int = 0) -> dict:
    """A release folder (config.json + one bf16 safetensors file) for ``preset``, random finite values of
    magnitude in [2^-7, 2^-4) with either sign, drawn as bf16 bits. Returns {tensors, bytes}."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    from jax_vdit.config import get_preset
    from jax_vdit.io.release import release_key_map, write_release_config

    cfg = get_preset(preset)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, rule in release_key_map(cfg).rules.items():
        n = int(np.prod(rule.source_shape))
        bits = rng.integers(0x3C00, 0x3D80, size=n, dtype=np.uint16) | (rng.integers(0, 2, n, np.uint16) << 15)
        tensors[name] = bits.view(ml_dtypes.bfloat16).reshape(rule.source_shape)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    write_release_config(cfg, folder)
    return {"tensors": len(tensors), "bytes": int(sum(t.nbytes for t in tensors.values()))}


def per_tensor_groups(key_map) -> dict[str, list[str]]:
    """One group per tensor: the layout the grouped loader replaced (a program per distinct shape and layout,
    a dispatch per tensor)."""
    return {name: [name] for name in key_map.rules}


def child(folder: Path, grouping: str, cache: Path) -> dict:
    """One fresh process: read-only pass, then the load with ``grouping``; the figures as a dict."""
    import jax

    from jax_vdit.compile_meter import CompileMeter
    from jax_vdit.io import release
    from jax_vdit.io.params import model_from_pure_params
    from jax_vdit.io.tensors import open_tensors, read_ahead

    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    cfg = release.resolve_config(folder, None, {})
    jax.devices()  # the backend's start is not part of either figure
    source = open_tensors(folder)
    t0 = time.perf_counter()
    nbytes = sum(raw.nbytes for _, raw in read_ahead(source, list(source.infos())))
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with CompileMeter() as meter:
        params = release.stream_release_params(cfg, source,
                                               groups=per_tensor_groups if grouping == "per_tensor" else None)
        jax.block_until_ready(params)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model_from_pure_params(cfg, params)
    to_model_s = time.perf_counter() - t0
    source.close()
    return {"grouping": grouping, "read_s": round(read_s, 3), "read_gb": round(nbytes / 1e9, 3),
            "load_s": round(load_s, 3), "to_model_s": round(to_model_s, 3), **meter.report(),
            "device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform}


def run(preset: str, work: Path) -> dict:
    written = write_random_release_folder(preset, work / "model")
    rows = []
    for grouping in GROUPINGS:
        cache = work / f"cache_{grouping}"
        for phase in ("cold", "warm"):
            cmd = [sys.executable, "-m", "experiments.bench_load", "--child", grouping, "--folder",
                   str(work / "model"), "--cache", str(cache)]
            proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{grouping} {phase} failed:\n{proc.stderr[-4000:]}")
            row = {"phase": phase, **json.loads(proc.stdout.strip().splitlines()[-1])}
            print(f"{grouping:10s} {phase:4s} load {row['load_s']:7.2f} s  read {row['read_s']:6.2f} s  "
                  f"programs {row['programs']:3d} (misses {row['cache_misses']:3d}, compile {row['compile_s']:.2f} s)"
                  f"  to_model {row['to_model_s']:.2f} s", flush=True)
            rows.append(row)
    return {"preset": preset, **written, "rows": rows}


def table(result: dict) -> str:
    lines = ["| grouping | phase | load s | read only s | programs | cache misses | compile s | to model s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['grouping']} | {r['phase']} | {r['load_s']:.2f} | {r['read_s']:.2f} | {r['programs']} | "
                     f"{r['cache_misses']} | {r['compile_s']:.2f} | {r['to_model_s']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="osp-v1.2-29x720p", help="model preset whose tensor names and shapes to write")
    p.add_argument("--out", default=None, help="folder for bench_load.json and bench_load.md")
    p.add_argument("--child", choices=GROUPINGS, help=argparse.SUPPRESS)
    p.add_argument("--folder", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(Path(args.folder), args.child, Path(args.cache))))
        return
    parent_releases_gpu_memory()
    with tempfile.TemporaryDirectory(prefix="bench_load_") as work:
        result = run(args.preset, Path(work))
    result = {"date": time.strftime("%Y-%m-%d"), "command": "python -m experiments.bench_load " + " ".join(
        sys.argv[1:] if argv is None else argv), **result}
    print(table(result))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_load.json").write_text(json.dumps(result, indent=1))
        (out / "bench_load.md").write_text(f"`{result['command']}` ({result['rows'][0]['device']})\n\n"
                                           + table(result) + "\n")


if __name__ == "__main__":
    main()
