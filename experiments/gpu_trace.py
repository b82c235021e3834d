"""GPU time per step by kernel kind, from a ``jax.profiler.trace`` folder (its ``*.xplane.pb``).

    python -m experiments.gpu_trace TRACE_DIR --steps 20 [--json OUT.json] [--top 10]

Sums the durations of the kernels on the GPU's stream lines and groups them: cuDNN attention, the Pallas tile
attention kernels (named ``tile_attention_*``), GEMMs (cuBLAS
``nvjet``/``gemm``/``cutlass``), memcpy, dynamic-update-slice and dynamic-slice fusions, transposes, other
fusions. Prints ms per step (``--steps``: steps inside the trace) and the ``--top`` kernels.
"""

from __future__ import annotations

import argparse
import collections
import json
from collections.abc import Iterable
from pathlib import Path


def kind(name: str) -> str:
    """The kernel kind of a GPU kernel's name."""
    if "sdpa" in name or "cudnn" in name:
        return "attention (cuDNN)"
    if "tile_attention" in name:
        return "tile attention (Pallas)"
    if "nvjet" in name or "gemm" in name or "cutlass" in name:
        return "gemm"
    for part in ("memcpy", "dynamic_update_slice", "dynamic_slice", "transpose"):
        if part in name:
            return part
    return "other fusions"


def aggregate(events: Iterable[tuple[str, int]], steps: int, top: int = 10) -> dict:
    """Group ``(kernel name, duration in ns)`` events by kind: ``{"ms_per_step": total, "kinds": {kind:
    {"ms_per_step", "kernels_per_step"}}, "top": [{"kernel", "kind", "ms_per_step", "per_step"}, ...]}``, kinds and
    the ``top`` kernels by time, longest first."""
    ns: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for name, duration_ns in events:
        ns[name] += duration_ns
        count[name] += 1
    kinds: dict = {}
    for name, total in ns.items():
        row = kinds.setdefault(kind(name), {"ms_per_step": 0.0, "kernels_per_step": 0.0})
        row["ms_per_step"] += total / steps / 1e6
        row["kernels_per_step"] += count[name] / steps
    kinds = dict(sorted(kinds.items(), key=lambda kv: -kv[1]["ms_per_step"]))
    top_rows = [{"kernel": n, "kind": kind(n), "ms_per_step": t / steps / 1e6, "per_step": count[n] / steps}
                for n, t in ns.most_common(top)]
    return {"ms_per_step": sum(ns.values()) / steps / 1e6, "kinds": kinds, "top": top_rows}


def gpu_kernel_events(trace_dir: str | Path) -> list[tuple[str, int]]:
    """``(kernel name, duration in ns)`` of every kernel on a GPU stream line of the newest ``*.xplane.pb`` under
    ``trace_dir`` (none for a CPU trace)."""
    from jax.profiler import ProfileData

    files = sorted(Path(trace_dir).rglob("*.xplane.pb"))
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {trace_dir}")
    data = ProfileData.from_file(str(files[-1]))
    events = []
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            if "tream" not in line.name:  # "Stream #N(...)" lines hold the kernels
                continue
            events += [(event.name, event.duration_ns) for event in line.events]
    return events


def summarize(trace_dir: str | Path, steps: int, top: int = 10) -> dict:
    """:func:`aggregate` over the GPU kernels of a ``jax.profiler.trace`` folder."""
    return aggregate(gpu_kernel_events(trace_dir), steps, top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace_dir")
    p.add_argument("--steps", type=int, required=True, help="training steps inside the trace")
    p.add_argument("--json", default=None)
    p.add_argument("--top", type=int, default=10, help="list this many kernels by time")
    args = p.parse_args()
    result = summarize(args.trace_dir, args.steps, args.top)
    print(f"GPU busy {result['ms_per_step']:.2f} ms/step")
    for name, row in result["kinds"].items():
        print(f"  {row['ms_per_step']:7.3f} ms/step  {row['kernels_per_step']:6.0f} kernels/step  {name}")
    print("top kernels:")
    for row in result["top"]:
        print(f"  {row['ms_per_step']:7.3f} ms/step  {row['per_step']:6.0f}/step  [{row['kind']}] {row['kernel']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
