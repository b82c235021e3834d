"""Caption embeddings for training shards: an encoder function, a local mT5, or a precomputed file.

A text source turns captions into ``(text (B, L, C) float32, mask (B, L) int32)`` and gives the encoding of the
empty caption ``""`` once (the unconditional input that caption dropout / classifier-free guidance needs;
the release trains with ``""``, not with its sampling-time negative prompt).

Precomputed embeddings file (``.safetensors``), as written by :func:`save_caption_embeddings`:

* ``text``        (N, L, C) float32, float16 or bfloat16: embedding of caption i
* ``text_mask``   (N, L) integer or bool, 1 = valid token
* ``uncond_text`` (1, L, C) and ``uncond_mask`` (1, L): the empty caption's encoding
* metadata ``captions``: JSON list of the N caption strings (looked up exactly as written in the caption file);
  metadata ``encoder``: a free-form description of what produced them (recorded in the dataset manifest).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

TextEncodeFn = Callable[[Sequence[str]], tuple[np.ndarray, np.ndarray]]
"""captions -> (embeddings (B, L, C) float, mask (B, L) 0/1)."""


class TextSourceError(ValueError):
    """Embeddings could not be produced: missing caption, inconsistent shapes, unreadable file."""


class TextSource(Protocol):
    """What :func:`~jax_vdit.data.prepare.prepare_data` needs from a text encoder."""

    name: str

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """captions -> (text (B, L, C) float32, mask (B, L) int32)."""
        ...

    def unconditional(self) -> tuple[np.ndarray, np.ndarray]:
        """The empty caption's (text (L, C) float32, mask (L,) int32)."""
        ...


