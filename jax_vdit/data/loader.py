"""Training batches from prepared shards, through Grain.

:class:`ShardDataSource` is a Grain random-access source over the shards the manifest lists (checked when
opened): record i -> ``{"latents" (C,t,h,w) float32, "text" (L,C) float32, "text_mask" (L,) int32,
"clip_index" int64}``.

:class:`ShardLoader` orders records with Grain's index shuffle: each epoch is a fresh seeded permutation of the
record indices (``MapDataset.range(N).shuffle(seed)``, reshuffled per epoch by ``.repeat()``), cut into
``N // B`` global batches of ``B`` (the last ``N mod B`` records of each epoch's permutation wait for a later
epoch, so no batch repeats a record). Process ``p`` of ``P`` takes rows ``[p * B/P, (p + 1) * B/P)`` of each
global batch: the processes' batches are disjoint, their union is the global batch, and everything is a pure
function of (seed, step) -- what ``training.train``'s exact resume needs (``batch_at(step)``). The order is
Grain's and may change with the Grain version.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jax_vdit.data.codec import read_tensor_file
from jax_vdit.data.records import ClipRecord, decode_record
from jax_vdit.data.shards import Manifest, verify_dataset

TRAINING_KEYS = ("latents", "text", "text_mask")


class ShardDataSource:
    """Random access to the records of a prepared dataset (a Grain ``RandomAccessDataSource``).

    Opening verifies the manifest's files (``verify``: "sha256" | "size" | "none"; see
    :func:`~jax_vdit.data.shards.verify_dataset`) and raises
    :class:`~jax_vdit.data.shards.DatasetIntegrityError` naming a missing or altered file.
    """

    def __init__(self, data_dir: str | os.PathLike, *, verify: str = "sha256", allow_incomplete: bool = False):
        import grain

        self.data_dir = Path(data_dir)
        self.manifest: Manifest = verify_dataset(self.data_dir, level=verify, require_complete=not allow_incomplete)
        paths = [str(self.data_dir / s.file) for s in self.manifest.shards]
        self._source = grain.sources.ArrayRecordDataSource(paths)
        if len(self._source) != self.manifest.num_records:
            raise RuntimeError(f"{self.data_dir}: shards hold {len(self._source)} records, manifest says "
                               f"{self.manifest.num_records}")

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"ShardDataSource({str(self.data_dir)!r}, records={len(self)})"

    def record(self, index: int) -> ClipRecord:
        """The full record (caption, source video, ...) at ``index``."""
        return decode_record(self._source[index])

    @staticmethod
    def _example(record: ClipRecord) -> dict[str, np.ndarray]:
        return {"latents": record.latents, "text": record.text, "text_mask": record.text_mask,
                "clip_index": np.int64(record.clip_index)}

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return self._example(self.record(index))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        return [self._example(decode_record(b)) for b in self._source.__getitems__(list(indices))]

    def unconditional(self) -> dict[str, np.ndarray]:
        """The empty caption's encoding: ``uncond_text`` (L, C) float32, ``uncond_mask`` (L,) int32 -- the frozen
        context of :class:`~jax_vdit.objectives.DiffusionObjective` and MLCD."""
        tensors, _ = read_tensor_file(self.data_dir / self.manifest.unconditional["file"])
        return {"uncond_text": np.array(tensors["uncond_text"], np.float32),
                "uncond_mask": np.array(tensors["uncond_mask"], np.int32)}


def _default_process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return int(process_index), int(process_count)


def _stack(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class ShardLoader:
    """Batches of a prepared dataset for this process.

    ``batch_size`` is the global batch (all processes); this process gets ``batch_size // process_count`` examples
    per step. ``process_index`` / ``process_count`` default to ``jax.process_index()`` / ``jax.process_count()``.

    * :meth:`batch_at` (step -> ``{"latents" (b,C,t,h,w) float32, "text" (b,L,C) float32, "text_mask" (b,L)
      int32}``): the ``batch_at`` of :func:`jax_vdit.training.train`.
    * :meth:`indices_at`: the record indices of that batch; :meth:`clip_indices_at`: their caption-file indices.
    * :meth:`iterator`: a Grain ``DatasetIterator`` over the same batches (``get_state()`` / ``set_state()``; its
      state is ``{"next_index": step}``), :meth:`iterator_state` / ``iterator(start_step=...)`` to resume.
    * :meth:`unconditional`: the frozen ``uncond_text`` / ``uncond_mask``.
    """

    def __init__(self, data_dir: str | os.PathLike | ShardDataSource, batch_size: int, *, seed: int = 0,
                 process_index: int | None = None, process_count: int | None = None, verify: str = "sha256",
                 allow_incomplete: bool = False) -> None:
        import grain

        self.source = (data_dir if isinstance(data_dir, ShardDataSource)
                       else ShardDataSource(data_dir, verify=verify, allow_incomplete=allow_incomplete))
        self.process_index, self.process_count = _default_process(process_index, process_count)
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} is not in [0, {self.process_count})")
        if batch_size < 1 or batch_size % self.process_count:
            raise ValueError(f"the global batch_size ({batch_size}) must be a positive multiple of process_count "
                             f"({self.process_count})")
        n = len(self.source)
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the dataset's {n} records")
        self.batch_size = batch_size
        self.local_batch_size = batch_size // self.process_count
        self.seed = int(seed)
        rows = slice(self.process_index * self.local_batch_size, (self.process_index + 1) * self.local_batch_size)
        global_batches = grain.MapDataset.range(n).shuffle(seed=self.seed).batch(batch_size, drop_remainder=True)
        self._indices = global_batches.repeat().map(lambda indices: indices[rows])
        self.dataset = self._indices.map(self._load)
        """Grain ``MapDataset``: ``dataset[step]`` is :meth:`batch_at` (step)."""

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch: ``N // batch_size``."""
        return len(self.source) // self.batch_size

    def _load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        batch = _stack(self.source.__getitems__([int(i) for i in indices]))
        return {k: batch[k] for k in TRAINING_KEYS}

    def indices_at(self, step: int) -> np.ndarray:
        """Record indices (int64, (local_batch_size,)) of this process's batch ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return np.asarray(self._indices[step], np.int64)

    def clip_indices_at(self, step: int) -> np.ndarray:
        """Caption-file indices of the clips in this process's batch ``step``."""
        return np.stack([self.source[int(i)]["clip_index"] for i in self.indices_at(step)])

    def batch_at(self, step: int) -> dict[str, np.ndarray]:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return self.dataset[step]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        return self.batch_at(step)

    def iterator(self, start_step: int = 0, *, read_threads: int = 4, prefetch: int = 8):
        """A Grain iterator over this process's batches from ``start_step``, read ahead by ``read_threads``
        threads (``grain.ReadOptions``)."""
        import grain

        it = iter(self.dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                                  prefetch_buffer_size=prefetch)))
        if start_step:
            it.set_state(self.iterator_state(start_step))
        return it

    @staticmethod
    def iterator_state(step: int) -> dict[str, Any]:
        """The Grain iterator state positioned at batch ``step`` (what ``it.get_state()`` returns there)."""
        return {"next_index": int(step)}

    def unconditional(self) -> dict[str, np.ndarray]:
        return self.source.unconditional()
