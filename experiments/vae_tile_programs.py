"""How many distinct VAE decode programs the release tiling needs, and how long they take to compile, with the tiles
decoded at their own shapes (``exact``) or zero-padded to the grid's largest tile (``uniform``;
``TilingConfig(uniform_tiles=True)``).

Plans the decode of DiT latents of each size (nothing runs), counts the distinct stage programs and the distinct
tile shapes, and with ``--compile`` compiles every planned stage in this process, one after another, with no
persistent cache (a cold process), recording each stage's seconds. The release VAE architecture with random
bf16 weights (compile time does not depend on the values)::

    python -m experiments.vae_tile_programs --sizes 29x720p,93x720p --compile --out experiments/results/vae
    python -m experiments.vae_tile_programs --sizes 29x720p --compile --modes exact,uniform --out $OUT   # GPU

Writes ``vae_tile_programs_<backend>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

LATENTS = {"29x720p": (1, 4, 8, 90, 160), "93x720p": (1, 4, 24, 90, 160), "29x480p": (1, 4, 8, 60, 80)}


def measure(size: str, mode: str, compile_all: bool) -> dict:
    """Plan (and optionally compile) the decode of ``size`` latents with ``mode`` tiles; one row."""
    import jax
    import jax.numpy as jnp

    from jax_vdit.vae import TilingConfig, VAEConfig, clear_compile_cache, compile_log
    from jax_vdit.vae.model import abstract_vae, random_vae
    from jax_vdit.vae.warmup import plan_decode, precompile

    tiling = TilingConfig.sample_script(uniform_tiles=mode == "uniform")
    vae = (random_vae if compile_all else abstract_vae)(VAEConfig(), dtype=jnp.bfloat16)
    t = time.perf_counter()
    calls = plan_decode(vae, LATENTS[size], tiling=tiling)
    row = {"size": size, "tiles": mode, "latent_shape": list(LATENTS[size]), "stages": len(calls),
           "tile_shapes": sorted({tuple(c.x_spec.shape[1:4]) for c in calls if c.fn.__name__.startswith("_dec_head")}),
           "plan_s": round(time.perf_counter() - t, 2)}
    if compile_all:
        jax.config.update("jax_compilation_cache_dir", None)
        clear_compile_cache()
        report = precompile(calls, workers=1)
        row.update(compiled=report.compiled, compile_wall_s=round(report.total_s, 2),
                   lower_s=round(report.lower_s, 2),
                   stage_seconds=[round(e["seconds"], 3) for e in compile_log()])
        del vae
    return row


def table(rows: list[dict]) -> str:
    lines = ["| size | tiles | tile shapes (t, h, w latents) | stage programs | compile wall s (one thread) |",
             "|---|---|---|---:|---:|"]
    for r in rows:
        shapes = ", ".join("x".join(str(n) for n in s) for s in r["tile_shapes"])
        lines.append(f"| {r['size']} | {r['tiles']} | {shapes} | {r['stages']} | {r.get('compile_wall_s', '-')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="29x720p,93x720p,29x480p", help=f"comma-separated: {', '.join(LATENTS)}")
    p.add_argument("--modes", default="exact,uniform")
    p.add_argument("--compile", action="store_true", help="also compile every planned stage (cold, one thread)")
    p.add_argument("--out", default=None, help="folder for the JSON")
    args = p.parse_args(argv)
    import jax

    rows = []
    for size in [s for s in args.sizes.split(",") if s]:
        for mode in [m for m in args.modes.split(",") if m]:
            rows.append(measure(size, mode, args.compile))
            print({k: v for k, v in rows[-1].items() if k != "stage_seconds"}, file=sys.stderr, flush=True)
    device = jax.devices()[0]
    result = {"date": dt.date.today().isoformat(),
              "command": "python -m experiments.vae_tile_programs " + " ".join(sys.argv[1:] if argv is None else argv),
              "device": f"{device.platform}:{device.device_kind}", "jax": jax.__version__,
              "python": platform.python_version(), "weights": "random (release architecture, bf16)", "rows": rows}
    print(table(rows))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"vae_tile_programs_{device.platform}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
