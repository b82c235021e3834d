"""Convert a synthetic checkpoint with exactly the real 2.77B key list and shapes, and record time and peak RSS.

The real release file (11.1 GB of fp32) cannot be downloaded here, so this writes one with the same 687 tensor
names and shapes (``tests/data/opensora_v12_keys.tsv``) filled with random values, tensor by tensor (the writer
never holds more than one tensor), then runs the converter in a fresh process and measures that process's peak
resident memory. Finally it spot-checks converted tensors against the source.

Usage::

    python -m experiments.convert_synthetic_full --workdir /tmp/synth --dtype float32
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEYS = ROOT / "tests" / "data" / "opensora_v12_keys.tsv"


def read_key_list() -> list[tuple[str, tuple[int, ...]]]:
    rows = [line.split("\t") for line in KEYS.read_text().splitlines()[1:]]
    return [(name, tuple(int(s) for s in shape.split("x"))) for name, shape, _ in rows]


def write_streaming_safetensors(path: Path, keys: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> int:
    """Write a float32 safetensors file one tensor at a time (format: u64 header size, JSON header, raw data)."""
    header, offset = {}, 0
    for name, shape in keys:
        nbytes = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(1 << 22, dtype=np.float32) * 0.02).astype(np.float32)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for i, (name, shape) in enumerate(keys):
            n = int(np.prod(shape))
            start = (i * 7919) % (len(pool) - 1)
            reps = -(-n // len(pool)) + 1
            data = np.roll(np.tile(pool, reps)[:n + start][start:], i)  # cheap, distinct per tensor
            f.write(data.astype(np.float32).tobytes())
    return 8 + len(blob) + offset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/jax_vdit_synth")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "convert_synthetic_full"))
    p.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint and the conversion")
    args = p.parse_args()

    work = Path(args.workdir)
    src = work / "release_29x720p"
    dst = work / f"converted_{args.dtype}"
    shutil.rmtree(dst, ignore_errors=True)
    src.mkdir(parents=True, exist_ok=True)
    keys = read_key_list()
    weights = src / "diffusion_pytorch_model.safetensors"
    t0 = time.perf_counter()
    size = write_streaming_safetensors(weights, keys)
    write_s = time.perf_counter() - t0
    from jax_vdit.config import get_preset
    from jax_vdit.io.release import write_release_config

    write_release_config(get_preset("osp-v1.2-29x720p"), src)

    cmd = [sys.executable, "-m", "convert", str(src), str(dst), "--dtype", args.dtype, "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        raise SystemExit(proc.returncode)

    # spot check: a few converted tensors equal the source (transposed, cast)
    from jax_vdit.io.checkpoints import restore_params
    from jax_vdit.io.checkpoints import read_model_config
    from jax_vdit.io.tensors import open_tensors
    from jax_vdit.io.release import release_key_map

    cfg = read_model_config(dst)
    source = open_tensors(weights)
    km = release_key_map(cfg)
    import jax

    restored = None
    checked = []
    for name in ("pos_embed.proj.weight", "transformer_blocks.17.ff.net.2.weight", "proj_out.bias"):
        rule = km.rules[name]
        if restored is None:
            restored = restore_params(dst, cfg)
        node = restored
        for k in rule.path:
            node = node[k]
        want = rule.transform(source.read(name)).astype(np.dtype(cfg.param_jnp_dtype))
        ok = bool(np.array_equal(np.asarray(jax.device_get(node)), want))
        checked.append((name, ok))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "command": " ".join(cmd),
        "script": "python -m experiments.convert_synthetic_full " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({platform.machine()}, CPU only, {__import__('os').cpu_count()} cores)",
        "checkpoint_bytes": size,
        "tensors": len(keys),
        "params": int(sum(int(np.prod(s)) for _, s in keys)),
        "output_dtype": args.dtype,
        "write_synthetic_s": round(write_s, 1),
        "convert_wall_s": round(wall, 1),
        "convert_peak_rss_bytes": child_peak,
        "peak_rss_over_checkpoint": round(child_peak / size, 3),
        "spot_checks": checked,
        "converter_stdout": proc.stdout.strip(),
    }
    (out / f"result_{args.dtype}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(dst, ignore_errors=True)


if __name__ == "__main__":
    main()
