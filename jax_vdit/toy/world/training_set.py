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
from dataclasses import dataclass, replace

import numpy as np

from .config import ToyWorldConfig
from .data import make_sample, reserved_keys
from .spec import caption_vocabulary
from .text import encode_captions


def _render_range(args: tuple[ToyWorldConfig, int, int, frozenset]) -> tuple[np.ndarray, list[str]]:
    config, start, stop, exclude = args
    samples = [make_sample(config, i, exclude_keys=exclude) for i in range(start, stop)]
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
    def generate(cls, config: ToyWorldConfig, num_samples: int, *, seed: int = 0, workers: int | None = None,
                 exclude_keys: frozenset = frozenset(), text_world: ToyWorldConfig | None = None):
        """Render training-stream samples 0..num_samples-1 (validation and test scenes, and specs keyed in
        ``exclude_keys``, are never among them). Captions are encoded with ``text_world``'s text encoder
        (default: ``config``'s), e.g. the main world's when these samples are mixed into its training."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        workers = workers or max(1, min(os.cpu_count() or 1, 32))
        chunk = -(-num_samples // (workers * 4))
        ranges = [(config, s, min(s + chunk, num_samples), exclude_keys) for s in range(0, num_samples, chunk)]
        if workers == 1 or num_samples < 2000:
            parts = [_render_range(r) for r in ranges]
        else:
            # "spawn": workers start as fresh interpreters. Forking a process that already runs JAX's threads (a
            # training script that initialised the GPU) can deadlock the children.
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = list(pool.map(_render_range, ranges))
        latents = np.concatenate([p[0] for p in parts])
        captions = [c for p in parts for c in p[1]]
        text, mask = encode_captions(captions, text_world or config)
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


# fields that must agree between a world and a world mixed into its training: the latent layout and its meaning
_MIX_MUST_MATCH = ("num_frames", "height", "width", "caption_channels", "max_text_len", "text_seed",
                   "objectness_lead", "first_frame_offset")


def side_world(main: ToyWorldConfig, side: ToyWorldConfig) -> ToyWorldConfig:
    """``side``'s scenes expressed in ``main``'s latent coordinates (``main``'s channel normalisation), for mixing
    into ``main``'s training. Raises ValueError naming the field if the two worlds' latents or captions do not
    mean the same thing (frame layout, text encoder, subframe lead, first-frame mark) or if ``side`` uses a word
    ``main`` does not know."""
    for name in _MIX_MUST_MATCH:
        a, b = getattr(main, name), getattr(side, name)
        if a != b:
            raise ValueError(f"cannot mix toy world {side.name!r} into {main.name!r}: {name} differs ({b} vs {a})")
    unknown = sorted(set(caption_vocabulary(side)) - set(caption_vocabulary(main)))
    if unknown:
        raise ValueError(f"cannot mix toy world {side.name!r} into {main.name!r}: words {unknown} are not in "
                         f"{main.name!r}'s vocabulary")
    speeds = dict(main.speeds)
    for name, value in side.speeds:
        if speeds.get(name, value) != value:
            raise ValueError(f"cannot mix toy world {side.name!r} into {main.name!r}: speed {name!r} is {value} px "
                             f"per frame there and {speeds[name]} in {main.name!r}")
    return replace(side, channel_mean=main.channel_mean, channel_std=main.channel_std)


@dataclass
class MixedTrainingSet:
    """Batches of ``main`` with a fixed share from ``side`` (a curriculum world kept in the mix, e.g. the sign
    world that teaches "left" vs "right", so that what it taught is not forgotten).

    Batch ``step`` of size B holds ``B - round(side_fraction * B)`` samples of ``main``'s batch ``step`` followed
    by the rest from ``side``'s batch ``step``: still a pure function of the step, so resume is exact. ``side``'s
    captions are encoded with ``main``'s text encoder (the same word has the same embedding in both)."""

    main: ToyTrainingSet
    side: ToyTrainingSet
    side_fraction: float

    def __post_init__(self) -> None:
        if not 0.0 < self.side_fraction < 1.0:
            raise ValueError(f"side_fraction must be in (0, 1), got {self.side_fraction}")
        if self.side.latents.shape[1:] != self.main.latents.shape[1:]:
            raise ValueError(f"side latents {self.side.latents.shape[1:]} != main {self.main.latents.shape[1:]}")
        if self.side.text.shape[1:] != self.main.text.shape[1:]:
            raise ValueError(f"side text {self.side.text.shape[1:]} != main {self.main.text.shape[1:]}")

    @classmethod
    def generate(cls, main: ToyWorldConfig, side: ToyWorldConfig, side_fraction: float, num_samples: int, *,
                 seed: int = 0, workers: int | None = None) -> MixedTrainingSet:
        """``num_samples`` of ``main`` and ``max(1024, round(side_fraction * num_samples))`` of ``side`` (in
        ``main``'s normalisation, never one of ``main``'s validation or test prompts)."""
        side_cfg = side_world(main, side)
        main_set = ToyTrainingSet.generate(main, num_samples, seed=seed, workers=workers)
        side_set = ToyTrainingSet.generate(side_cfg, max(1024, round(side_fraction * num_samples)), seed=seed + 1,
                                           workers=workers, exclude_keys=reserved_keys(main), text_world=main)
        return cls(main_set, side_set, side_fraction)

    @property
    def config(self) -> ToyWorldConfig:
        return self.main.config

    def side_count(self, batch_size: int) -> int:
        n = round(self.side_fraction * batch_size)
        if not 0 < n < batch_size:
            raise ValueError(f"side_fraction {self.side_fraction} of a batch of {batch_size} leaves no sample of one "
                             f"of the two worlds")
        return n

    def batch_at(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """Same keys and shapes as :meth:`ToyTrainingSet.batch_at`."""
        n_side = self.side_count(batch_size)
        a = self.main.batch_at(step, batch_size - n_side)
        b = self.side.batch_at(step, n_side)
        return {k: np.concatenate([a[k], b[k]]) for k in a}

    def unconditional(self) -> dict[str, np.ndarray]:
        return self.main.unconditional()
