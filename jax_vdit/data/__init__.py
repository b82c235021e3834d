"""Real-video training data: videos + captions -> ArrayRecord shards (``prepare_data``) -> Grain batches.

* :mod:`~jax_vdit.data.video`: decode, sample, resize and crop one clip (PyAV); bad clips raise ``ClipError``.
* :mod:`~jax_vdit.data.captions`: JSONL / Open-Sora-Plan caption files.
* :mod:`~jax_vdit.data.text`: caption embeddings (local mT5, precomputed file, toy stand-in, any function).
* :mod:`~jax_vdit.data.latents`: frames -> latents with the CausalVAE, seeded per clip.
* :mod:`~jax_vdit.data.records` / :mod:`~jax_vdit.data.shards`: record bytes, atomic shards, ``manifest.json``.
* :mod:`~jax_vdit.data.prepare`: the resumable pipeline; :mod:`~jax_vdit.data.command`: ``vdit prepare-data``.
* :mod:`~jax_vdit.data.loader`: Grain data source and the step-indexed ``batch_at`` for ``training.train``.

Format and command: ``docs/data_format.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> submodule; imported on first use so that ``import jax_vdit.data.command`` (argument parsing,
# ``--help``) does not load JAX, the VAE or Grain
_EXPORTS: dict[str, str] = {
    "CaptionEntry": "captions",
    "CaptionFileError": "captions",
    "read_captions": "captions",
    "write_captions_jsonl": "captions",
    "TILING_PRESETS": "latents",
    "LatentSettings": "latents",
    "VAEEncoder": "latents",
    "clip_key": "latents",
    "ShardDataSource": "loader",
    "ShardLoader": "loader",
    "NothingUsableError": "prepare",
    "PrepareConfig": "prepare",
    "PrepareError": "prepare",
    "prepare_data": "prepare",
    "SIZE_PRESETS": "presets",
    "size_preset": "presets",
    "ClipRecord": "records",
    "decode_record": "records",
    "encode_record": "records",
    "DatasetIntegrityError": "shards",
    "Manifest": "shards",
    "verify_dataset": "shards",
    "EmbeddingsTextSource": "text",
    "FunctionTextSource": "text",
    "TextSource": "text",
    "TextSourceError": "text",
    "mt5_text_source": "text",
    "save_caption_embeddings": "text",
    "text_source_from_spec": "text",
    "toy_text_source": "text",
    "Clip": "video",
    "ClipError": "video",
    "ClipSpec": "video",
    "ClipTooShortError": "video",
    "ClipTooSmallError": "video",
    "MissingClipError": "video",
    "UnreadableClipError": "video",
    "read_clip": "video",
}

__all__ = [
    "SIZE_PRESETS",
    "TILING_PRESETS",
    "CaptionEntry",
    "CaptionFileError",
    "Clip",
    "ClipError",
    "ClipRecord",
    "ClipSpec",
    "ClipTooShortError",
    "ClipTooSmallError",
    "DatasetIntegrityError",
    "EmbeddingsTextSource",
    "FunctionTextSource",
    "LatentSettings",
    "Manifest",
    "MissingClipError",
    "NothingUsableError",
    "PrepareConfig",
    "PrepareError",
    "ShardDataSource",
    "ShardLoader",
    "TextSource",
    "TextSourceError",
    "UnreadableClipError",
    "VAEEncoder",
    "clip_key",
    "decode_record",
    "encode_record",
    "mt5_text_source",
    "prepare_data",
    "read_captions",
    "read_clip",
    "save_caption_embeddings",
    "size_preset",
    "text_source_from_spec",
    "toy_text_source",
    "verify_dataset",
    "write_captions_jsonl",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"jax_vdit.data.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jax_vdit.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
