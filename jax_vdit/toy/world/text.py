"""A deterministic stand-in for the mT5 text encoder.

Tokenisation splits a caption on whitespace; each word maps to a row of a fixed embedding table drawn from
``config.text_seed`` (rows ~ N(0, 1)). The caption is followed by an EOS token and padded to
``config.max_text_len``; the mask is 1 for the words and EOS, 0 for padding (like mT5's attention mask). A fixed
sinusoidal position code is added to every valid token so word order is recoverable
("a red circle ... and a blue square" differs from "a blue circle ... and a red square"), and the sum is scaled
by ``1/sqrt(1.5)`` so each feature has roughly unit variance. Padding positions are exactly zero.

The empty caption "" (classifier-free-guidance dropout) encodes to a single valid EOS token plus padding.

Token ids: 0 = <pad>, 1 = <eos>, 2 = <unk>, then :func:`spec.caption_vocabulary` in order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from .config import ToyWorldConfig
from .spec import caption_vocabulary

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


@functools.lru_cache(maxsize=16)
def vocabulary(config: ToyWorldConfig) -> tuple[str, ...]:
    """All tokens, index = token id: ("<pad>", "<eos>", "<unk>", *caption words)."""
    return (PAD, EOS, UNK) + caption_vocabulary(config)


@functools.lru_cache(maxsize=16)
def _word_index(config: ToyWorldConfig) -> dict[str, int]:
    return {w: i for i, w in enumerate(vocabulary(config))}


@functools.lru_cache(maxsize=16)
def embedding_table(config: ToyWorldConfig) -> np.ndarray:
    """(V, caption_channels) float32 word embeddings from ``config.text_seed``; row 0 (<pad>) is zero.
    Read-only."""
    rng = np.random.default_rng(np.random.SeedSequence([config.text_seed, 0x7E47]))
    table = rng.standard_normal((len(vocabulary(config)), config.caption_channels))
    table[PAD_ID] = 0.0
    table = table.astype(np.float32)
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=16)
def position_code(config: ToyWorldConfig) -> np.ndarray:
    """(max_text_len, caption_channels) float32 sinusoidal position code (sin on even, cos on odd features)."""
    length, dim = config.max_text_len, config.caption_channels
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = 1.0 / (100.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim // 2)))  # 100: only ~16 positions
    code = np.zeros((length, dim))
    code[:, 0::2] = np.sin(pos * freq)
    code[:, 1::2] = np.cos(pos * freq)
    code = code.astype(np.float32)
    code.setflags(write=False)
    return code


def tokenize(
    captions: Sequence[str], config: ToyWorldConfig, *, on_unknown: str = "error"
) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (ids (B, L) int32, mask (B, L) int32), L = ``config.max_text_len``.

    ``on_unknown``: "error" (raise ValueError naming the word) or "unk" (map to <unk>). A caption longer than
    ``L - 1`` words raises ValueError (it would lose its EOS).
    """
    if isinstance(captions, str):
        raise TypeError("tokenize expects a sequence of captions, got a single str")
    if on_unknown not in ("error", "unk"):
        raise ValueError(f"on_unknown must be 'error' or 'unk', got {on_unknown!r}")
    index = _word_index(config)
    length = config.max_text_len
    ids = np.zeros((len(captions), length), dtype=np.int32)
    mask = np.zeros((len(captions), length), dtype=np.int32)
    for b, cap in enumerate(captions):
        words = cap.lower().split()
        if len(words) > length - 1:
            raise ValueError(f"caption has {len(words)} words; max_text_len={length} allows {length - 1}: {cap!r}")
        row = []
        for w in words:
            if w in index and index[w] > UNK_ID:
                row.append(index[w])
            elif on_unknown == "unk":
                row.append(UNK_ID)
            else:
                raise ValueError(f"unknown word {w!r} in caption {cap!r} (vocabulary of config {config.name!r})")
        row.append(EOS_ID)
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
    return ids, mask


def embed_tokens(ids: np.ndarray, mask: np.ndarray, config: ToyWorldConfig) -> np.ndarray:
    """(B, L) int ids and (B, L) 0/1 mask -> (B, L, caption_channels) float32 embeddings (zero where mask = 0)."""
    ids = np.asarray(ids)
    mask = np.asarray(mask)
    if ids.shape != mask.shape or ids.ndim != 2 or ids.shape[1] != config.max_text_len:
        raise ValueError(f"ids and mask must both be (B, {config.max_text_len}); got {ids.shape} and {mask.shape}")
    emb = embedding_table(config)[ids] + position_code(config)[None]
    emb = emb * np.float32(1.0 / np.sqrt(1.5)) * mask[..., None].astype(np.float32)
    return emb.astype(np.float32)


def encode_captions(
    captions: Sequence[str], config: ToyWorldConfig, *, on_unknown: str = "error"
) -> tuple[np.ndarray, np.ndarray]:
    """Captions -> (embeddings (B, L, caption_channels) float32, mask (B, L) int32 with 1 = keep)."""
    ids, mask = tokenize(captions, config, on_unknown=on_unknown)
    return embed_tokens(ids, mask, config), mask


class ToyTextEncoder:
    """Object wrapper: ``ToyTextEncoder(config)(captions) -> (emb, mask)`` (see :func:`encode_captions`)."""

    def __init__(self, config: ToyWorldConfig, *, on_unknown: str = "error") -> None:
        self.config = config
        self.on_unknown = on_unknown

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return vocabulary(self.config)

    @property
    def caption_channels(self) -> int:
        return self.config.caption_channels

    @property
    def max_length(self) -> int:
        return self.config.max_text_len

    def __call__(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return encode_captions(captions, self.config, on_unknown=self.on_unknown)
