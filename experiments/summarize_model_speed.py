"""Collect the ``bench_model*.json`` results of a folder into one table (README.md) and a bar plot
(model_speed.png): forward and per-CFG-step time per size and attention, against the issue's targets.

Usage::

    python -m experiments.summarize_model_speed experiments/results/model_speed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


# PyTorch release on an H100 (torch 2.11, SDPA, bf16, random weights, batch 2), per forward = per CFG step (s)
TORCH_RELEASE_S = {"29x720p": 1.80, "93x720p": 11.53}


# self-attention kernel times at batch 2, 24 heads x 96, one layer (ms), measured in the same H100 image:
# experiments/results/tile_attention/tile_attention.md (rows "B=2"). Used to split a model step into attention
# and the rest, for the check "per-step time drops by >= 0.9x the attention time the mask removes".
KERNEL_MS_B2 = {
    ("29x720p", "dense (cudnn)"): 32.45, ("29x720p", "full (mosaic_gpu)"): 29.65,
    ("93x720p", "dense (cudnn)"): 295.08, ("93x720p", "full (mosaic_gpu)"): 272.90,
}
NUM_LAYERS = 32


def mask_check(rows: list[dict]) -> str:
    """For each sparse row: the time its mask should remove (attention time of a dense baseline x the removed
    fraction of attention FLOPs) against the measured drop, per forward and per CFG step."""
    lines = ["| size | mask | baseline | attention s of baseline (32 layers) | removed fraction | expected drop s | "
             "forward drop s (ratio) | per-step drop s (ratio) | >= 0.9x |", "|---|---|---|---|---|---|---|---|---|"]
    for sparse in rows:
        if "dense" in sparse["attention"] or "full" in sparse["attention"]:
            continue
        for base in rows:
            key = (base["size"], base["attention"])
            if base["size"] != sparse["size"] or key not in KERNEL_MS_B2:
                continue
            attn_s = KERNEL_MS_B2[key] * NUM_LAYERS / 1e3
            # removed attention FLOPs / dense attention FLOPs; the non-attention FLOPs are identical
            dense_attn_gflop = attention_gflop(base["size"])
            removed = (base["gflop_per_forward"] - sparse["gflop_per_forward"]) / dense_attn_gflop
            expected = removed * attn_s
            fwd = base["forward_s"] - sparse["forward_s"]
            step = base["sampling_s_per_cfg_step"] - sparse["sampling_s_per_cfg_step"]
            ok = "yes" if min(fwd, step) >= 0.9 * expected else ("forward only" if fwd >= 0.9 * expected else "NO")
            lines.append(f"| {sparse['size']} | {sparse['attention']} | {base['attention']} | {attn_s:.2f} | "
                         f"{removed:.3f} | {expected:.2f} | {fwd:.2f} ({fwd / expected:.2f}) | "
                         f"{step:.2f} ({step / expected:.2f}) | {ok} |")
    return "\n".join(lines)


def attention_gflop(size: str) -> float:
    """Dense self-attention GFLOP of one batch-2 forward, all layers."""
    from experiments.bench_model import SIZES

    from jax_vdit.config import PRESET_LATENT_SHAPES, get_preset
    from jax_vdit.flops import self_attention_flops

    cfg = get_preset(SIZES[size])
    t, h, w = PRESET_LATENT_SHAPES[SIZES[size]]
    tokens = t * (h // cfg.patch_size) * (w // cfg.patch_size)
    dim = cfg.attention_head_dim * cfg.num_attention_heads
    return 2 * cfg.num_layers * self_attention_flops(tokens, dim) / 1e9


def load_rows(folder: Path) -> tuple[list[dict], list[dict]]:
    rows, headers = [], []
    for path in sorted(folder.glob("bench_model*.json")):
        result = json.loads(path.read_text())
        headers.append(result["header"] | {"file": path.name})
        rows += [r | {"file": path.name} for r in result["rows"]]
    return rows, headers


def load_timed_videos(folder: Path) -> dict[tuple[str, str], float]:
    """(size, attention) -> seconds of a timed 100-step sampling run (``bench_model.py --what video100`` results
    saved as ``video100*.json``; compile excluded). A video timed in segments (``--segment A:B``, one file per
    segment) counts only when its segments cover steps 0..100 exactly; its time is their sum."""
    timed, segments = {}, {}
    for path in sorted(folder.glob("video100*.json")):
        for r in json.loads(path.read_text())["rows"]:
            key = (r["size"], r["attention"])
            if "video_100_steps_s" in r:
                timed[key] = r["video_100_steps_s"]
            elif "segment_s" in r:
                segments.setdefault(key, []).append((r["segment"], r["segment_s"]))
    for key, parts in segments.items():
        total = segmented_video_seconds(parts)
        if total is not None:
            timed.setdefault(key, round(total, 1))
    return timed


def segmented_video_seconds(parts: list[tuple[str, float]], num_steps: int = 100) -> float | None:
    """Sum of the segments' seconds if the segments ("A:B", seconds) tile steps 0..num_steps without gap or
    overlap, else None (an incomplete or inconsistent set of segments is no whole-video time)."""
    spans = sorted((tuple(int(v) for v in seg.split(":")), s) for seg, s in parts)
    step = 0
    for (a, b), _ in spans:
        if a != step or b <= a:
            return None
        step = b
    return sum(s for _, s in spans) if step == num_steps else None


def table(rows: list[dict], timed: dict[tuple[str, str], float] | None = None) -> str:
    timed = timed or {}
    lines = ["| size | attention | forward s (batch 2) | TFLOP/s | vs release forward | s / CFG step | "
             "100 steps s (1 + 99 x step) | 100 steps s (timed run) | target 100 steps s | peak GiB | "
             "compile s (fwd / sampler) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["size"], -r["forward_s"])):
        ref = TORCH_RELEASE_S.get(r["size"])
        step = r.get("sampling_s_per_cfg_step")
        runs = r.get("sampling_runs", {})
        first = runs.get("1")
        total = None if step is None or first is None else first + 99 * step
        lines.append(
            f"| {r['size']} | {r['attention']} | {r['forward_s']:.3f} | {r['tflops']:.0f} | "
            f"{r['forward_s'] / ref:.2f}x | {step:.3f} | {total:.0f} | {timed.get((r['size'], r['attention']), '-')} | "
            f"<= {0.9 * 100 * ref:.0f} | "
            f"{r.get('peak_gib_after_sampling', r.get('peak_gib_after_forward'))} | "
            f"{r['forward_compile_plus_first_s']:.0f} / {r.get('sampling_compile_plus_1step_s', float('nan')):.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 3.8))
    for ax, size in zip(axes if len(sizes) > 1 else [axes], sizes):
        rs = sorted([r for r in rows if r["size"] == size], key=lambda r: -r["forward_s"])
        labels = [r["attention"] for r in rs]
        ax.barh(labels, [r["sampling_s_per_cfg_step"] for r in rs], color="tab:blue", label="s / CFG step (JAX)")
        ref = TORCH_RELEASE_S[size]
        ax.axvline(ref, color="tab:red", ls="--", label=f"PyTorch release {ref} s")
        ax.axvline(0.9 * ref, color="tab:green", ls=":", label=f"target 0.9x = {0.9 * ref:.2f} s")
        ax.set_title(f"OpenSoraT2V {size}, batch 2 (CFG), H100, bf16")
        ax.set_xlabel("seconds per CFG sampling step")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/model_speed")
    rows, headers = load_rows(folder)
    text = table(rows, load_timed_videos(folder))
    print(text)
    check = mask_check(rows)
    print(check)
    (folder / "table.md").write_text(text + "\n\n" + check + "\n")
    plot(rows, folder / "model_speed.png")


if __name__ == "__main__":
    main()
