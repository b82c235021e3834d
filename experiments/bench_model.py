"""Full-size OpenSoraT2V speed on one GPU: jitted forward and jitted CFG sampling, dense and tile-sparse.

The model has the release architecture (2.77B parameters) with RANDOM weights (the real checkpoint cannot be
downloaded here); speed does not depend on the values. bf16 parameters and compute, as the release samples.
Text: random (B, 512, 4096) embeddings with padded masks (like mT5 outputs of real prompts).

Measures, per size (29x720p, 93x720p):
* forward (batch 2 = one CFG pair): compile time, median time, TFLOP/s against the analytic count, peak memory;
* sampling: seconds per Euler-ancestral CFG step (difference of two jitted loops of n1 and n2 steps, so
  compile and launch costs cancel), projected 100-step time, and optionally a real 100-step run;
* the same with the paper's uniform tile masks (1:7 at 29 frames, 3:21 at 93 frames) on every layer;
* ``--what video100 --segment A:B``: steps A..B-1 of a 100-step video, resumed from ``--latents-in`` (the latents
  after step A, written by the previous segment's ``--latents-out``) and timed after compiling. A video longer
  than one device command is timed as the sum of its segments' times (the steps run exactly as in one call).

Usage (GPU machine)::

    python -m experiments.bench_model --sizes 29x720p,93x720p --out experiments/results/model_speed
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flax import nnx

from jax_vdit import sampling
from jax_vdit.config import PRESET_LATENT_SHAPES, get_preset
from jax_vdit.flops import forward_flops
from jax_vdit.model import AttentionConfig, random_model

ROOT = Path(__file__).resolve().parents[1]

SIZES = {"29x720p": "osp-v1.2-29x720p", "93x720p": "osp-v1.2-93x720p", "29x480p": "osp-v1.2-29x480p",
         "93x480p": "osp-v1.2-93x480p", "toy": "toy-teacher"}
PAPER_MASK = {8: "1:7", 24: "3:21", 9: "1:8"}


def peak_gib() -> float:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2**30


def timed(fn, *args, reps: int) -> tuple[float, list[float]]:
    """(compile+first-run seconds, list of steady-state seconds)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, times


