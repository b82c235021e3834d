"""Benchmark: ``vdit prepare-data`` throughput (clips per second, VAE encode included, text excluded).

Builds everything the command needs, with no download: ``--clips`` synthetic H.264 videos (``--source`` size,
36 frames at 24 fps, moving squares over a gradient, written by ``write_video``), a release-format CausalVAE folder with
random weights (``--vae-config release``: the v1.2 architecture, 239M parameters; ``tiny`` for a CPU check), and
precomputed caption embeddings (random, mT5-XXL width 4096, 512 tokens of which 120 valid). Then runs the command
in a fresh process and reads its log: the encoder's compile seconds and the clips/s of the read+encode+write loop;
the process's wall time is reported too.

    python -m experiments.bench_prepare_data --clips 64 --size 29x720p --out experiments/results/bench_prepare_data
    python -m experiments.bench_prepare_data --clips 4 --size 1x480p --vae-config tiny --source 320x240   # CPU check
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from experiments.child_env import child_env, parent_releases_gpu_memory

ROOT = Path(__file__).resolve().parents[1]


def synthetic_video(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (frames, height, width, 3): a colour gradient with two squares moving at different speeds."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1),
                     np.full_like(xx, int(rng.integers(0, 256)))], axis=-1).astype(np.uint8)
    out = np.repeat(base[None], frames, axis=0)
    size = max(8, height // 6)
    for k, speed in enumerate((3 + seed % 5, -(2 + seed % 3))):
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        y0 = (height // 3) * (k + 1) - size // 2
        for f in range(frames):
            x0 = (width // 4 + speed * f * max(1, width // 160)) % (width - size)
            out[f, y0:y0 + size, x0:x0 + size] = colour
    return out


def build_inputs(work: Path, clips: int, source: tuple[int, int], vae_config: str, text_len: int = 512,
                 valid_tokens: int = 120) -> dict:
    """Videos, captions.jsonl, a random VAE folder and an embeddings file under ``work``; returns their paths."""
    import jax.numpy as jnp

    from jax_vdit.data.text import save_caption_embeddings
    from jax_vdit.io.vae_weights import write_vae_folder
    from jax_vdit.vae import VAEConfig, random_vae, write_video

    width, height = source
    videos = work / "videos"
    videos.mkdir(parents=True)
    t0 = time.perf_counter()
    captions = [f"synthetic clip {i}: two squares crossing a gradient" for i in range(clips)]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda i: write_video(synthetic_video(36, height, width, i), videos / f"clip{i:03d}.mp4", fps=24),
                      range(clips)))
    with open(work / "captions.jsonl", "w") as f:
        for i, cap in enumerate(captions):
            f.write(json.dumps({"video": f"clip{i:03d}.mp4", "caption": cap}) + "\n")
    videos_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = VAEConfig() if vae_config == "release" else VAEConfig.tiny()
    write_vae_folder(random_vae(cfg, seed=0, dtype=jnp.float32), work / "vae")
    rng = np.random.default_rng(0)
    text = (rng.standard_normal((clips, text_len, 4096)) * 0.1).astype(np.float16)
    mask = np.zeros((clips, text_len), np.int32)
    mask[:, :valid_tokens] = 1
    save_caption_embeddings(work / "embeddings.safetensors", captions, text, mask,
                            uncond_text=np.zeros((text_len, 4096), np.float16),
                            uncond_mask=np.eye(1, text_len, dtype=np.int32)[0])
    return {"videos": videos, "captions": work / "captions.jsonl", "vae": work / "vae",
            "embeddings": work / "embeddings.safetensors", "videos_write_s": round(videos_s, 1),
            "vae_and_text_write_s": round(time.perf_counter() - t0, 1)}


def run_prepare(inputs: dict, out: Path, size: str, vae_dtype: str) -> dict:
    cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import main; sys.exit(main(sys.argv[1:]))",
           "prepare-data", "--videos", str(inputs["videos"]),
           "--captions", str(inputs["captions"]), "--out", str(out), "--vae", str(inputs["vae"]),
           "--vae-dtype", vae_dtype, "--embeddings", str(inputs["embeddings"]), "--size", size, "--no-progress"]
    env = child_env()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"prepare-data failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    log = proc.stderr
    compiled = re.search(r"compiled the VAE encoder .* in ([\d.]+) s", log)
    loop = re.search(r"(\d+) of \d+ clips encoded and written in ([\d.]+) s \(([\d.]+) clips/s\)", log)
    manifest = json.loads((out / "manifest.json").read_text())
    return {"command": " ".join(["vdit", *cmd[3:]]), "wall_s": round(wall, 1),
            "encoder_compile_s": float(compiled.group(1)) if compiled else None,
            "loop_clips": int(loop.group(1)) if loop else None, "loop_s": float(loop.group(2)) if loop else None,
            "clips_per_s": float(loop.group(3)) if loop else None,
            "records": manifest.get("num_records", sum(s.get("records", 0) for s in manifest.get("shards", []))),
            "skipped": len(manifest.get("skipped", [])), "latent_shape": manifest.get("latent_shape"),
            "log_tail": log[-1500:]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--size", default="29x720p", help="prepare-data --size")
    p.add_argument("--source", default="1280x720", help="synthetic video size WxH")
    p.add_argument("--vae-config", choices=("release", "tiny"), default="release")
    p.add_argument("--vae-dtype", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--workdir", default=None, help="where inputs and shards go (default: a temporary folder)")
    p.add_argument("--out", default=None, help="results folder for the JSON")
    args = p.parse_args(argv)
    parent_releases_gpu_memory()  # the parent writes the random VAE; `vdit prepare-data` (a child) is timed
    import jax

    source = tuple(int(x) for x in args.source.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench_prepare_") as tmp:
        work = Path(args.workdir or tmp)
        inputs = build_inputs(work, args.clips, source, args.vae_config)
        run = run_prepare(inputs, work / "shards", args.size, args.vae_dtype)
    device = jax.devices()[0]
    result = {"date": datetime.date.today().isoformat(), "device": f"{device.platform}:{device.device_kind}",
              "jax": jax.__version__, "python": platform.python_version(),
              "command": "python -m experiments.bench_prepare_data " + " ".join(sys.argv[1:] if argv is None else argv),
              "clips": args.clips, "size": args.size, "source": args.source,
              "vae": f"{args.vae_config} (random weights)",
              "vae_dtype": args.vae_dtype, "text": "precomputed embeddings (text encoding excluded)",
              "inputs": {k: v for k, v in inputs.items() if k.endswith("_s")}, "run": run}
    print(json.dumps(result, indent=1))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = f"prepare_data_{args.size}_{device.platform}.json"
        (out / name).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
