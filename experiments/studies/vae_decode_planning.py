"""Study (issue 19): how long planning a VAE decode holds Python's lock, and what a warm process pays instead when
the decode's plan is recorded in the executable store.

Planning (``jax_vdit.vae.warmup.plan_decode``) traces the whole tiled decode abstractly to find its distinct stage
programs; it is pure Python, so it holds the interpreter lock while the transformer loads beside it. This times it
for the release VAE (random bf16 weights) at a latent size, and, on a small size whose stages compile in seconds
on a CPU, the warm-up of a fresh stage cache with the executable store holding every stage: planned (no record)
against read from the recorded plan.

    python -m experiments.studies.vae_decode_planning --out experiments/results/first_video/decode_planning_cpu_2026-12-06
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import jax  # noqa: E402

from experiments.bench_first_video import _vae  # noqa: E402
from jax_vdit import executable_store  # noqa: E402
from jax_vdit.vae import TilingConfig, clear_compile_cache  # noqa: E402
from jax_vdit.vae.warmup import plan_decode, precompile_decode  # noqa: E402


def time_planning(vae, latent_shape, tiling, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        calls = plan_decode(vae, latent_shape, tiling=tiling)
        seconds.append(time.perf_counter() - t0)
    return {"latent_shape": list(latent_shape), "stages": len(calls),
            "plan_s": [round(s, 3) for s in seconds], "plan_s_median": round(statistics.median(seconds), 3)}


def time_warm_warmup(vae, latent_shape, tiling, repeats: int) -> dict:
    """Warm-ups of a fresh stage cache with every stage stored: planned (record removed) against recorded."""
    previous = jax.config.jax_compilation_cache_dir
    rows = {"planned": [], "recorded": []}
    with tempfile.TemporaryDirectory(prefix="decode_planning_") as cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        try:
            clear_compile_cache()
            cold = precompile_decode(vae, latent_shape, tiling=tiling)
            store = executable_store.store_directory()
            for _ in range(repeats):
                for kind in ("planned", "recorded"):
                    if kind == "planned":
                        for record in store.glob("*.decode-plan.json"):
                            record.unlink()
                    clear_compile_cache()
                    report = precompile_decode(vae, latent_shape, tiling=tiling)
                    assert report.planned == (kind == "planned") and report.loaded == report.stages
                    rows[kind].append(report.total_s)
        finally:
            clear_compile_cache()
            jax.config.update("jax_compilation_cache_dir", previous)
    return {"latent_shape": list(latent_shape), "stages": cold.stages, "cold_compile_s": cold.total_s,
            **{f"{k}_s": v for k, v in rows.items()},
            **{f"{k}_s_median": round(statistics.median(v), 3) for k, v in rows.items()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="folder for decode_planning.json and .md")
    args = p.parse_args(argv)
    tiling = TilingConfig.sample_script(uniform_tiles=True)
    full = _vae("full")
    result = {
        "command": "python -m experiments.studies.vae_decode_planning " + " ".join(argv or sys.argv[1:]),
        "device": f"{jax.default_backend()} ({platform.processor() or platform.machine()})", "jax": jax.__version__,
        "vae": "release architecture, random bf16 weights; release sample-script tiling, uniform tiles",
        "planning": [time_planning(full, shape, tiling, args.repeats) for shape in ((1, 4, 8, 90, 160),
                                                                                     (1, 4, 24, 90, 160))],
        # a size whose 10 stages compile in seconds on a CPU: the release VAE at 29x128x128 pixels
        "warm_warmup": time_warm_warmup(full, (1, 4, 8, 16, 16), tiling, args.repeats),
    }
    lines = ["| latent (B, C, t, h, w) | distinct stages | planning s (median) |", "|---|---:|---:|"]
    lines += [f"| {tuple(r['latent_shape'])} | {r['stages']} | {r['plan_s_median']:.2f} |" for r in result["planning"]]
    w = result["warm_warmup"]
    lines += ["", f"Warm-up of a fresh stage cache, every stage stored, latent {tuple(w['latent_shape'])} "
              f"({w['stages']} stages): planned {w['planned_s_median']:.2f} s, from the recorded plan "
              f"{w['recorded_s_median']:.2f} s (medians of {args.repeats}).", "", f"`{result['command']}` "
              f"({result['device']}, jax {result['jax']})"]
    text = "\n".join(lines)
    print(json.dumps(result, indent=1))
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "decode_planning.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "decode_planning.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