def make_text(batch: int, key, channels: int) -> tuple[jax.Array, jax.Array]:
    text = jax.random.normal(key, (batch, 512, channels), jnp.bfloat16)
    valid = jnp.array([40, 120, 300, 512][:batch] * (batch // 4 + 1))[:batch]
    mask = (jnp.arange(512)[None, :] < valid[:, None]).astype(jnp.int32)
    return text, mask


ATTENTION_CHOICES = ("dense", "full-tile", "paper")


def attention_for(name: str, cfg, frames: int, tile_backend: str) -> AttentionConfig:
    """``dense``: cuDNN; ``full-tile``: the full (dense) tile mask through the tile kernel; ``paper``: the paper's
    uniform mask on every layer through the tile kernel."""
    if name not in ATTENTION_CHOICES:
        raise ValueError(f"unknown --attention entry {name!r}; choose from {ATTENTION_CHOICES}")
    if name == "dense":
        return AttentionConfig(dense_backend="auto")
    import pallas_kernels

    spec = "full" if name == "full-tile" else PAPER_MASK[frames]
    mask = pallas_kernels.TileMask.from_string(spec, frames)
    return AttentionConfig(dense_backend="auto", tile_backend=tile_backend, masks=(mask,) * cfg.num_layers)


def attention_label(name: str, frames: int, tile_backend: str) -> str:
    if name == "dense":
        from jax_vdit.model.attention import resolve_dense_backend

        return f"dense ({resolve_dense_backend('auto', jnp.bfloat16)})"
    return f"{'full' if name == 'full-tile' else PAPER_MASK[frames]} ({tile_backend})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="29x720p,93x720p")
    p.add_argument("--attention", default="dense",
                   help="comma list of: dense (cuDNN), full-tile (full mask through the tile kernel), paper")
    p.add_argument("--tile-backend", default="auto")
    p.add_argument("--what", default="forward,sampling", help="comma list of: forward, sampling, video100")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--steps", default="2,5", help="n1,n2 sampling steps for the per-step difference")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "model_speed"))
    p.add_argument("--tag", default="")
    p.add_argument("--segment", default=None, help="A:B: time steps A..B-1 of the 100-step video only")
    p.add_argument("--latents-in", default=None, help=".npy latents after step A (segments with A > 0)")
    p.add_argument("--latents-out", default=None, help="write the latents after step B here (.npy)")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    header = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": getattr(device, "device_kind", str(device)),
        "jax": jax.__version__, "host": platform.node(),
        "command": "python -m experiments.bench_model " + " ".join(sys.argv[1:]),
        "weights": "random (release architecture, 2.77B params), bf16 params and compute",
    }
    print(json.dumps(header))
    rows = []
    what = args.what.split(",")
    n1, n2 = (int(s) for s in args.steps.split(","))
    for size in args.sizes.split(","):
        cfg = get_preset(SIZES[size], param_dtype="bfloat16", compute_dtype="bfloat16")
        t_lat, h_lat, w_lat = PRESET_LATENT_SHAPES[SIZES[size]]
        t0 = time.perf_counter()
        model = random_model(cfg, seed=0)  # per-shape generators: a one-program init of 2.77B params compiles slowly
        jax.block_until_ready(nnx.state(model))
        init_s = time.perf_counter() - t0
        graphdef, state = nnx.split(model)
        key = jax.random.key(0)
        text, mask = make_text(args.batch, jax.random.fold_in(key, 1), cfg.caption_channels)
        for attn_name in args.attention.split(","):
            attention = attention_for(attn_name, cfg, t_lat, args.tile_backend)
            label = attention_label(attn_name, t_lat, args.tile_backend)
            kept = None
            if attention.masks is not None:
                kept = [m.density for m in attention.masks]
            flops = forward_flops(cfg, (t_lat, h_lat, w_lat), batch=args.batch, kept_fractions=kept)
            row = {"size": size, "attention": label, "batch": args.batch, "init_s": round(init_s, 2),
                   "gflop_per_forward": round(flops / 1e9)}
            if "forward" in what:
                @jax.jit
                def fwd(state, x, t, text, mask):
                    return nnx.merge(graphdef, state)(x, t, text, mask, attention=attention)

                x = jax.random.normal(key, (args.batch, 4, t_lat, h_lat, w_lat), jnp.bfloat16)
                t = jnp.full((args.batch,), 500.0)
                first, times = timed(fwd, state, x, t, text, mask, reps=args.reps)
                med = float(np.median(times))
                row.update(forward_compile_plus_first_s=round(first, 2), forward_s=round(med, 4),
                           forward_all_s=[round(v, 4) for v in times], tflops=round(flops / med / 1e12, 1),
                           peak_gib_after_forward=round(peak_gib(), 2))
                print(json.dumps(row), flush=True)
                del fwd
            if "sampling" in what or "video100" in what:
                neg_text, neg_mask = make_text(1, jax.random.fold_in(key, 2), cfg.caption_channels)

                def run(n, start=0, latents=None, total=None):
                    plan = sampling.euler_ancestral(total or n).truncated(n)
                    return sampling.sample(model, text[:1], mask[:1], key=key, latent_shape=(4, t_lat, h_lat, w_lat),
                                           plan=plan, negative_text=neg_text, negative_mask=neg_mask,
                                           guidance_scale=7.5, attention=attention, start_step=start,
                                           latents=latents)

                if "sampling" in what:
                    c0 = time.perf_counter()
                    jax.block_until_ready(run(1))
                    compile_s = time.perf_counter() - c0
                    ta = min(timed(run, n1, reps=1)[1])
                    tb = min(timed(run, n2, reps=1)[1])
                    per_step = (tb - ta) / (n2 - n1)
                    row.update(sampling_compile_plus_1step_s=round(compile_s, 2),
                               sampling_s_per_cfg_step=round(per_step, 4),
                               projected_100_steps_s=round(100 * per_step, 1),
                               sampling_runs={str(n1): round(ta, 3), str(n2): round(tb, 3)},
                               peak_gib_after_sampling=round(peak_gib(), 2))
                if "video100" in what and args.segment:
                    a, b = (int(v) for v in args.segment.split(":"))
                    lat = None if a == 0 else jnp.asarray(np.load(args.latents_in), jnp.bfloat16)
                    c0 = time.perf_counter()  # compile (and run one step) on the path the segment takes
                    jax.block_until_ready(run(1, total=100) if a == 0 else run(a + 1, a, lat, total=100))
                    row["sampling_compile_plus_1step_s"] = round(time.perf_counter() - c0, 2)
                    t0 = time.perf_counter()
                    out_lat = jax.block_until_ready(run(b, a, lat, total=100))
                    row.update(segment=args.segment, segment_s=round(time.perf_counter() - t0, 2),
                               peak_gib_after_video=round(peak_gib(), 2))
                    if args.latents_out:
                        np.save(args.latents_out, np.asarray(out_lat.astype(jnp.float32)))
                elif "video100" in what:
                    if "sampling" not in what:  # compile (and one step) first: the plan is padded, so 1 and 100
                        c0 = time.perf_counter()  # steps share one executable and the timed run excludes compiling
                        jax.block_until_ready(run(1))
                        row["sampling_compile_plus_1step_s"] = round(time.perf_counter() - c0, 2)
                    t0 = time.perf_counter()
                    jax.block_until_ready(run(100))
                    row["video_100_steps_s"] = round(time.perf_counter() - t0, 1)
                    row["peak_gib_after_video"] = round(peak_gib(), 2)
                print(json.dumps(row), flush=True)
            rows.append(row)
            write_results(out, args.tag, header, rows)  # after every row: a run cut short keeps what it measured
    print((out / f"bench_model{'_' + args.tag if args.tag else ''}.md").read_text())


def write_results(out: Path, tag: str, header: dict, rows: list[dict]) -> None:
    """bench_model[_tag].json and .md under ``out``."""
    result = {"header": header, "rows": rows}
    tag = f"_{tag}" if tag else ""
    (out / f"bench_model{tag}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# OpenSoraT2V speed ({header['device']}, jax {header['jax']}, {header['date']})", "",
             f"Command: `{header['command']}`", "", f"Weights: {header['weights']}.", "",
             "| size | attention | batch | forward s | TFLOP/s | peak GiB | s / CFG step | 100 steps s (proj.) | 100 steps s (run) | compile s (forward / sampler) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['attention']} | {r['batch']} | {r.get('forward_s', '-')} | {r.get('tflops', '-')} | "
            f"{r.get('peak_gib_after_video', r.get('peak_gib_after_sampling', r.get('peak_gib_after_forward', '-')))} | "
            f"{r.get('sampling_s_per_cfg_step', '-')} | {r.get('projected_100_steps_s', '-')} | "
            f"{r.get('video_100_steps_s', '-')} | {r.get('forward_compile_plus_first_s', '-')} / "
            f"{r.get('sampling_compile_plus_1step_s', '-')} |")
    (out / f"bench_model{tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
