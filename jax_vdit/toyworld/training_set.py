"""A pre-generated toy-world training set for fast training loops.

Rendering a sample costs about 1 ms of one CPU core, too slow to feed a GPU step by step, so training draws
from a pool of ``num_samples`` training-stream samples rendered once (in parallel processes). Batch ``step`` is a
pure function of (seed, step): samples are visited in a fresh seeded permutation each epoch, so a resumed run
sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from .config import ToyWorldConfig
from .data import make_sample
from .text import encode_captions


def _render_range(args: tuple[ToyWorldConfig, int, int]) -> tuple[np.ndarray, list[str]]:
    config, start, stop = args
    samples = [make_sample(config, i) for i in range(start, stop)]
    return np.stack([x for x, _ in samples]), [s.caption for _, s in samples]


@dataclass
class ToyTrainingSet:
    """Latents (N, 4, T, H, W) float32 with their text embeddings (N, L, C) and masks (N, L)."""

    config: ToyWorldConfig
    latents: np.ndarray
    text: np.ndarray
    text_mask: np.ndarray
    captions: list[str]
    seed: int = 0

    @classmethod
    def generate(cls, config: ToyWorldConfig, num_samples: int, *, seed: int = 0, workers: int | None = None):
        """Render training-stream samples 0..num_samples-1 (held-out scenes are never among them)."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        workers = workers or max(1, min(os.cpu_count() or 1, 32))
        chunk = -(-num_samples // (workers * 4))
        ranges = [(config, s, min(s + chunk, num_samples)) for s in range(0, num_samples, chunk)]
        if workers == 1 or num_samples < 2000:
            parts = [_render_range(r) for r in ranges]
        else:
            # "spawn": workers start as fresh interpreters. Forking a process that already runs JAX's threads (a
            # training script that initialised the GPU) can deadlock the children.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = list(pool.map(_render_range, ranges))
        latents = np.concatenate([p[0] for p in parts])
        captions = [c for p in parts for c in p[1]]
        text, mask = encode_captions(captions, config)
        return cls(config, latents, text, mask, captions, seed)

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def indices(self, step: int, batch_size: int) -> np.ndarray:
        """Sample indices of batch ``step``: consecutive slices of a per-epoch seeded permutation."""
        n = len(self)
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the training set size {n}")
        per_epoch = n // batch_size
        epoch, pos = divmod(step, per_epoch)
        perm = np.random.default_rng(np.random.SeedSequence([self.seed, 7, epoch])).permutation(n)
        return perm[pos * batch_size:(pos + 1) * batch_size]

    def batch_at(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """``latents`` (B,4,T,H,W) float32, ``text`` (B,L,C) float32, ``text_mask`` (B,L) int32."""
        idx = self.indices(step, batch_size)
        return {"latents": self.latents[idx], "text": self.text[idx], "text_mask": self.text_mask[idx]}

    def unconditional(self) -> dict[str, np.ndarray]:
        """The encoding of the empty caption: ``uncond_text`` (L, C) and ``uncond_mask`` (L,)."""
        text, mask = encode_captions([""], self.config)
        return {"uncond_text": text[0], "uncond_mask": mask[0]}
