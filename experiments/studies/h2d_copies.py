"""How fast do the transformer's weights reach the GPU, by the way they are handed to JAX?

`vdit sample` copies the 2.77B model's 687 bf16 tensors (5.5 GB) to the device one `jax.device_put` per tensor in
four threads (:mod:`jax_vdit.io.prefetch`); on an H100 host that took 2.1 s (2.6 GB/s) in a warm command
(experiments/results/first_video/cli_prefetch_h100_2026-12-07/), the largest part of the warm load. This study
times, in one process with JAX's backend up, the same bytes handed over in other ways:

- ``per_tensor xT``: one `jax.device_put` per tensor (separate NumPy arrays, as the prefetch reads them), T threads;
- ``list``: one `jax.device_put` of the list of all tensors;
- ``flat C MB xT``: the tensors packed whole into uint8 chunks of about C MB (one contiguous host buffer), one
  `jax.device_put` per chunk in T threads, then one jitted program per chunk slicing and bitcasting it into its
  tensors on the device (its compile time reported apart; a warm command would read it from JAX's cache);
- ``pinned C MB``: each chunk first put into pinned host memory (``memory_kind="pinned_host"``), then to the device.

Tensor shapes: the release checkpoint's (``tests/data/opensora_v12_keys.tsv``), all bf16, random values. Also the
time to fill fresh host memory (page faults) and to read a file of the same bytes from the page cache, per tensor
into fresh arrays and in large chunks into one buffer. Prints a table and writes ``h2d_copies.json`` and
``h2d_copies.md`` under ``--out``::

    python -m experiments.studies.h2d_copies --out DIR [--repeats 3] [--file-dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

from experiments.studies.toy_report import save_report

ROOT = Path(__file__).resolve().parents[2]
KEYS = ROOT / "tests" / "data" / "opensora_v12_keys.tsv"


def release_sizes() -> list[int]:
    """Element counts of the release checkpoint's tensors, in the file's order."""
    sizes = []
    for line in KEYS.read_text().splitlines()[1:]:
        _, shape, _ = line.split("\t")
        sizes.append(int(np.prod([int(n) for n in shape.split("x")])))
    return sizes


def pack(nbytes: list[int], chunk: int) -> list[list[int]]:
    """Tensor indices grouped into chunks of about ``chunk`` bytes, each tensor whole in one chunk, in order."""
    groups, current, size = [], [], 0
    for i, n in enumerate(nbytes):
        if current and size + n > chunk:
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        groups.append(current)
    return groups


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks-mb", default="64,256,1024", help="chunk sizes for the flat and pinned ways")
    p.add_argument("--threads", default="1,4,8", help="thread counts for the per-tensor and flat ways")
    p.add_argument("--file-dir", type=Path, default=None, help="where the read test's file goes (default: a temp dir)")
    p.add_argument("--max-tensors", type=int, default=None, help="only the first N tensors (a quick check on a CPU)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    import jax
    import jax.numpy as jnp
    import ml_dtypes

    bf16 = np.dtype(ml_dtypes.bfloat16)
    device = jax.devices()[0]
    sizes = release_sizes()[: args.max_tensors]
    nbytes = [2 * n for n in sizes]
    total = sum(nbytes)
    offsets = np.concatenate([[0], np.cumsum(nbytes)]).astype(np.int64)
    rows: dict[str, dict] = {}

    host: dict = {"first_touch_s": None}

    def write_report() -> str:
        """The table and JSON of every row so far (written after each row: a run cut short keeps them)."""
        command = " ".join(argv if argv is not None else sys.argv[1:])
        result = {"date": date.today().isoformat(), "command": "python -m experiments.studies.h2d_copies " + command,
                  "device": device.device_kind, "jax": jax.__version__, "python": platform.python_version(),
                  "cpu_cores": os.cpu_count(), "tensors": len(sizes), "bytes": total,
                  "first_touch_s": host["first_touch_s"], "rows": rows}
        lines = [f"# Host-to-device copies of the release transformer's weights ({result['date']})", "",
                 f"`{result['command']}`; {result['device']}, {result['cpu_cores']} CPU cores, jax {result['jax']}; "
                 f"{len(sizes)} bf16 tensors, {total / 1e9:.2f} GB (random values); best of {args.repeats}. "
                 f"First touch of {total / 1e9:.2f} GB of fresh host memory: {host['first_touch_s']} s.", "",
                 "| way | best s | GB/s | median s | notes |", "|---|---:|---:|---:|---|"]
        for name, row in rows.items():
            if "error" in row:
                lines.append(f"| {name} | - | - | - | {row['error']} |")
                continue
            notes = ", ".join(f"{k} {v}" for k, v in row.items()
                              if k not in ("seconds", "best_s", "median_s", "gb_per_s"))
            lines.append(f"| {name} | {row['best_s']:.3f} | {row['gb_per_s']:.2f} | {row['median_s']:.3f} "
                         f"| {notes} |")
        table = "\n".join(lines) + "\n"
        save_report(args.out, "h2d_copies", table, result)
        return table

    def record(name: str, seconds: list[float], **extra) -> None:
        best = min(seconds)
        rows[name] = {"seconds": [round(s, 4) for s in seconds], "best_s": round(best, 4),
                      "median_s": round(statistics.median(seconds), 4), "gb_per_s": round(total / best / 1e9, 2),
                      **extra}
        print(f"{name}: best {best:.3f} s ({total / best / 1e9:.2f} GB/s), all {[round(s, 3) for s in seconds]}",
              flush=True)
        write_report()

    # host memory: first touch of fresh pages (what reading into fresh arrays pays), then a filled buffer
    t = time.perf_counter()
    flat = np.empty(total, np.uint8)
    flat.fill(1)
    first_touch = time.perf_counter() - t
    host["first_touch_s"] = round(first_touch, 3)
    block = np.random.default_rng(0).integers(0, 255, size=64 << 20, dtype=np.uint8)  # random bytes, tiled
    for start in range(0, total, block.size):
        flat[start:start + block.size] = block[: min(block.size, total - start)]
    print(f"first touch of {total / 1e9:.2f} GB: {first_touch:.3f} s", flush=True)
    arrays = [flat[offsets[i]:offsets[i + 1]].copy().view(bf16) for i in range(len(sizes))]  # separate, as read

    jax.block_until_ready(jax.device_put(arrays[0]))  # the backend and the copy path warmed up

    def per_tensor(threads: int):
        def run():
            with ThreadPoolExecutor(threads) as pool:
                jax.block_until_ready(list(pool.map(jax.device_put, arrays)))
        return run

    for threads in [int(x) for x in args.threads.split(",")]:
        record(f"per_tensor x{threads}", timed(per_tensor(threads), args.repeats))
    record("list", timed(lambda: jax.block_until_ready(jax.device_put(arrays)), args.repeats))

    for chunk_mb in [int(x) for x in args.chunks_mb.split(",")]:
        groups = pack(nbytes, chunk_mb << 20)
        views = [flat[offsets[g[0]]:offsets[g[-1] + 1]] for g in groups]

        def splitter(group: list[int]):
            starts = [int(offsets[i] - offsets[group[0]]) for i in group]

            def split(buf):
                return [jax.lax.bitcast_convert_type(buf[s:s + nbytes[i]].reshape(-1, 2), jnp.bfloat16)
                        for s, i in zip(starts, group)]
            return jax.jit(split)

        splits = [splitter(g) for g in groups]
        t = time.perf_counter()
        compiled = [fn.lower(jax.ShapeDtypeStruct(v.shape, v.dtype)).compile() for fn, v in zip(splits, views)]
        compile_s = time.perf_counter() - t
        for threads in [int(x) for x in args.threads.split(",")]:
            def flat_run(threads=threads):
                with ThreadPoolExecutor(threads) as pool:
                    bufs = list(pool.map(jax.device_put, views))
                jax.block_until_ready([fn(b) for fn, b in zip(compiled, bufs)])
            record(f"flat {chunk_mb} MB x{threads}", timed(flat_run, args.repeats), chunks=len(groups),
                   split_compile_s=round(compile_s, 3))
        kinds = [m.kind for m in device.addressable_memories()]
        if "pinned_host" in kinds and device.default_memory().kind != "pinned_host":
            pinned = jax.sharding.SingleDeviceSharding(device, memory_kind="pinned_host")
            on_device = jax.sharding.SingleDeviceSharding(device, memory_kind=device.default_memory().kind)

            def pinned_run():
                staged = [jax.device_put(v, pinned) for v in views]
                jax.block_until_ready(jax.device_put(staged, on_device))

            def pinned_only():
                staged = jax.block_until_ready([jax.device_put(v, pinned) for v in views])
                t = time.perf_counter()
                jax.block_until_ready(jax.device_put(staged, on_device))
                return time.perf_counter() - t
            try:
                record(f"pinned {chunk_mb} MB", timed(pinned_run, args.repeats), chunks=len(groups),
                       pinned_to_device_s=[round(pinned_only(), 4) for _ in range(2)])
            except Exception as err:  # noqa: BLE001 - a backend without this path: say so, go on
                rows[f"pinned {chunk_mb} MB"] = {"error": f"{type(err).__name__}: {err}"[:300]}
                write_report()
                print(f"pinned {chunk_mb} MB: {err}", flush=True)

    # reading the same bytes from a file in the page cache
    with tempfile.TemporaryDirectory(dir=args.file_dir) as tmp:
        path = Path(tmp) / "weights.bin"
        flat.tofile(path)
        path.read_bytes()

        def read_tensor(i: int) -> np.ndarray:
            out = np.empty(sizes[i], bf16)
            with open(path, "rb") as f:
                f.seek(int(offsets[i]))
                f.readinto(memoryview(out.view(np.uint8)))
            return out

        def read_range(buf: np.ndarray, start: int, stop: int) -> None:
            with open(path, "rb") as f:
                f.seek(start)
                f.readinto(memoryview(buf[start:stop]))

        for threads in (1, 4):
            def per_tensor_read(threads=threads):
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(read_tensor, range(len(sizes))))
            record(f"read per tensor x{threads} (fresh arrays)", timed(per_tensor_read, args.repeats))

            def chunk_read(threads=threads):
                buf = np.empty(total, np.uint8)
                step = 256 << 20
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda s: read_range(buf, s, min(total, s + step)), range(0, total, step)))
            record(f"read 256 MB chunks x{threads} (one fresh buffer)", timed(chunk_read, args.repeats))

    print(write_report())


if __name__ == "__main__":
    main()
