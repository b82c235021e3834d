"""Benchmark: CausalVAE v1.2 decode of DiT-sized latents with the release's tiling, on one GPU.

Random weights (PyTorch-default init) in the release widths (hidden 128, multipliers 1,2,4,4, the golden block
layout), bfloat16 parameters and compute, the release sample script's tiling (512/64/29/8, overlap 0.125).
Cases: 29x720p (latent 4x8x90x160) and 93x720p (4x24x90x160). For each case: compile time (sum of the
per-stage compilations, reported apart), the median of ``--runs`` timed decodes (after a warm-up call), and
the peak device memory (``memory_stats()['peak_bytes_in_use']``, process-wide, so cases run smallest first).
Also: bf16 vs fp32 and conv-implementation agreement on a small latent (real widths), a per-stage time
breakdown of one 8x64x64 tile, and single-conv micro-benchmarks of the conv implementations.

Reference (H100, real v1.2.0 PyTorch code, same config, random weights, bf16, release tiling):
29x720p 4.53 s / 5.4 GiB peak, 93x720p 11.29 s / 10.8 GiB. Goal: <= 0.7x the time (3.2 s, 7.9 s).

    python -m experiments.bench_vae --out experiments/results/vae
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit.vae import ComputeConfig, TilingConfig, VAEConfig, ops, random_vae
from jax_vdit.vae import runtime

ROOT = Path(__file__).resolve().parents[1]

TORCH_REF = {"29x720p": {"seconds": 4.53, "peak_gib": 5.4}, "93x720p": {"seconds": 11.29, "peak_gib": 10.8}}
CASES = {"29x720p": (8, 90, 160), "93x720p": (24, 90, 160)}
TFLOP_TILED = {"29x720p": 676.0, "93x720p": 2242.0}  # spec section 8 (release tiling 512/64/29/8)
GIB = 2**30
RELEASE_CFG = VAEConfig()
# (T, H, W) of the stage inputs of one 8x64x64 latent tile (release widths), for the memory table
_TILE_STAGE_SHAPES = {(8, 64, 64), (15, 128, 128), (29, 256, 256), (29, 512, 512)}
MICRO_SIZE = 512
SANITY_LATENT = (1, 3, 16, 16, 4)


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def peak_bytes() -> int:
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("peak_bytes_in_use", 0))


def in_use_bytes() -> int:
    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("bytes_in_use", 0))


def block(x):
    return jax.tree.map(lambda a: a.block_until_ready(), x)


class Bench:
    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.result: dict = {
            "command": " ".join(["python", "-m", "experiments.bench_vae", *sys.argv[1:]]),
            "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": jax.devices()[0].device_kind,
            "backend": jax.default_backend(),
            "jax": jax.__version__,
            "jaxlib": getattr(jax.lib, "__version__", None) or __import__("jaxlib").__version__,
            "flax": __import__("flax").__version__,
            "python": platform.python_version(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "note": "random weights (PyTorch-default init), release widths (hidden 128, mult 1,2,4,4), bf16 params "
            "and compute; timings exclude compilation (reported apart); peak = process-wide peak_bytes_in_use",
            "tiling": "sample_script 512/64/29/8 overlap 0.125",
            "torch_reference_h100": TORCH_REF,
            "cases": {},
        }

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        (self.out / "bench_vae.json").write_text(json.dumps(self.result, indent=2, default=str))

    # ------------------------------------------------------------------------------------------- cases
    def compute_config(self) -> ComputeConfig:
        a = self.args
        return ComputeConfig(conv_impl=a.impl, chunk_bytes=a.chunk_mib << 20, fuse_upsample=not a.no_fuse,
                             staged=not a.monolithic, shortcut_on_the_fly=a.shortcut_on_the_fly,
                             in_place_conv2=a.in_place_conv2)

    def run_case(self, vae, name: str) -> None:
        t, h, w = CASES[name]
        tiling = TilingConfig.sample_script(max_tile_batch=self.args.tile_batch)
        z = jax.random.normal(jax.random.key(1), (1, t, h, w, 4), jnp.float32) * 5.0
        n_log = len(runtime.compile_log())
        log(f"{name}: first call (compiles every stage of every tile shape)")
        t1 = time.perf_counter()
        out = block(runtime.decode_nthwc(vae, z, tiling=tiling))
        first = time.perf_counter() - t1
        compiled = runtime.compile_log()[n_log:]
        compile_s = sum(e["seconds"] for e in compiled)
        times = []
        for i in range(self.args.runs):
            del out
            t1 = time.perf_counter()
            out = block(runtime.decode_nthwc(vae, z, tiling=tiling))
            times.append(time.perf_counter() - t1)
            log(f"{name}: run {i}: {times[-1]:.3f} s")
        frames = out.shape[1]
        finite = bool(jnp.isfinite(out.astype(jnp.float32)).all())
        med = statistics.median(times)
        ref = TORCH_REF[name]
        self.result["cases"][name] = {
            "latent": [4, t, h, w],
            "video": list(out.shape),
            "frames": frames,
            "finite": finite,
            "first_call_s": first,
            "compile_s": compile_s,
            "stages_compiled": len(compiled),
            "runs_s": times,
            "median_s": med,
            "peak_gib": peak_bytes() / GIB,
            "in_use_after_gib": in_use_bytes() / GIB,
            "torch_s": ref["seconds"],
            "torch_peak_gib": ref["peak_gib"],
            "ratio_vs_torch": med / ref["seconds"],
            "effective_tflops": TFLOP_TILED[name] / med,
            "compile_log": compiled,
        }
        log(f"{name}: median {med:.3f} s ({med / ref['seconds']:.2f}x torch), compile {compile_s:.1f} s "
            f"({len(compiled)} stages), peak {peak_bytes() / GIB:.2f} GiB, frames {frames}, finite {finite}")
        del out
        self.save()

    def variant_no_fuse(self, vae) -> None:
        """29x720p with ComputeConfig(fuse_upsample=False), same weights: the time/memory trade of the fusion."""
        from dataclasses import replace

        from flax import nnx

        from jax_vdit.vae import abstract_vae

        compute = replace(vae.compute, fuse_upsample=False)
        g, _ = nnx.split(abstract_vae(vae.config, dtype=vae.dtype, param_dtype=vae.param_dtype, compute=compute))
        other = nnx.merge(g, nnx.state(vae))
        t, h, w = CASES["29x720p"]
        z = jax.random.normal(jax.random.key(1), (1, t, h, w, 4), jnp.float32) * 5.0
        tiling = TilingConfig.sample_script()
        n_log = len(runtime.compile_log())
        block(runtime.decode_nthwc(other, z, tiling=tiling))
        compiled = runtime.compile_log()[n_log:]
        times = []
        for _ in range(self.args.runs):
            t1 = time.perf_counter()
            block(runtime.decode_nthwc(other, z, tiling=tiling))
            times.append(time.perf_counter() - t1)
        self.result["variant_29x720p_no_fuse"] = {
            "compute_config": repr(compute), "runs_s": times, "median_s": statistics.median(times),
            "compile_s": sum(e["seconds"] for e in compiled), "compile_log": compiled,
            "note": "same process after the default cases: peak memory not separable; see compile_log memory",
        }
        log(f"variant no-fuse 29x720p: median {statistics.median(times):.3f} s")
        self.save()

    def profile_tile(self, vae) -> None:
        """Per-stage times of one 8x64x64 latent tile (synchronising after each stage)."""
        tile = (1, CASES["29x720p"][0], min(64, CASES["29x720p"][1]), min(64, CASES["29x720p"][2]), 4)
        z = jax.random.normal(jax.random.key(2), tile, jnp.float32) * 5.0
        original = runtime.run_stage
        rows = []

        def timed(fn, modules, x, *, donate=False):
            block(x)
            t1 = time.perf_counter()
            y = block(original(fn, modules, x, donate=donate))
            rows.append({"stage": fn.__name__, "input": list(x.shape), "ms": (time.perf_counter() - t1) * 1e3})
            return y

        runtime.run_stage = timed
        try:
            block(runtime.decode_nthwc(vae, z))  # compile (8x64x64 is a tile shape already compiled)
            rows.clear()
            block(runtime.decode_nthwc(vae, z))
        finally:
            runtime.run_stage = original
        self.result["tile_profile_8x64x64"] = rows
        total = sum(r["ms"] for r in rows)
        log(f"tile profile: {total:.1f} ms total; top: " + ", ".join(
            f"{r['stage']}{tuple(r['input'][1:])}={r['ms']:.1f}" for r in sorted(rows, key=lambda r: -r["ms"])[:6]))
        self.save()

    # ------------------------------------------------------------------------------------------- sanity
    def sanity(self) -> None:
        """bf16 vs fp32 and conv implementations on a small latent, real widths, same weights."""
        from flax import nnx

        from jax_vdit.vae import abstract_vae

        cfg = RELEASE_CFG
        v32 = random_vae(cfg, seed=0, dtype=jnp.float32)
        state32 = nnx.state(v32)
        state16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), state32)
        z = jax.random.normal(jax.random.key(3), SANITY_LATENT, jnp.float32) * 5.0
        outs = {}
        variants = [
            ("fp32_stack", jnp.float32, "stack", state32),
            ("fp32_conv3d", jnp.float32, "conv3d", state32),
            ("fp32_taps", jnp.float32, "taps", state32),
            ("bf16_stack", jnp.bfloat16, "stack", state16),
            ("bf16_conv3d", jnp.bfloat16, "conv3d", state16),
        ]
        if self.args.sanity_light:
            variants = [v for v in variants if v[0] in ("fp32_stack", "bf16_stack")]
        for label, dtype, impl, st in variants:
            g, _ = nnx.split(abstract_vae(cfg, dtype=dtype, param_dtype=dtype, compute=ComputeConfig(conv_impl=impl)))
            outs[label] = np.asarray(runtime.decode_nthwc(nnx.merge(g, st), z).astype(jnp.float32))
        ref_name = "fp32_conv3d" if "fp32_conv3d" in outs else "fp32_stack"
        ref = outs[ref_name]

        def rel(a):
            return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))

        res = {k: {"rel_err": rel(v), "max_abs_err": float(np.abs(v - ref).max()),
                   "finite": bool(np.isfinite(v).all())} for k, v in outs.items()}
        res["reference"] = ref_name
        res["ref_rms"] = float(np.sqrt(np.mean(ref**2)))
        self.result["sanity_small_latent_1x3x16x16"] = res
        log("sanity: " + ", ".join(f"{k} rel {v['rel_err']:.2e}" for k, v in res.items() if isinstance(v, dict)))
        self.save()

    # ------------------------------------------------------------------------------------------- micro
    def micro(self) -> None:
        """One 128->128 3x3x3 conv (and the GN+SiLU-fused version) at the full-resolution tile shape."""
        self.result["micro"] = micro_convs(self.args.micro_frames, MICRO_SIZE)
        self.save()

    def micro_nhwc(self) -> None:
        """The same in a subprocess with ``--xla_gpu_force_conv_nhwc`` (XLA lays 3-D convs out NCDHW on Hopper)."""
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_gpu_force_conv_nhwc=true"),
                   XLA_PYTHON_CLIENT_MEM_FRACTION="0.15")  # the parent process holds the default 75% pool
        cmd = [sys.executable, "-m", "experiments.bench_vae", "--micro-child",
               "--micro-frames", str(self.args.micro_frames)]
        cmd += ["--smoke"] if self.args.smoke else []
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150, cwd=ROOT)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MICRO_JSON ")]
            self.result["micro_force_nhwc"] = json.loads(line[-1][11:]) if line else {"error": proc.stderr[-2000:]}
        except Exception as err:  # noqa: BLE001 - report and go on
            self.result["micro_force_nhwc"] = {"error": repr(err)}
        log(f"micro_nhwc: {self.result['micro_force_nhwc']}")
        self.save()


def micro_convs(frames: int, size: int = 512) -> dict:
    key = jax.random.key(0)
    x = jax.random.normal(key, (1, frames, size, size, 128), jnp.bfloat16)
    k = (jax.random.normal(key, (3, 3, 3, 128, 128), jnp.float32) * 0.02).astype(jnp.bfloat16)
    b = jnp.zeros((128,), jnp.bfloat16)
    a_, b_ = jnp.ones((1, 1, 1, 1, 128), jnp.float32), jnp.zeros((1, 1, 1, 1, 128), jnp.float32)
    flops = 2 * 27 * 128 * 128 * frames * size * size
    res = {"shape": [1, frames, size, size, 128], "tflop": flops / 1e12}
    variants = [("stack", 1 << 20, False), ("stack", 1024, False), ("stack", 1024, True), ("stack", 1 << 20, True),
                ("taps", 1 << 20, False), ("conv3d", 1 << 20, False)]
    for impl, chunk_mib, fused in variants:
        pre = ops.norm_silu_fn(a_, b_) if fused else None
        f = jax.jit(lambda x, k, b, impl=impl, c=chunk_mib, pre=pre: ops.causal_conv(
            x, k, b, pre=pre, dtype=jnp.bfloat16, impl=impl, chunk_bytes=c << 20))
        name = f"{impl}_chunk{chunk_mib if chunk_mib < (1 << 20) else 'none'}{'_gnsilu' if fused else ''}"
        try:
            t1 = time.perf_counter()
            block(f(x, k, b))
            comp = time.perf_counter() - t1
            ts = []
            for _ in range(5):
                t1 = time.perf_counter()
                block(f(x, k, b))
                ts.append(time.perf_counter() - t1)
            med = statistics.median(ts)
            res[name] = {"ms": med * 1e3, "tflops": flops / med / 1e12, "first_call_s": comp}
        except Exception as err:  # noqa: BLE001
            res[name] = {"error": repr(err)[:500]}
        log(f"micro {name}: {res[name]}")
    return res


def write_report(result: dict, out: Path) -> None:
    lines = [
        "# CausalVAE v1.2 decode benchmark (JAX)",
        "",
        f"- command: `{result['command']}`",
        f"- device: {result['device']} ({result['backend']}), jax {result['jax']}, flax {result['flax']}, "
        f"date {result['date_utc']}",
        f"- **random weights**, release widths (hidden 128, mult 1,2,4,4), bf16 params + compute, "
        f"tiling {result['tiling']}",
        f"- XLA_FLAGS: `{result['xla_flags'] or '(none)'}`; compute config: `{result.get('compute_config')}`",
        "",
        "| case | latent | median decode (s) | PyTorch H100 (s) | ratio | goal (<= 0.7x) | compile (s) | "
        "peak GiB (ours / torch) | eff. TFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in result["cases"].items():
        goal = "met" if c["ratio_vs_torch"] <= 0.7 else "missed"
        lines.append(
            f"| {name} | {'x'.join(map(str, c['latent']))} | {c['median_s']:.2f} | {c['torch_s']:.2f} | "
            f"{c['ratio_vs_torch']:.2f} | {goal} | {c['compile_s']:.1f} ({c['stages_compiled']} stages) | "
            f"{c['peak_gib']:.2f} / {c['torch_peak_gib']:.1f} | {c['effective_tflops']:.0f} |"
        )
    lines += ["", "Runs (s): " + "; ".join(f"{k}: {', '.join(f'{t:.3f}' for t in c['runs_s'])}"
                                          for k, c in result["cases"].items())]
    if "sanity_small_latent_1x3x16x16" in result:
        san = result["sanity_small_latent_1x3x16x16"]
        lines += ["", f"Sanity (latent 1x3x16x16 -> 9x128x128, real widths, same weights; relative L2 error vs "
                      f"{san.get('reference', 'fp32_conv3d')}, output RMS {san.get('ref_rms', 0):.3g}):", ""]
        for k, v in san.items():
            if isinstance(v, dict):
                err = v.get("rel_err", v.get("rel_err_vs_fp32_conv3d"))
                lines.append(f"- {k}: {err:.2e} (max abs {v['max_abs_err']:.3g}, finite {v['finite']})")
    if "variant_29x720p_no_fuse" in result:
        v = result["variant_29x720p_no_fuse"]
        lines += ["", f"Variant 29x720p without the fused upsample+block stage: median {v['median_s']:.3f} s "
                      f"(compile of the changed stages {v['compile_s']:.1f} s)."]
    tile_mem = [e for c in result["cases"].values() for e in c.get("compile_log", [])
                if tuple(e["shape"][1:4]) in _TILE_STAGE_SHAPES and "temp_bytes" in e]
    if tile_mem:
        lines += ["", "XLA memory analysis of the stages of one 8x64x64 tile (GiB; live at once = args + temp + "
                      "out - alias):", "", "| stage | input (T,H,W,C) | args | temp | out | alias | compile s |",
                  "|---|---|---|---|---|---|---|"]
        for e in tile_mem:
            sizes = " | ".join(f"{e[k] / GIB:.2f}" for k in ("argument_bytes", "temp_bytes", "output_bytes",
                                                              "alias_bytes"))
            lines.append(f"| {e['stage']} | {tuple(e['shape'][1:])} | {sizes} | {e['seconds']:.1f} |")
    if "tile_profile_8x64x64" in result:
        rows = result["tile_profile_8x64x64"]
        lines += ["", f"Per-stage time of one 8x64x64 latent tile ({sum(r['ms'] for r in rows):.0f} ms):", "",
                  "| stage | input (T,H,W,C) | ms |", "|---|---|---|"]
        lines += [f"| {r['stage']} | {tuple(r['input'][1:])} | {r['ms']:.1f} |" for r in rows]
    for key in ("micro", "micro_force_nhwc"):
        if key in result and isinstance(result[key], dict):
            lines += ["", f"{key} (one 128->128 3x3x3 conv, input {result[key].get('shape')}):", ""]
            for k, v in result[key].items():
                if isinstance(v, dict) and "ms" in v:
                    lines.append(f"- {k}: {v['ms']:.1f} ms, {v['tflops']:.0f} TFLOP/s")
                elif isinstance(v, dict):
                    lines.append(f"- {k}: {v}")
    (out / "bench_vae.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = list(result["cases"])
        if names:
            fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
            xs = np.arange(len(names))
            ax[0].bar(xs - 0.2, [result["cases"][n]["median_s"] for n in names], 0.4, label="JAX (this)")
            ax[0].bar(xs + 0.2, [result["cases"][n]["torch_s"] for n in names], 0.4, label="PyTorch v1.2.0 (H100)")
            ax[0].plot(xs, [0.7 * result["cases"][n]["torch_s"] for n in names], "k_", ms=30, label="goal 0.7x")
            ax[0].set_xticks(xs, names)
            ax[0].set_ylabel("decode time (s)")
            ax[0].legend(fontsize=7)
            ax[1].bar(xs - 0.2, [result["cases"][n]["peak_gib"] for n in names], 0.4, label="JAX")
            ax[1].bar(xs + 0.2, [result["cases"][n]["torch_peak_gib"] for n in names], 0.4, label="PyTorch")
            ax[1].set_xticks(xs, names)
            ax[1].set_ylabel("peak GPU memory (GiB)")
            ax[1].legend(fontsize=7)
            fig.suptitle(f"CausalVAE v1.2 tiled decode, {result['device']}, random weights, bf16", fontsize=9)
            fig.tight_layout()
            fig.savefig(out / "bench_vae.png", dpi=120)
    except Exception as err:  # noqa: BLE001 - the table and JSON are what matter
        log(f"plot failed: {err!r}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "vae"))
    p.add_argument("--cases", default="29x720p,93x720p")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--impl", default="auto", choices=["auto", "stack", "taps", "conv3d"])
    p.add_argument("--chunk-mib", type=int, default=ComputeConfig().chunk_bytes >> 20)
    p.add_argument("--shortcut-on-the-fly", action=argparse.BooleanOptionalAction,
                   default=ComputeConfig().shortcut_on_the_fly,
                   help="fused upsample stage recomputes the shortcut in conv2's chunks (ComputeConfig)")
    p.add_argument("--in-place-conv2", action=argparse.BooleanOptionalAction,
                   default=ComputeConfig().in_place_conv2,
                   help="ComputeConfig.in_place_conv2: conv2 of blocks with a shortcut conv writes over its input")
    p.add_argument("--tile-batch", type=int, default=1)
    p.add_argument("--no-fuse", action="store_true", help="do not fuse SpatialUpsample2x into the next block")
    p.add_argument("--monolithic", action="store_true", help="one executable per tile instead of stages")
    p.add_argument("--skip", default="", help="comma list of: case,profile,no_fuse,sanity,micro,micro_nhwc")
    p.add_argument("--micro-frames", type=int, default=10)
    p.add_argument("--smoke", action="store_true", help="CPU smoke test: tiny config and small shapes")
    p.add_argument("--micro-nhwc", action="store_true", help="also micro-bench with --xla_gpu_force_conv_nhwc")
    p.add_argument("--budget-s", type=float, default=1e9, help="skip steps that would end after this many seconds")
    p.add_argument("--sanity-light", action="store_true", help="sanity: only fp32 vs bf16 with the stack impl")
    p.add_argument("--micro-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    global CASES, RELEASE_CFG, MICRO_SIZE, SANITY_LATENT
    if args.smoke:
        CASES = {"29x720p": (3, 9, 10), "93x720p": (5, 9, 10)}
        RELEASE_CFG, MICRO_SIZE, SANITY_LATENT = VAEConfig.tiny(), 32, (1, 2, 4, 4, 4)
        args.micro_frames = 3
    if args.micro_child:
        print("MICRO_JSON " + json.dumps(micro_convs(args.micro_frames, MICRO_SIZE)), flush=True)
        return
    bench = Bench(args)
    skip = set(filter(None, args.skip.split(",")))
    compute = bench.compute_config()
    bench.result["compute_config"] = repr(compute)
    log(f"device {bench.result['device']}, jax {jax.__version__}, {compute}")
    vae = random_vae(RELEASE_CFG, seed=0, dtype=jnp.bfloat16, compute=compute)
    block(jax.tree.leaves(__import__("flax").nnx.state(vae)))
    bench.result["weights_gib"] = in_use_bytes() / GIB
    # steps in order of value; each is skipped if it would likely end after --budget-s (estimated seconds)
    cases = list(filter(None, args.cases.split(",")))
    steps = [(f"case:{c}", 0.0 if i == 0 else 120.0) for i, c in enumerate(cases)]  # back to back: clean peaks
    steps += [("profile", 15.0), ("no_fuse", 60.0), ("sanity", 60.0), ("micro", 60.0), ("micro_nhwc", 70.0)]
    actions = {
        "no_fuse": lambda: bench.variant_no_fuse(vae),
        "micro": bench.micro,
        "micro_nhwc": bench.micro_nhwc,
        "profile": lambda: bench.profile_tile(vae),
        "sanity": bench.sanity,
    }
    for step, estimate in steps:
        if step.split(":")[0] in skip or (step == "micro_nhwc" and not args.micro_nhwc):
            continue
        if bench.elapsed() + estimate > args.budget_s:
            log(f"budget: skipping {step} (elapsed {bench.elapsed():.0f} s, estimate {estimate:.0f} s)")
            bench.result.setdefault("skipped", []).append(step)
            continue
        try:
            if step.startswith("case:"):
                bench.run_case(vae, step[5:])
            else:
                actions[step]()
        except Exception as err:  # noqa: BLE001 - keep what we have
            bench.result[f"{step}_error"] = repr(err)[:2000]
            log(f"{step} failed: {err!r}")
        write_report(bench.result, bench.out)
    bench.result["total_s"] = bench.elapsed()
    bench.save()
    write_report(bench.result, bench.out)
    log(f"done in {bench.elapsed():.0f} s")
    print((bench.out / "bench_vae.md").read_text())


if __name__ == "__main__":
    main()