def check_embeddings(text: np.ndarray, mask: np.ndarray, batch: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate (B, L, C) / (B, L) embeddings of ``batch`` captions; return float32 / int32 copies."""
    text, mask = np.asarray(text), np.asarray(mask)
    if text.ndim == 4 and text.shape[1] == 1:  # (B, 1, L, C) as the release pipeline shapes it
        text = text[:, 0]
    if mask.ndim == 3 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if text.ndim != 3 or text.shape[0] != batch or mask.shape != text.shape[:2]:
        raise TextSourceError(f"{what}: expected text ({batch}, L, C) and mask ({batch}, L); "
                              f"got {text.shape} and {mask.shape}")
    text = text.astype(np.float32)
    if not np.all(np.isfinite(text)):
        raise TextSourceError(f"{what}: embeddings contain NaN or Inf")
    if not np.all((mask == 0) | (mask == 1)):
        raise TextSourceError(f"{what}: mask values must be 0 or 1")
    return text, mask.astype(np.int32)


class FunctionTextSource:
    """A text source from an encoder function (``captions -> (text, mask)``); the unconditional input is
    ``fn([""])``. ``name`` is recorded in the manifest (a resumed run must use the same name)."""

    def __init__(self, fn: TextEncodeFn, name: str) -> None:
        self.fn = fn
        self.name = name

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        text, mask = self.fn(list(captions))
        return check_embeddings(text, mask, len(captions), f"text encoder {self.name!r}")

    def unconditional(self) -> tuple[np.ndarray, np.ndarray]:
        text, mask = self.encode([""])
        return text[0], mask[0]


def toy_text_source(world: str | None = None) -> FunctionTextSource:
    """The toy world's deterministic mT5 stand-in (unknown words -> <unk>), for tests and toy pipelines;
    ``world``: a toy-world preset name (default: the default world, as ``encode_prompts(..., "toy")``)."""
    from jax_vdit.toy.world import encode_captions, get_config

    config = get_config(world) if world else get_config()
    return FunctionTextSource(lambda caps: encode_captions(caps, config, on_unknown="unk"), f"toy:{config.name}")


def mt5_text_source(encoder_dir: str | os.PathLike, *, batch_size: int = 8, max_length: int | None = None
                    ) -> FunctionTextSource:
    """A local ``google/mt5-xxl`` folder (tokenizer + ``MT5EncoderModel``; extra ``jax-vdit[text]``), loaded once
    through :class:`jax_vdit.text_encoder.TextEncoder`.

    As in the release's training: captions are cleaned (:func:`jax_vdit.text_encoder.clean_caption`), no prompt
    template, padded/truncated to 512 tokens, encoder run in bfloat16; outputs (B, 512, 4096) float32, (B, 512),
    encoded ``batch_size`` captions at a time.
    """
    from jax_vdit.text_encoder import MAX_LENGTH, TextEncoder

    encoder_dir = Path(encoder_dir)
    if not encoder_dir.is_dir():
        raise TextSourceError(f"mT5 encoder folder not found: {encoder_dir} (give a local google/mt5-xxl copy, "
                              "or precomputed embeddings)")
    encoder = TextEncoder(encoder_dir, max_length=MAX_LENGTH if max_length is None else max_length, template=False)

    def encode(captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [encoder.encode_texts(list(captions[i : i + batch_size])) for i in range(0, len(captions), batch_size)]
        return np.concatenate([t for t, _ in parts]), np.concatenate([m for _, m in parts])

    return FunctionTextSource(encode, f"mt5:{encoder_dir.resolve().name}")


class EmbeddingsTextSource:
    """Precomputed caption embeddings (layout in the module docstring), memory-mapped; captions looked up exactly."""

    def __init__(self, path: str | os.PathLike) -> None:
        from jax_vdit.data.codec import CodecError, read_tensor_file

        self.path = Path(path)
        if not self.path.is_file():
            raise TextSourceError(f"embeddings file not found: {self.path}")
        try:
            tensors, meta = read_tensor_file(self.path)
        except CodecError as err:
            raise TextSourceError(str(err)) from err
        missing = [k for k in ("text", "text_mask", "uncond_text", "uncond_mask") if k not in tensors]
        if missing or "captions" not in meta:
            raise TextSourceError(f"{self.path}: missing {missing + ([] if 'captions' in meta else ['captions metadata'])}"
                                  " (see jax_vdit.data.text for the layout)")
        captions = json.loads(meta["captions"])
        self._text, self._mask = tensors["text"], tensors["text_mask"]
        if self._text.ndim != 3 or len(captions) != self._text.shape[0] or self._mask.shape != self._text.shape[:2]:
            raise TextSourceError(f"{self.path}: text {self._text.shape}, text_mask {self._mask.shape} and "
                                  f"{len(captions)} captions do not agree")
        self._uncond = check_embeddings(tensors["uncond_text"], tensors["uncond_mask"], 1, f"{self.path} uncond")
        if self._uncond[0].shape[1:] != self._text.shape[1:]:
            raise TextSourceError(f"{self.path}: uncond_text {tensors['uncond_text'].shape} does not match text "
                                  f"{self._text.shape}")
        self._row: dict[str, int] = {}
        for i, caption in enumerate(captions):
            self._row.setdefault(caption, i)
        self.name = f"embeddings:{self.path.name}" + (f" ({meta['encoder']})" if meta.get("encoder") else "")

    def __contains__(self, caption: str) -> bool:
        return caption in self._row

    def encode(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        missing = [c for c in captions if c not in self._row]
        if missing:
            raise TextSourceError(f"{self.path} has no embedding for caption {missing[0]!r}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        rows = [self._row[c] for c in captions]
        return check_embeddings(self._text[rows], self._mask[rows], len(rows), str(self.path))

    def unconditional(self) -> tuple[np.ndarray, np.ndarray]:
        return self._uncond[0][0], self._uncond[1][0]


def save_caption_embeddings(path: str | os.PathLike, captions: Sequence[str], text: np.ndarray,
                            text_mask: np.ndarray, uncond_text: np.ndarray, uncond_mask: np.ndarray, *,
                            encoder: str = "") -> Path:
    """Write a precomputed embeddings file: text (N, L, C), text_mask (N, L), uncond_text (L, C) or (1, L, C),
    uncond_mask (L,) or (1, L); float arrays are written in their own dtype (float32/float16/bfloat16)."""
    from jax_vdit.data.codec import encode_tensors

    text, text_mask = np.asarray(text), np.asarray(text_mask)
    if text.ndim != 3 or text.shape[0] != len(captions) or text_mask.shape != text.shape[:2]:
        raise TextSourceError(f"text {text.shape} / text_mask {text_mask.shape} do not fit {len(captions)} captions")
    uncond_text = np.asarray(uncond_text).reshape((1,) + text.shape[1:])
    uncond_mask = np.asarray(uncond_mask).reshape((1, text.shape[1]))
    data = encode_tensors(
        {"text": text, "text_mask": text_mask.astype(np.int32), "uncond_text": uncond_text.astype(text.dtype),
         "uncond_mask": uncond_mask.astype(np.int32)},
        {"captions": json.dumps(list(captions), ensure_ascii=False), "encoder": encoder})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def text_source_from_spec(text_encoder: str | None = None, embeddings: str | os.PathLike | None = None) -> TextSource:
    """The command line's choice: ``embeddings`` (a file as above), or ``text_encoder`` = ``"toy"``,
    ``"toy:<world>"`` or a local mT5 folder. Exactly one must be given."""
    if (text_encoder is None) == (embeddings is None):
        raise TextSourceError("give exactly one of a text encoder ('toy' or a local mT5 folder) or an embeddings file")
    if embeddings is not None:
        return EmbeddingsTextSource(embeddings)
    if text_encoder == "toy" or text_encoder.startswith("toy:"):
        return toy_text_source(text_encoder.split(":", 1)[1] if ":" in text_encoder else None)
    return mt5_text_source(text_encoder)
