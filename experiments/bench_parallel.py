"""Sequence-parallel sampling speed: one CFG sampling step of OpenSoraT2V on 1 and N devices (Ulysses all-to-all).

The model has the release architecture (2.77B parameters) with RANDOM weights (speed does not depend on the
values), bf16 parameters and compute, as the release samples. Text: random (B, 512, 4096) embeddings with a padded
mask. Per size (29x720p: 8 latent frames, 28,800 tokens; 93x720p: 24 frames, 86,400 tokens), attention (dense; the
paper's uniform masks 1:7 at T=8, 3:21 at T=24 on every layer) and mesh (data x seq; "1" = one device, no mesh):

* seconds per Euler-ancestral CFG step (CFG batch 2 = [negative; positive]): the difference of two jitted loops of
  n1 and n2 steps (best of ``--reps`` runs each), so compile and launch costs cancel; speedup and parallel
  efficiency against one device;
* the analytic all-to-all traffic per device and step (4 all-to-alls per layer: q, k, v in, the output back);
* with ``--profile``: a profiler trace of one step on each mesh, and the share of device time spent in collective
  ops read from it (XLA op events on the device planes; GPU/TPU only).

Usage (a machine with N GPUs; the paper reports 3.68x / 3.91x on 4 GPUs at 29 / 93 frames)::

    python -m experiments.bench_parallel --sizes 29x720p,93x720p --meshes 1,1x2,1x4,2x2 --attention dense,paper \\
        --profile

CPU check of the script itself (8 fake devices, a tiny model, seconds)::

    python -m experiments.bench_parallel --tiny --fake-devices 8 --meshes 1,1x2,1x4,1x8,2x4 --tag cpu_tiny
"""

from __future__ import annotations

import os
import sys


