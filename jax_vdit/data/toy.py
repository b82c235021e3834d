"""Toy-world training samples written as prepared shards (the ``vdit prepare-data`` format), so the toy world runs
through the same distillation commands as real video: ``vdit distill toy-data --world toy-9x24x24 --samples 50000
--out DATA``.

Records are :class:`~jax_vdit.toy.world.training_set.ToyTrainingSet` samples 0..N-1 in order (latents and the
world's text embeddings), stored in float32 so training sees exactly the in-memory samples; the empty caption's
embedding is the unconditional file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from jax_vdit.data.codec import encode_tensors
from jax_vdit.data.records import ClipRecord, encode_record
from jax_vdit.data.shards import UNCONDITIONAL, Manifest, atomic_write_bytes, sha256_file, write_shard


def write_toy_shards(world: str, num_samples: int, out_dir: str | os.PathLike, *, seed: int = 0,
                     shard_size: int = 1024, workers: int | None = None, training_set=None) -> Manifest:
    """Render ``num_samples`` samples of the toy ``world`` (or take ``training_set``, a ``ToyTrainingSet``) and
    write them to ``out_dir`` as a complete prepared dataset. An existing dataset with the same settings is kept
    as is; other settings are refused."""
    from jax_vdit.toy.world import get_config
    from jax_vdit.toy.world.training_set import ToyTrainingSet

    out_dir = Path(out_dir)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    config = get_config(world)
    settings = {"source": "toy-world", "world": world, "samples": int(num_samples), "seed": int(seed),
                "latent_dtype": "float32", "text_dtype": "float32", "trim_text": False,
                "shard_size": int(shard_size)}
    if (out_dir / "manifest.json").is_file():
        manifest = Manifest.load(out_dir)
        if manifest.settings != settings:
            diffs = [f"{k}: {manifest.settings.get(k)!r} -> {v!r}" for k, v in settings.items()
                     if manifest.settings.get(k) != v]
            raise ValueError(f"{out_dir} holds other data ({'; '.join(diffs)}); use a new folder")
        if manifest.complete:
            return manifest
    data = training_set or ToyTrainingSet.generate(config, num_samples, seed=seed, workers=workers)
    if len(data) != num_samples:
        raise ValueError(f"training_set has {len(data)} samples, num_samples is {num_samples}")
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(settings=settings, total_clips=num_samples, latent_shape=tuple(data.latents.shape[1:]),
                        text_shape=tuple(data.text.shape[1:]),
                        sources={"toy_world": world, "seed": seed})
    uncond = data.unconditional()
    path = atomic_write_bytes(out_dir / UNCONDITIONAL, encode_tensors(
        {"uncond_text": np.asarray(uncond["uncond_text"], np.float32),
         "uncond_mask": np.asarray(uncond["uncond_mask"], np.int32)}, {"text_encoder": f"toy:{world}"}))
    manifest.unconditional = {"file": UNCONDITIONAL, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    for number, start in enumerate(range(0, num_samples, shard_size)):
        idx = range(start, min(start + shard_size, num_samples))
        records = [encode_record(ClipRecord(clip_index=i, video=f"toy:{world}:{i}", caption=data.captions[i],
                                            latents=data.latents[i], text=data.text[i], text_mask=data.text_mask[i]),
                                 latent_dtype="float32", text_dtype="float32", trim_text=False) for i in idx]
        manifest.shards.append(write_shard(out_dir, number, records, list(idx)))
    manifest.complete = True
    manifest.save(out_dir)
    return manifest
