"""Compile-only memory plan of the CausalVAE decoder: XLA's memory analysis of every stage of one latent tile,
for several conv chunk budgets, without running anything (works on CPU; GPU buffer assignment differs).

For each stage: arguments, temporaries, outputs, aliased bytes and the bytes live at once
(args + temp + out - alias). The tile's planned peak is the largest stage's live bytes; the parameters and the
assembled video come on top. Use it to choose ``ComputeConfig.chunk_bytes`` before a GPU run.

Usage::

    python -m experiments.vae_memory_plan --tile 8x64x64 --chunk-mib 1024,512,256 --out experiments/results/vae
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from jax_vdit.vae import ComputeConfig, VAEConfig, random_vae
from jax_vdit.vae import runtime

ROOT = Path(__file__).resolve().parents[1]

GIB = 2**30


def compile_only_stage_plan(vae, tile: tuple[int, int, int]) -> list[dict]:
    """Per-stage memory analysis of decoding one (1, t, h, w, 4) latent tile, compiled but not executed.

    "alias" counts the output as reusing a donated input wherever the runtime donates on a GPU (same shape and
    dtype), also when planning on a CPU, where XLA reports no aliasing."""
    rows: list[dict] = []

    def plan_stage(fn, modules, x, *, donate: bool = False):
        spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
        compiled, states, out = runtime.compile_stage(fn, modules, spec, donate=donate)
        mem = compiled.memory_analysis()
        param_bytes = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(states))
        aliasable = donate and any(o.shape == spec.shape and o.dtype == spec.dtype for o in jax.tree.leaves(out))
        row = {"stage": fn.__name__, "input": list(x.shape[1:]),
               "args_gib": (int(mem.argument_size_in_bytes) - param_bytes) / GIB,
               "temp_gib": mem.temp_size_in_bytes / GIB, "out_gib": mem.output_size_in_bytes / GIB,
               "donated": aliasable}
        row["alias_gib"] = row["out_gib"] if aliasable else 0.0
        row["live_gib"] = row["args_gib"] + row["temp_gib"] + row["out_gib"] - row["alias_gib"]
        rows.append(row)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out)

    original = runtime.run_stage
    runtime.run_stage = plan_stage
    try:
        z = jnp.zeros((1, *tile, vae.config.embed_dim), jnp.float32)
        runtime.decode_nthwc(vae, z)
    finally:
        runtime.run_stage = original
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", default="8x64x64", help="latent tile t x h x w (the release sample script: 8x64x64)")
    p.add_argument("--chunk-mib", default="1024,512,256,128", help="comma list of ComputeConfig.chunk_bytes in MiB")
    p.add_argument("--shortcut-on-the-fly", action=argparse.BooleanOptionalAction,
                   default=ComputeConfig().shortcut_on_the_fly, help="ComputeConfig.shortcut_on_the_fly")
    p.add_argument("--in-place-conv2", action=argparse.BooleanOptionalAction,
                   default=ComputeConfig().in_place_conv2, help="ComputeConfig.in_place_conv2")
    p.add_argument("--out", default=None, help="folder for vae_memory_plan.{json,md}")
    args = p.parse_args()
    tile = tuple(int(s) for s in args.tile.split("x"))
    header = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "backend": jax.default_backend(),
              "jax": jax.__version__, "command": "python -m experiments.vae_memory_plan " + " ".join(sys.argv[1:]),
              "weights": "random, release widths, bf16 (compile only: nothing is executed)"}
    plans = {}
    for mib in (int(s) for s in args.chunk_mib.split(",")):
        compute = ComputeConfig(chunk_bytes=mib << 20, shortcut_on_the_fly=args.shortcut_on_the_fly,
                                in_place_conv2=args.in_place_conv2)
        vae = random_vae(VAEConfig(), seed=0, dtype=jnp.bfloat16, compute=compute)
        rows = compile_only_stage_plan(vae, tile)
        peak = max(rows, key=lambda r: r["live_gib"])
        plans[mib] = {"rows": rows, "peak_stage": peak["stage"], "peak_input": peak["input"],
                      "peak_live_gib": peak["live_gib"]}
        print(f"chunk {mib} MiB: peak live {peak['live_gib']:.2f} GiB in {peak['stage']}{tuple(peak['input'])}",
              flush=True)
    lines = [f"# CausalVAE decode memory plan ({header['backend']}, jax {header['jax']}, {header['date']})", "",
             f"Command: `{header['command']}`", "", f"Weights: {header['weights']}. Tile {args.tile} (latent).", "",
             "| chunk MiB | stage | input (T,H,W,C) | args GiB | temp GiB | out GiB | alias GiB | live GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for mib, plan in plans.items():
        for r in plan["rows"]:
            lines.append(f"| {mib} | {r['stage']} | {tuple(r['input'])} | {r['args_gib']:.2f} | {r['temp_gib']:.2f} | "
                         f"{r['out_gib']:.2f} | {r['alias_gib']:.2f} | {r['live_gib']:.2f} |")
    lines += ["", "| chunk MiB | peak live GiB | stage |", "|---|---|---|"]
    lines += [f"| {m} | {pl['peak_live_gib']:.2f} | {pl['peak_stage']}{tuple(pl['peak_input'])} |"
              for m, pl in plans.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "vae_memory_plan.json").write_text(json.dumps({"header": header, "plans": plans}, indent=2))
        (out / "vae_memory_plan.md").write_text(text)


if __name__ == "__main__":
    main()
