"""Benchmark of tile attention (Efficient-vDiT Table 1 masks) against dense cuDNN attention on one GPU.

Random inputs (normal, bf16), 24 heads x head dim 96, 720p latents (F = 45 x 80 = 3,600 tokens per frame):
29 frames -> T = 8 (28,800 tokens), 93 frames -> T = 24 (86,400 tokens).

For every backend that runs on GPU (mosaic_gpu, triton, gather) and every mask of Table 1 plus full:
median forward time, effective TFLOP/s over kept tiles (4 * kept_tiles * F^2 * D * H * B / time), speedup against
``jax.nn.dot_product_attention(implementation="cudnn")`` dense on the same inputs, and the ideal speedup
T^2 / kept_tiles; optionally forward+backward (``jax.vjp``) against cuDNN forward+backward.

Before timing, every backend is checked on the GPU: against the dense fp32 reference on small shapes (outputs and
gradients), and at full size against the gather backend (cuDNN) with the same mask and against cuDNN with the full
mask. Max errors are printed and stored.

Usage (GPU; the runs behind experiments/results/tile_attention/, one command each, wrapped here)::

    PYTHONUNBUFFERED=1 python -m experiments.bench_tile_attention --out $OUT --frames 29,93 --batches 1,2
        --checks small,big --variants --reps 5 --tag fwd
    PYTHONUNBUFFERED=1 python -m experiments.bench_tile_attention --out $OUT --frames 29,93 --batches 1
        --no-fwd --bwd --bwd-batches 1 --variants --checks none --reps 4 --tag bwd

CPU smoke test of this script (tiny shapes, XLA instead of cuDNN): ``BENCH_DRYRUN=1 python ... --backends gather``.

Report only (rebuild the table and plot from raw JSON files, any machine)::

    python -m experiments.bench_tile_attention --report experiments/results/tile_attention/raw_*.json \
        --out experiments/results/tile_attention
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback

import numpy as np

HEADS, HEAD_DIM, F_720P = 24, 96, 3600
DRYRUN = os.environ.get("BENCH_DRYRUN") == "1"  # CPU smoke test of this script: tiny shapes, XLA for cuDNN
if DRYRUN:
    HEADS, F_720P = 2, 160
FRAMES = {29: 8, 93: 24}
TABLE1 = {8: ["full", "4:4", "3:5", "2:6", "1:7"], 24: ["full", "12:12", "8:16", "6:18", "4:20", "3:21"]}
# Goals and anchors from the issue (H100, bf16, batch 1)
CUDNN_ANCHOR_MS = {8: 14.9, 24: 138.8}


def device_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
        return out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        import jax
        return jax.devices()[0].device_kind


def timeit(fn, args, reps: int, warmup: int = 2) -> tuple[float, list[float], float]:
    """(median ms, all ms, first-call seconds incl. compile). Synchronises with block_until_ready."""
    import jax
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), times, first


def rel_err(x, ref) -> float:
    import jax.numpy as jnp
    x = jnp.asarray(x, jnp.float32)
    ref = jnp.asarray(ref, jnp.float32)
    return float(jnp.linalg.norm((x - ref).ravel()) / (jnp.linalg.norm(ref.ravel()) + 1e-30))


def max_err(x, ref) -> float:
    import jax.numpy as jnp
    return float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(ref, jnp.float32))))


def make_fn(backend: str, mask, f: int, config=None):
    import jax
    import pallas_kernels as pk

    if backend == "cudnn":
        impl = "xla" if DRYRUN else "cudnn"
        return jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, implementation=impl))
    return jax.jit(lambda q, k, v: pk.tile_attention(q, k, v, mask, tokens_per_frame=f, backend=backend,
                                                     config=config))


def make_vjp_fn(fwd):
    import jax

    def run(q, k, v, do):
        out, pull = jax.vjp(fwd, q, k, v)
        return out, pull(do)

    return jax.jit(run)


# ----------------------------------------------------------------------------------------------------- checks
def run_checks(backends, log) -> list[dict]:
    """Small-shape checks of outputs and gradients against the dense fp32 reference, on the GPU."""
    import jax
    import jax.numpy as jnp
    import pallas_kernels as pk
    from pallas_kernels.reference import reference_attention

    rows = []
    cases = [(4, 256, "1:3", 2), (5, 200, "window:1", 1), (9, 144, "1:8", 1)]
    if DRYRUN:
        cases = cases[:1]
    for t, f, spec, b in cases:
        mask = pk.TileMask.from_string(spec, t)
        n = t * f
        ks = jax.random.split(jax.random.key(t * 1000 + f), 4)
        q, k, v = (jax.random.normal(x, (b, n, 4, HEAD_DIM), jnp.float32).astype(jnp.bfloat16) for x in ks[:3])
        do = jax.random.normal(ks[3], (b, n, 4, HEAD_DIM), jnp.float32).astype(jnp.bfloat16)
        ref_f = lambda q, k, v: reference_attention(q.astype(jnp.float32), k.astype(jnp.float32),  # noqa: E731
                                                    v.astype(jnp.float32), mask, tokens_per_frame=f)
        ref_out, ref_pull = jax.vjp(ref_f, q, k, v)
        ref_grads = ref_pull(do.astype(jnp.float32))
        for be in backends:
            row = dict(kind="check_small", backend=be, T=t, F=f, mask=spec, B=b)
            try:
                fwd = lambda q, k, v, be=be: pk.tile_attention(q, k, v, mask, tokens_per_frame=f,  # noqa: E731
                                                               backend=be)
                out, grads = make_vjp_fn(fwd)(q, k, v, do)
                row.update(out_rel=rel_err(out, ref_out), out_max=max_err(out, ref_out),
                           dq_rel=rel_err(grads[0], ref_grads[0]), dk_rel=rel_err(grads[1], ref_grads[1]),
                           dv_rel=rel_err(grads[2], ref_grads[2]),
                           finite=bool(jnp.isfinite(out.astype(jnp.float32)).all()
                                       and all(jnp.isfinite(g.astype(jnp.float32)).all() for g in grads)))
                row["ok"] = row["finite"] and max(row["out_rel"], row["dq_rel"], row["dk_rel"], row["dv_rel"]) < 2e-2
            except Exception as e:  # noqa: BLE001
                row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:400]}")
                traceback.print_exc()
            log(row)
            rows.append(row)
    return rows


def run_big_checks(backends, t: int, specs, log, b: int = 1) -> list[dict]:
    """Full-size checks: each backend vs the gather backend (cuDNN per frame group) for the same mask, and vs
    cuDNN dense for the full mask. Also a framewise fp32-score reference on the first query frame."""
    import jax
    import jax.numpy as jnp
    import pallas_kernels as pk

    f = F_720P
    n = t * f
    ks = jax.random.split(jax.random.key(7), 3)
    q, k, v = (jax.random.normal(x, (b, n, HEADS, HEAD_DIM), jnp.float32).astype(jnp.bfloat16) for x in ks)
    rows = []
    dense = make_fn("cudnn", None, f)(q, k, v)
    for spec in specs:
        mask = pk.TileMask.from_string(spec, t)
        gathered = make_fn("gather", mask, f)(q, k, v)
        # framewise fp32 reference for query frame 1 (a non-global frame for k:m) on 4 heads
        qi = 1 if t > 1 else 0
        frames = list(mask.key_frames(qi))
        hs = min(4, HEADS)
        kk = k[:, :, :hs].reshape(b, t, f, hs, HEAD_DIM)[:, frames].reshape(b, -1, hs, HEAD_DIM).astype(jnp.float32)
        vv = v[:, :, :hs].reshape(b, t, f, hs, HEAD_DIM)[:, frames].reshape(b, -1, hs, HEAD_DIM).astype(jnp.float32)
        qq = q[:, qi * f:(qi + 1) * f, :hs].astype(jnp.float32)
        ref_frame = jax.nn.dot_product_attention(qq, kk, vv, implementation="xla")
        for be in backends:
            row = dict(kind="check_big", backend=be, T=t, F=f, mask=spec, B=b)
            try:
                out = gathered if be == "gather" else make_fn(be, mask, f)(q, k, v)
                row.update(vs_gather_rel=rel_err(out, gathered), vs_gather_max=max_err(out, gathered),
                           frame_ref_rel=rel_err(out[:, qi * f:(qi + 1) * f, :hs], ref_frame),
                           frame_ref_max=max_err(out[:, qi * f:(qi + 1) * f, :hs], ref_frame))
                if spec == "full":
                    row.update(vs_cudnn_rel=rel_err(out, dense), vs_cudnn_max=max_err(out, dense))
                row["ok"] = row["frame_ref_rel"] < 2e-2 and row["vs_gather_rel"] < 2e-2
            except Exception as e:  # noqa: BLE001
                row.update(ok=False, error=f"{type(e).__name__}: {str(e)[:400]}")
                traceback.print_exc()
            log(row)
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------- timing
def run_timing(backends, t: int, b: int, specs, reps: int, log, mode: str, variants=None) -> list[dict]:
    """mode "fwd": forward times; "fwdbwd": forward+backward (jax.vjp) times. Baseline: cuDNN dense."""
    import jax
    import jax.numpy as jnp
    import pallas_kernels as pk

    f = F_720P
    n = t * f
    ks = jax.random.split(jax.random.key(t * 10 + b), 4)
    q, k, v, do = (jax.random.normal(x, (b, n, HEADS, HEAD_DIM), jnp.float32).astype(jnp.bfloat16) for x in ks)
    rows = []
    base = {}
    if mode == "fwd":
        ms, times, first = timeit(make_fn("cudnn", None, f), (q, k, v), reps)
        base["fwd"] = ms
        r = dict(kind="time", backend="cudnn_dense", T=t, F=f, B=b, mask="dense", kept_tiles=t * t, pass_="fwd",
                 ms=ms, times=times, compile_s=first)
        log(r)
        rows.append(r)
    else:
        ms, times, first = timeit(make_vjp_fn(make_fn("cudnn", None, f)), (q, k, v, do), max(3, reps // 2))
        base["fwdbwd"] = ms
        r = dict(kind="time", backend="cudnn_dense", T=t, F=f, B=b, mask="dense", kept_tiles=t * t,
                 pass_="fwdbwd", ms=ms, times=times, compile_s=first)
        log(r)
        rows.append(r)
    entries = [(be, None, be) for be in backends]
    if variants:
        entries += [(be, cfg, label) for be, cfg, label, modes in variants if mode in modes and be in backends]
    for spec in specs:
        mask = pk.TileMask.from_string(spec, t)
        kept = mask.kept_tiles
        for be, cfg, label in entries:
            for pass_, flop_factor in ([("fwd", 4)] if mode == "fwd" else [("fwdbwd", 14)]):
                row = dict(kind="time", backend=label, T=t, F=f, B=b, mask=spec, kept_tiles=kept, pass_=pass_,
                           density=mask.density, ideal_speedup=t * t / kept)
                try:
                    fwd = make_fn(be, mask, f, cfg)
                    if pass_ == "fwd":
                        ms, times, first = timeit(fwd, (q, k, v), reps)
                    else:
                        fn = make_vjp_fn(lambda q, k, v, be=be, cfg=cfg: pk.tile_attention(
                            q, k, v, mask, tokens_per_frame=f, backend=be, config=cfg))
                        ms, times, first = timeit(fn, (q, k, v, do), max(3, reps // 2))
                    flops = flop_factor * kept * f * f * HEAD_DIM * HEADS * b
                    row.update(ms=ms, times=times, compile_s=first, tflops=flops / ms / 1e9,
                               speedup=base[pass_] / ms,
                               goal_ratio=(base[pass_] / ms) / (t * t / kept))
                except Exception as e:  # noqa: BLE001
                    row.update(error=f"{type(e).__name__}: {str(e)[:400]}")
                    traceback.print_exc()
                log(row)
                rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------- report
def write_report(rows: list[dict], meta: dict, out_dir: str, stem: str = "tile_attention") -> None:
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"# Tile attention benchmark ({meta.get('device', '?')})", ""]
    for run in meta.get("runs", [meta]):
        tag = f" (rows tagged @{run['label']})" if run.get("label", "-") != "-" else ""
        lines.append(f"- run `{run.get('file', stem)}`{tag}: command `{run.get('command', '?')}`; "
                     f"device {run.get('device', '?')}; jax {run.get('jax', '?')}; date {run.get('date', '?')}")
    lines += ["", "Random bf16 inputs, 24 heads x head dim 96, F = 3,600 tokens per frame (720p latents). Times are "
              "medians (ms); speedup is against cuDNN dense on the same inputs; ideal = T^2 / kept tiles; goal: "
              "speedup >= 0.9 x ideal (forward), >= 0.7 x ideal (forward+backward). TFLOP/s count kept tiles "
              "only (4 x kept x F^2 x D x H x B forward, 14 x for forward+backward).", ""]
    checks = [r for r in rows if r.get("kind", "").startswith("check")]
    if checks:
        lines += ["## Correctness on the GPU", "",
                  "| check | backend | T | F | mask | B | out rel err | dq / dk / dv rel err | vs gather rel | "
                  "frame ref rel | vs cuDNN (full) rel | ok |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in checks:
            g = "/".join(f"{r[x]:.1e}" for x in ("dq_rel", "dk_rel", "dv_rel") if x in r) or "-"
            fmt = lambda k: f"{r[k]:.1e}" if k in r else "-"  # noqa: E731
            lines.append(f"| {r['kind']} | {r['backend']} | {r['T']} | {r['F']} | {r['mask']} | {r['B']} | "
                         f"{fmt('out_rel')} | {g} | {fmt('vs_gather_rel')} | {fmt('frame_ref_rel')} | "
                         f"{fmt('vs_cudnn_rel')} | {r.get('ok', '-')}{' ' + r['error'][:80] if 'error' in r else ''} |")
        lines.append("")
    times = [r for r in rows if r.get("kind") == "time"]
    for pass_ in ("fwd", "fwdbwd"):
        sel = [r for r in times if r["pass_"] == pass_]
        if not sel:
            continue
        lines += [f"## {'Forward' if pass_ == 'fwd' else 'Forward + backward'}", "",
                  "| frames (T) | B | mask | kept tiles | backend | ms | TFLOP/s | speedup vs cuDNN dense | ideal | "
                  "speedup / ideal | goal met |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        goal = 0.9 if pass_ == "fwd" else 0.7
        for r in sel:
            frames = {v: k for k, v in FRAMES.items()}.get(r["T"], "?")
            if "error" in r:
                lines.append(f"| {frames} ({r['T']}) | {r['B']} | {r['mask']} | {r['kept_tiles']} | {r['backend']} "
                             f"| error: {r['error'][:100]} | | | | | |")
                continue
            if r["backend"].startswith("cudnn_dense"):
                flops = (4 if pass_ == "fwd" else 14) * r["T"] ** 2 * r["F"] ** 2 * HEAD_DIM * HEADS * r["B"]
                label = r["backend"].replace("cudnn_dense", "cuDNN")
                lines.append(f"| {frames} ({r['T']}) | {r['B']} | dense | {r['kept_tiles']} | {label} | "
                             f"{r['ms']:.2f} | {flops / r['ms'] / 1e9:.0f} | 1.00 | 1.00 | | |")
                continue
            lines.append(f"| {frames} ({r['T']}) | {r['B']} | {r['mask']} | {r['kept_tiles']} | {r['backend']} | "
                         f"{r['ms']:.2f} | {r['tflops']:.0f} | {r['speedup']:.2f} | {r['ideal_speedup']:.2f} | "
                         f"{r['goal_ratio']:.2f} | {'yes' if r['goal_ratio'] >= goal else 'NO'} |")
        lines.append("")
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        passes = [p for p in ("fwd", "fwdbwd") if any(r.get("pass_") == p and "speedup" in r for r in times)]
        if not passes:
            return
        fig, axes = plt.subplots(1, len(passes), figsize=(6.5 * len(passes), 5), squeeze=False)
        for ax, pass_ in zip(axes[0], passes):
            sel = [r for r in times if r.get("pass_") == pass_ and "speedup" in r and "[" not in r["backend"]
                   and "@" not in r["backend"]]
            dens = np.linspace(0.2, 1.0, 100)
            ax.plot(dens, 1 / dens, "k-", label="ideal 1/density")
            goal = 0.9 if pass_ == "fwd" else 0.7
            ax.plot(dens, goal / dens, "k:", label=f"goal {goal}/density")
            markers = {8: "o", 24: "s"}
            colors = {"mosaic_gpu": "C0", "triton": "C1", "gather": "C2"}
            for r in sel:
                ax.scatter(r["density"], r["speedup"], marker=markers.get(r["T"], "x"),
                           color=colors.get(r["backend"], "C3"), alpha=0.5 + 0.25 * (r["B"] - 1))
            for be, col in colors.items():
                ax.scatter([], [], color=col, label=be)
            for t_, mk in markers.items():
                ax.scatter([], [], marker=mk, color="gray", label=f"T={t_}")
            ax.set_xlabel("density (kept tiles / T^2)")
            ax.set_ylabel("speedup vs cuDNN dense")
            ax.set_title(f"{'forward' if pass_ == 'fwd' else 'forward+backward'} ({meta.get('device', '')})")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f"{stem}.png"), dpi=120)
    except Exception:  # noqa: BLE001
        traceback.print_exc()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="experiments/results/tile_attention")
    ap.add_argument("--frames", default="29,93")
    ap.add_argument("--batches", default="1,2")
    ap.add_argument("--backends", default="mosaic_gpu,triton,gather")
    ap.add_argument("--masks", default="", help="comma list overriding Table 1 (e.g. full,1:7)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--bwd", action="store_true")
    ap.add_argument("--no-fwd", action="store_true", help="skip the forward timings")
    ap.add_argument("--bwd-batches", default="1")
    ap.add_argument("--bwd-backends", default="")
    ap.add_argument("--no-checks", action="store_true")
    ap.add_argument("--big-checks", action="store_true")
    ap.add_argument("--variants", action="store_true", help="also time kernel variants (first batch size only)")
    ap.add_argument("--variants-all", action="store_true", help="and the Mosaic GPU tuning variants")
    ap.add_argument("--checks", default="small", help="comma list of 'small', 'big' or 'none'")
    ap.add_argument("--tag", default="run")
    ap.add_argument("--report", nargs="*", help="only rebuild the report from these raw JSON files")
    args = ap.parse_args(argv)

    if args.report is not None:
        rows, runs = [], []
        for spec in args.report:
            path, _, label = spec.partition("@")
            with open(path) as fh:
                d = json.load(fh)
            runs.append({**d["meta"], "file": os.path.basename(path), "label": label or "-"})
            for r in d["rows"]:
                if label:  # an earlier run kept for its variants: drop failures and tag its rows
                    if r.get("kind") != "time" or "error" in r:
                        continue
                    r = {**r, "backend": f"{r['backend']}@{label}"}
                rows.append(r)
        meta = {"device": runs[0]["device"], "jax": runs[0]["jax"], "runs": runs}
        write_report(rows, meta, args.out)
        print(open(os.path.join(args.out, "tile_attention.md")).read())
        return

    import jax
    from pallas_kernels.mosaic_gpu import MosaicConfig

    meta = dict(command="PYTHONUNBUFFERED=1 python -m experiments.bench_tile_attention " + " ".join(sys.argv[1:]),
                device=device_name(), jax=jax.__version__, date=datetime.datetime.now().isoformat(timespec="seconds"),
                python=platform.python_version(), backend_devices=str(jax.devices()))
    print(json.dumps(meta), flush=True)
    os.makedirs(args.out, exist_ok=True)
    raw_path = os.path.join(args.out, f"raw_{args.tag}.json")
    rows: list[dict] = []

    def log(row):
        short = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "times"}
        print(json.dumps(short), flush=True)
        rows.append(row)
        with open(raw_path, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)

    backends = [b for b in args.backends.split(",") if b]
    checks = set(args.checks.split(",")) - ({"none"} | ({"small"} if args.no_checks else set()))
    if "small" in checks:
        run_checks(backends, log)
    frames = [int(x) for x in args.frames.split(",") if x]
    batches = [int(x) for x in args.batches.split(",") if x]
    variants = None
    if args.variants:
        from pallas_kernels.triton import TritonConfig
        fwd, bwd = ("fwd",), ("fwdbwd",)
        variants = [("mosaic_gpu", MosaicConfig(lpt_order=False), "mosaic_gpu[no-lpt]", fwd),
                    ("triton", TritonConfig(block_q=128, block_kv=64, num_warps=8), "triton[128x64w8]", fwd),
                    ("mosaic_gpu", MosaicConfig(backward="gather"), "mosaic_gpu[gather-bwd]", bwd),
                    ("triton", TritonConfig(block_q_bwd=128, block_kv_bwd=64, num_warps_bwd=8),
                     "triton[bwd128x64w8]", bwd)]
        if args.variants_all:
            variants += [("mosaic_gpu", MosaicConfig(pad_head_dim=True), "mosaic_gpu[pad128]", fwd),
                         ("mosaic_gpu", MosaicConfig(max_concurrent_steps=3), "mosaic_gpu[3stage]", fwd),
                         ("mosaic_gpu", MosaicConfig(block_kv=64), "mosaic_gpu[bkv64]", fwd),
                         ("mosaic_gpu", MosaicConfig(use_schedule_barrier=False), "mosaic_gpu[nosched]", fwd)]
    for fr in frames:
        t = FRAMES[fr]
        specs = [s for s in args.masks.split(",") if s] or TABLE1[t]
        if args.big_checks or "big" in checks:
            run_big_checks(backends, t, specs, log)
        for b in batches:
            if not args.no_fwd:
                run_timing(backends, t, b, specs, args.reps, log, mode="fwd",
                           variants=variants if b == batches[0] and fr == frames[0] else None)
        if args.bwd:
            bwd_backends = [x for x in (args.bwd_backends or args.backends).split(",") if x]
            for b in [int(x) for x in args.bwd_batches.split(",") if x]:
                vs = variants if fr == frames[0] else [x for x in (variants or []) if "gather-bwd" in x[2]]
                run_timing(bwd_backends, t, b, specs, args.reps, log, mode="fwdbwd", variants=vs)
    write_report(rows, meta, args.out, stem=f"tile_attention_{args.tag}")
    summary = [r for r in rows if r.get("kind") == "time"]
    print("\nSUMMARY")
    for r in summary:
        if "error" in r:
            print(f"{r['T']:>3} B{r['B']} {r['mask']:>6} {r['backend']:<20} {r['pass_']:<6} ERROR {r['error'][:120]}")
        else:
            print(f"{r['T']:>3} B{r['B']} {r['mask']:>6} {r['backend']:<20} {r['pass_']:<6} {r['ms']:9.2f} ms "
                  f"{r.get('speedup', 1.0):5.2f}x ideal {r.get('ideal_speedup', 1.0):5.2f} "
                  f"ratio {r.get('goal_ratio', 1.0):4.2f}")


if __name__ == "__main__":
    main()
