"""``vdit prepare-data``: videos + captions -> VAE latents and text embeddings in verified shards
(see ``jax_vdit.data`` and docs/data_format.md)."""

from __future__ import annotations

from jax_vdit.data.command import register

__all__ = ["register"]