def _early_flags(argv: list[str]) -> None:
    """``--fake-devices N`` must reach XLA before jax is imported."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--fake-devices=") else (
            argv[i + 1] if arg == "--fake-devices" and i + 1 < len(argv) else None)
        if value is not None:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + f" --xla_force_host_platform_device_count={int(value)}").strip()
            os.environ.setdefault("JAX_PLATFORMS", "cpu")


_early_flags(sys.argv[1:])

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import pallas_kernels  # noqa: E402
from jax_vdit import parallel, sampling  # noqa: E402
from jax_vdit.config import PRESET_LATENT_SHAPES, ModelConfig, get_preset  # noqa: E402
from jax_vdit.model import AttentionConfig, random_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SIZES = {"29x720p": "osp-v1.2-29x720p", "93x720p": "osp-v1.2-93x720p", "29x480p": "osp-v1.2-29x480p",
         "93x480p": "osp-v1.2-93x480p"}
PAPER_MASK = {8: "1:7", 24: "3:21"}
# --tiny: the same frame counts (so the same masks) at a tiny width and resolution, for checking the script on CPU
TINY_CFG = ModelConfig(num_layers=2, num_attention_heads=8, attention_head_dim=24, caption_channels=32,
                       sample_size=(16, 16), param_dtype="float32", compute_dtype="float32")
TINY_LATENTS = {"29x720p": (8, 8, 8), "93x720p": (24, 4, 8), "29x480p": (8, 8, 8), "93x480p": (24, 4, 8)}
COLLECTIVES = ("all-to-all", "all-reduce", "all-gather", "reduce-scatter", "collective-permute", "nccl")


def parse_mesh(spec: str) -> tuple[int, int] | None:
    """"1" -> None (one device, no mesh); "S" -> (1, S); "DxS" -> (D, S)."""
    if spec == "1":
        return None
    if "x" in spec:
        d, s = spec.split("x")
        return int(d), int(s)
    return 1, int(spec)


def make_text(batch: int, key, channels: int, length: int) -> tuple[jax.Array, jax.Array]:
    text = jax.random.normal(key, (batch, length, channels), jnp.bfloat16)
    valid = jnp.array([max(1, length * f // 8) for f in (1, 3, 5, 8)] * (batch // 4 + 1))[:batch]
    return text, (jnp.arange(length)[None, :] < valid[:, None]).astype(jnp.int32)


def attention_for(name: str, num_layers: int, frames: int, tile_backend: str) -> AttentionConfig:
    if name == "dense":
        return AttentionConfig(dense_backend="auto")
    mask = pallas_kernels.TileMask.from_string(PAPER_MASK[frames], frames)
    return AttentionConfig(dense_backend="auto", tile_backend=tile_backend, masks=(mask,) * num_layers)


def all_to_all_gb_per_device(cfg: ModelConfig, tokens: int, cfg_batch: int, mesh_shape, dtype_bytes: int) -> float:
    """Bytes each device sends per CFG step: 4 all-to-alls per layer, each moving (P-1)/P of a local
    (B/data, N/seq, D) block."""
    if mesh_shape is None or mesh_shape[1] == 1:
        return 0.0
    data, seq = mesh_shape
    local = (cfg_batch // data if cfg_batch % data == 0 else cfg_batch) * (tokens // seq) * cfg.inner_dim
    return float(f"{4 * cfg.num_layers * local * dtype_bytes * (seq - 1) / seq / 1e9:.4g}")


def _is_collective(event) -> bool:
    texts = [event.name]
    try:
        texts += [str(value) for _, value in event.stats]  # e.g. the "hlo_op" stat of a GPU kernel event
    except Exception:  # stats layout differs between profiler versions: names alone are enough for NCCL kernels
        pass
    return any(c in t.lower() for t in texts for c in COLLECTIVES)


def collective_share(trace_dir: Path) -> dict | None:
    """Share of device time in collectives, from the newest ``*.xplane.pb`` under ``trace_dir``.

    Device planes (``/device:GPU:i``, ``/device:TPU:i``): the "XLA Ops" line where present, else the kernel stream
    lines; an event is a collective if its name or a stat names one (all-to-all, all-reduce, ..., NCCL kernels).
    Summed over devices. None when the trace has no device planes (CPU). Not yet validated on a GPU trace.
    """
    files = sorted(trace_dir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not files:
        return None
    data = jax.profiler.ProfileData.from_file(str(files[-1]))
    total = comm = 0.0
    for plane in data.planes:
        if not plane.name.startswith("/device:"):
            continue
        lines = list(plane.lines)
        ops = [line for line in lines if line.name == "XLA Ops"]
        for line in ops or [line for line in lines if line.name.startswith("Stream")]:
            for event in line.events:
                total += event.duration_ns
                if _is_collective(event):
                    comm += event.duration_ns
    if total == 0:
        return None
    return {"collective_ms_all_devices": round(comm / 1e6, 2), "device_ms_all_devices": round(total / 1e6, 2),
            "collective_share": round(comm / total, 4)}


def peak_gib() -> float:
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="29x720p,93x720p")
    p.add_argument("--attention", default="dense,paper", help="comma list of: dense, paper (uniform paper mask)")
    p.add_argument("--meshes", default="auto",
                   help='comma list of "1" (one device, no mesh), "S" (1 x S) or "DxS" (data x seq); "auto": 1, '
                        "1xN and 2x(N/2) for N = 2, 4, 8 up to the device count")
    p.add_argument("--tile-backend", default="auto")
    p.add_argument("--steps", default="2,4", help="n1,n2 sampling steps for the per-step difference")
    p.add_argument("--reps", type=int, default=2, help="timed repetitions of each loop length (best is kept)")
    p.add_argument("--profile", action="store_true", help="trace one step per mesh and report the collective share")
    p.add_argument("--tiny", action="store_true", help="a tiny fp32 model and latents (check the script on CPU)")
    p.add_argument("--fake-devices", type=int, default=0, help="XLA fake CPU devices (with --tiny on a CPU)")
    p.add_argument("--multi-host", action="store_true", help="call jax.distributed.initialize() first")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "parallel"))
    p.add_argument("--tag", default="")
    args = p.parse_args()

    if args.multi_host:
        jax.distributed.initialize()  # one process per host (cluster auto-detected); meshes span all hosts
    n_dev = jax.device_count()
    if args.meshes == "auto":
        meshes = ["1"] + [m for n in (2, 4, 8) if n <= n_dev for m in (f"1x{n}", f"2x{n // 2}")]
    else:
        meshes = args.meshes.split(",")
    n1, n2 = (int(s) for s in args.steps.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    header = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": f"{n_dev} x {getattr(device, 'device_kind', str(device))} ({jax.process_count()} host(s))",
        "platform": jax.default_backend(), "jax": jax.__version__, "host": platform.node(),
        "command": "python -m experiments.bench_parallel " + " ".join(sys.argv[1:]),
        "weights": ("random, TINY test model (not the release size)" if args.tiny else
                    "random (release architecture, 2.77B params), bf16 params and compute"),
    }
    print(json.dumps(header), flush=True)
    rows = []
    for size in args.sizes.split(","):
        if args.tiny:
            cfg = TINY_CFG
            t_lat, h_lat, w_lat = TINY_LATENTS[size]
            text_len = 16
        else:
            cfg = get_preset(SIZES[size], param_dtype="bfloat16", compute_dtype="bfloat16")
            t_lat, h_lat, w_lat = PRESET_LATENT_SHAPES[SIZES[size]]
            text_len = 512
        tokens = t_lat * (h_lat // cfg.patch_size) * (w_lat // cfg.patch_size)
        model = random_model(cfg, seed=0)  # per-shape generators: a one-program init of 2.77B params compiles slowly
        key = jax.random.key(0)
        text, mask = make_text(1, jax.random.fold_in(key, 1), cfg.caption_channels, text_len)
        neg_text, neg_mask = make_text(1, jax.random.fold_in(key, 2), cfg.caption_channels, text_len)
        for attn_name in args.attention.split(","):
            attention = attention_for(attn_name, cfg.num_layers, t_lat, args.tile_backend)
            label = attn_name if attn_name == "dense" else f"{PAPER_MASK[t_lat]} ({args.tile_backend})"
            base = None
            for mesh_spec in meshes:
                shape = parse_mesh(mesh_spec)
                row = {"size": size, "tokens": tokens, "attention": label, "mesh": mesh_spec,
                       "devices": 1 if shape is None else shape[0] * shape[1]}
                if row["devices"] > n_dev:
                    continue
                if shape is not None and cfg.num_attention_heads % shape[1]:
                    row["skipped"] = f"{cfg.num_attention_heads} heads not divisible by seq={shape[1]}"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    continue
                mesh = None if shape is None else parallel.make_mesh(seq=shape[1], data=shape[0])
                parallel.shard_model(model, mesh)  # place the weights once, not on every sample() call

                def run(n, mesh=mesh, attention=attention):
                    return sampling.sample(model, text, mask, key=key, latent_shape=(4, t_lat, h_lat, w_lat),
                                           plan=sampling.euler_ancestral(n), negative_text=neg_text,
                                           negative_mask=neg_mask, guidance_scale=7.5, attention=attention,
                                           mesh=mesh)

                c0 = time.perf_counter()
                jax.block_until_ready(run(1))
                row["compile_plus_1step_s"] = round(time.perf_counter() - c0, 2)
                times = {n1: float("inf"), n2: float("inf")}
                for _ in range(args.reps):  # best of reps: one-off stalls (first launches, host noise) drop out
                    for n in (n1, n2):
                        t0 = time.perf_counter()
                        jax.block_until_ready(run(n))
                        times[n] = min(times[n], time.perf_counter() - t0)
                per_step = (times[n2] - times[n1]) / (n2 - n1)
                row.update(s_per_cfg_step=round(per_step, 4), runs={str(k): round(v, 3) for k, v in times.items()},
                           all_to_all_gb_per_device=all_to_all_gb_per_device(
                               cfg, tokens, 2, shape, jnp.dtype(cfg.compute_jnp_dtype).itemsize),
                           peak_gib_device0=round(peak_gib(), 2))
                if shape is None:
                    base = per_step
                if base:
                    row["speedup"] = round(base / per_step, 2)
                    row["efficiency"] = round(base / per_step / row["devices"], 2)
                if args.profile:
                    with tempfile.TemporaryDirectory() as tmp:
                        with jax.profiler.trace(tmp):
                            jax.block_until_ready(run(1))
                        share = collective_share(Path(tmp))
                    row["profile"] = share if share is not None else "no device op events (CPU?)"
                rows.append(row)
                print(json.dumps(row), flush=True)

    if jax.process_index() == 0:
        write_results(out, args.tag, header, rows)


def write_results(out: Path, tag: str, header: dict, rows: list[dict]) -> None:
    tag = f"_{tag}" if tag else ""
    (out / f"bench_parallel{tag}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    lines = [f"# Sequence-parallel sampling speed ({header['device']}, jax {header['jax']}, {header['date']})", "",
             f"Command: `{header['command']}`", "", f"Weights: {header['weights']}.", "",
             "One Euler-ancestral CFG step (batch 2), seconds; mesh = data x seq (\"1\" = one device, no mesh); "
             "all-to-all GB = analytic bytes each device sends per step; collective share from a profile.", "",
             *(["**Script check only: a tiny model on fake CPU devices sharing the host's cores; the timings say "
                "nothing about GPU speed.**", ""] if "TINY" in header["weights"] else []),
             "| size | tokens | attention | mesh | devices | s / CFG step | speedup | efficiency | all-to-all GB/dev "
             "| collective share | peak GiB dev0 | compile+1 step s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['size']} | {r['tokens']} | {r['attention']} | {r['mesh']} | {r['devices']} | "
                         f"skipped: {r['skipped']} | | | | | | |")
            continue
        prof = r.get("profile")
        share = f"{prof['collective_share']:.1%}" if isinstance(prof, dict) else "-"
        lines.append(
            f"| {r['size']} | {r['tokens']} | {r['attention']} | {r['mesh']} | {r['devices']} | "
            f"{r['s_per_cfg_step']} | {r.get('speedup', '-')} | {r.get('efficiency', '-')} | "
            f"{r['all_to_all_gb_per_device']} | {share} | {r['peak_gib_device0']} | {r['compile_plus_1step_s']} |")
    (out / f"bench_parallel{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(out / f"bench_parallel{tag}.png", header, rows)


def plot(path: Path, header: dict, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if "speedup" in r:
            groups.setdefault((r["size"], r["attention"]), []).append(r)
    max_dev = max([r["devices"] for r in rows if "speedup" in r] or [1])
    for (size, attn), rs in groups.items():
        rs = sorted(rs, key=lambda r: (r["devices"], r["mesh"]))
        ax.plot([r["devices"] for r in rs], [r["speedup"] for r in rs], "o-", label=f"{size} {attn}")
    ax.plot([1, max_dev], [1, max_dev], "k:", lw=1, label="linear")
    ax.set_xlabel("devices")
    ax.set_ylabel("speedup per CFG step vs. 1 device")
    note = " - TINY model, script check only" if "TINY" in header["weights"] else ""
    ax.set_title(f"Ulysses sequence parallelism{note}\n{header['device']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
