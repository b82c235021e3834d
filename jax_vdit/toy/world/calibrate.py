"""Calibration and resolution checks of the toy world.

* :func:`measure_channel_stats` / :func:`calibrated`: measure the raw per-channel mean/std of a config's videos
  and return the config with its latent normalisation set from them (needed after changing a preset's grid,
  object size or sampling probabilities).
* :func:`latent_stats`: per-channel mean/std of the (normalised) training latents.
* :func:`resolution_report`: ToyBench on ground truth and on controlled degradations of it (Gaussian noise,
  blur, shuffled / frozen / flickering frames, too little motion, washed-out colour, wrong prompts, pure noise),
  to judge what differences the metrics can resolve.

Run ``python -m jax_vdit.toy.world.calibrate [preset] [num_samples]`` to print both.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np

from .config import ToyWorldConfig, get_config
from .data import make_sample, render_raw, sample_scene
from .encoding import latent_to_raw, raw_to_latent
from .toybench import evaluate, format_table

_CALIBRATION_SEED = 31_337


def _samples(config: ToyWorldConfig, num_samples: int, seed: int) -> tuple[np.ndarray, list]:
    pairs = [make_sample(config, i, seed) for i in range(num_samples)]
    return np.stack([x for x, _ in pairs]), [s for _, s in pairs]


def measure_channel_stats(
    config: ToyWorldConfig, num_samples: int = 4000, seed: int = _CALIBRATION_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-channel (mean (4,), std (4,)) float64 over ``num_samples`` videos of ``config``."""
    raw = np.stack(
        [render_raw(*sample_scene(np.random.default_rng(np.random.SeedSequence([seed, i])), config), config)
         for i in range(num_samples)]
    )
    return raw.mean(axis=(0, 2, 3, 4)), raw.std(axis=(0, 2, 3, 4))


def calibrated(config: ToyWorldConfig, num_samples: int = 4000) -> ToyWorldConfig:
    """``config`` with ``channel_mean``/``channel_std`` measured so its latents are ~zero-mean, unit-variance."""
    mean, std = measure_channel_stats(config, num_samples)
    return dataclasses.replace(
        config,
        channel_mean=tuple(round(float(m), 4) for m in mean),
        channel_std=tuple(round(float(s), 4) for s in std),
    )


def latent_stats(config: ToyWorldConfig, num_samples: int = 500, seed: int = 1) -> dict[str, np.ndarray]:
    """Per-channel statistics of training latents: mean, std, min, max, each (4,) float64."""
    x, _ = _samples(config, num_samples, seed)
    axes = (0, 2, 3, 4)
    return {"mean": x.mean(axes), "std": x.std(axes), "min": x.min(axes), "max": x.max(axes)}


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes (edge padding)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    out = x
    for axis in (-1, -2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        p = np.pad(out, pad, mode="edge")
        n = x.shape[axis]
        out = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return out


def degradations(
    config: ToyWorldConfig, num_samples: int = 300, seed: int = 2
) -> tuple[dict[str, np.ndarray], list, dict[str, list]]:
    """Ground-truth latents and controlled degradations of them.

    Returns (videos by setting name, specs, specs by setting where they differ from ``specs``).
    """
    x, specs = _samples(config, num_samples, seed)
    rng = np.random.default_rng(seed + 1)
    out: dict[str, np.ndarray] = {"ground truth": x}
    for sigma in (0.25, 0.5, 1.0, 2.0):
        out[f"gt + N(0, {sigma}^2)"] = (x + sigma * rng.standard_normal(x.shape)).astype(np.float32)
    out["gt blurred (gauss 1 px)"] = _gaussian_blur(x, 1.0).astype(np.float32)
    t = config.num_frames
    out["frames shuffled"] = np.stack([v[:, rng.permutation(t)] for v in x])
    out["frozen (frame 0 repeated)"] = np.repeat(x[:, :, :1], t, axis=2)
    flick = x.copy()
    bg = np.median(x, axis=2, keepdims=True)
    for i in range(num_samples):  # a third of the frames lose their objects
        drop = rng.choice(t, size=t // 3, replace=False)
        flick[i, :, drop] = np.broadcast_to(bg[i, :, 0], flick[i, :, drop].shape)
    out["flicker (1/3 frames empty)"] = flick
    slow = dataclasses.replace(config, speeds=tuple((n, v / 2) for n, v in config.speeds))
    out["half motion"], slow_specs = _samples(slow, num_samples, seed)  # same prompt distribution, half the speed
    raw = latent_to_raw(x, config)
    med = np.median(raw, axis=(2, 3, 4), keepdims=True)
    raw[:, 1:3] = med[:, 1:3] + 0.3 * (raw[:, 1:3] - med[:, 1:3])
    out["colour washed out (x0.3)"] = raw_to_latent(raw, config)
    out["pure noise N(0, 1)"] = rng.standard_normal(x.shape).astype(np.float32)
    out["all zeros"] = np.zeros_like(x)
    perm = rng.permutation(num_samples)
    out["gt, shuffled prompts"] = x
    return out, specs, {"gt, shuffled prompts": [specs[j] for j in perm], "half motion": slow_specs}


def resolution_report(config: ToyWorldConfig, num_samples: int = 300, seed: int = 2) -> tuple[dict[str, Any], str]:
    """ToyBench on ground truth and its degradations: (results by setting, markdown table)."""
    videos, specs, other_specs = degradations(config, num_samples, seed)
    results = {name: evaluate(v, other_specs.get(name, specs), config) for name, v in videos.items()}
    return results, format_table(results)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    cfg = get_config(argv[0]) if argv else get_config()
    n = int(argv[1]) if len(argv) > 1 else 300
    stats = latent_stats(cfg, n)
    print(f"## {cfg.name}: latent statistics over {n} training samples")
    print("(channels: luma, red-green, yellow-blue, objectness)\n")
    print("| stat | ch0 | ch1 | ch2 | ch3 |\n|---|---:|---:|---:|---:|")
    for k, v in stats.items():
        print(f"| {k} | " + " | ".join(f"{float(a):.3f}" for a in v) + " |")
    print(f"\n## {cfg.name}: ToyBench resolution ({n} videos)\n")
    print(resolution_report(cfg, n)[1])


if __name__ == "__main__":
    main()
