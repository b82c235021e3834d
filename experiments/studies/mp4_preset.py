"""libx264's speed presets on a 29-frame 720p video: encode seconds, file size, and PSNR of the decoded mp4
against the frames given, for the writer ``vdit sample`` uses (``jax_vdit.vae.write_video``).

The video is synthetic but not noise: smooth colour fields drifting over time, soft moving discs, a fine texture
and mild grain, so that the encoder has both flat and detailed areas to code. Real generated videos will give
other absolute numbers; the comparison between presets is the point.

    python -m experiments.studies.mp4_preset --out experiments/results/mp4_preset --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

PRESETS = ("ultrafast", "veryfast", "faster", "medium")


def synthetic_video(frames: int = 29, height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """uint8 (frames, height, width, 3): drifting colour fields, soft moving discs, texture and grain."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    texture = rng.standard_normal((height // 8, width // 8)).astype(np.float32)
    texture = np.kron(texture, np.ones((8, 8), np.float32))[:height, :width] * 6.0
    centres = rng.uniform(0.1, 0.9, (4, 2)).astype(np.float32)
    speeds = rng.uniform(-0.01, 0.01, (4, 2)).astype(np.float32)
    colours = rng.uniform(40, 220, (4, 3)).astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        img = np.stack([120 + 80 * np.sin(2 * np.pi * (x * 1.3 + y * 0.7 + 0.02 * t + c / 3)) for c in range(3)], -1)
        for (cy, cx), (vy, vx), colour in zip(centres, speeds, colours):
            d2 = ((y - (cy + vy * t)) * height) ** 2 + ((x - (cx + vx * t)) * width) ** 2
            weight = np.exp(-d2 / (2 * 60.0 ** 2))[..., None]
            img = img * (1 - weight) + colour * weight
        img = img + texture[..., None] + rng.normal(0, 2.0, img.shape).astype(np.float32)
        out[t] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--device", default=None, help="what to call this host in the results (default: its CPU count)")
    args = p.parse_args()
    import imageio.v3 as iio

    from jax_vdit.vae import pipeline as vae_pipeline
    from jax_vdit.vae import write_video

    video = synthetic_video()
    writer = "imageio-ffmpeg" if vae_pipeline._ffmpeg_available() else "PyAV"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            seconds = []
            for run in range(args.runs):
                t0 = time.perf_counter()
                path = write_video(video, Path(tmp) / f"{preset}.mp4", fps=24, preset=preset)
                seconds.append(time.perf_counter() - t0)
            back = iio.imread(path, plugin="pyav")
            rows.append({"preset": preset, "encode_s_median": round(statistics.median(seconds), 3),
                         "encode_s": [round(s, 3) for s in seconds], "bytes": path.stat().st_size,
                         "psnr_db": round(psnr(back, video), 2)})
            print(rows[-1], flush=True)
    host = args.device or f"{platform.machine()} host, {os.cpu_count()} CPU cores"
    result = {"date": time.strftime("%Y-%m-%d"), "video": "synthetic, 29 x 720 x 1280, 24 fps", "writer": writer,
              "device": host, "command": f"python -m experiments.studies.mp4_preset --out {args.out} --runs "
              f"{args.runs}" + (f" --device '{args.device}'" if args.device else ""), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{os.cpu_count()}cpu"
    (out / f"mp4_preset_{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"| preset | encode s (median of {args.runs}) | MB | PSNR dB |", "|---|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['encode_s_median']:.3f} | {r['bytes'] / 1e6:.2f} | {r['psnr_db']:.2f} |"
              for r in rows]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
