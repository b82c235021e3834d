"""One shard record = one clip, as safetensors bytes (see ``docs/data_format.md``).

Tensors: ``latents`` (C, t, h, w) in the dataset's latent dtype; ``text`` (n, C_text) in its text dtype, where
n = L (full) or, with trimming, the number of valid tokens (the mask must then be a prefix of ones; the dropped
rows are restored as zeros on reading -- they are masked out of cross-attention); ``text_mask`` (L,) uint8.
Metadata (strings): ``clip_index``, ``video``, ``caption``, ``start_frame``, ``frame_stride``, ``source_fps``,
``text_length`` (L).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from jax_vdit.data.codec import CodecError, cast_for_storage, decode_tensors, encode_tensors


@dataclass(frozen=True)
class ClipRecord:
    """A clip as stored and read back.

    latents: (C, t, h, w) float (float32 after :func:`decode_record` with ``as_float32``);
    text: (L, C_text) float; text_mask: (L,) int32; clip_index: position in the caption file.
    """

    clip_index: int
    video: str
    caption: str
    latents: np.ndarray
    text: np.ndarray
    text_mask: np.ndarray
    start_frame: int = 0
    frame_stride: int = 1
    source_fps: float = float("nan")


def valid_prefix(mask: np.ndarray) -> int | None:
    """n if ``mask`` is n ones followed by zeros, else None."""
    n = int(np.sum(mask != 0))
    return n if bool(np.all(mask[:n] != 0)) else None


def encode_record(record: ClipRecord, *, latent_dtype: str, text_dtype: str, trim_text: bool) -> bytes:
    """Serialize ``record`` (float arrays cast to the storage dtypes; overflow and NaN refused)."""
    latents, text, mask = np.asarray(record.latents), np.asarray(record.text), np.asarray(record.text_mask)
    for name, x in (("latents", latents), ("text", text)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"clip {record.clip_index} ({record.video}): {name} contain NaN or Inf")
    if text.ndim != 2 or mask.shape != text.shape[:1]:
        raise ValueError(f"clip {record.clip_index}: text must be (L, C) with mask (L,); got {text.shape}, {mask.shape}")
    n = valid_prefix(mask) if trim_text else None
    stored_text = text if n is None else text[:n]
    tensors = {
        "latents": cast_for_storage(latents, latent_dtype, what=f"clip {record.clip_index} latents"),
        "text": cast_for_storage(stored_text, text_dtype, what=f"clip {record.clip_index} text"),
        "text_mask": (mask != 0).astype(np.uint8),
    }
    meta = {
        "clip_index": str(int(record.clip_index)),
        "video": record.video,
        "caption": record.caption,
        "start_frame": str(int(record.start_frame)),
        "frame_stride": str(int(record.frame_stride)),
        "source_fps": repr(float(record.source_fps)),
        "text_length": str(int(text.shape[0])),
    }
    return encode_tensors(tensors, meta)


def decode_record(data: bytes, *, as_float32: bool = True) -> ClipRecord:
    """Bytes from :func:`encode_record` -> :class:`ClipRecord` (text padded back to (L, C) with zeros).

    ``as_float32``: latents and text as float32 (else the stored dtypes). Raises :class:`CodecError`."""
    tensors, meta = decode_tensors(data)
    try:
        latents, text, mask = tensors["latents"], tensors["text"], tensors["text_mask"]
        length = int(meta["text_length"])
        if as_float32:
            latents, text = latents.astype(np.float32), text.astype(np.float32)
        if text.shape[0] < length:
            text = np.concatenate([text, np.zeros((length - text.shape[0],) + text.shape[1:], text.dtype)])
        return ClipRecord(
            clip_index=int(meta["clip_index"]), video=meta["video"], caption=meta["caption"], latents=latents,
            text=text, text_mask=mask.astype(np.int32), start_frame=int(meta["start_frame"]),
            frame_stride=int(meta["frame_stride"]), source_fps=float(meta["source_fps"]))
    except KeyError as err:
        raise CodecError(f"record lacks {err}") from err
