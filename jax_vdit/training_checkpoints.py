"""Checkpoints of a training state (:class:`StateCheckpoints`): orbax writes of the flattened state, each with a
record of every array's shape, dtype, finiteness and checksum that a restore verifies. Used by
:func:`jax_vdit.training.train` to save and to resume."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

PyTree = Any
TrainState = PyTree  # jax_vdit.training.TrainState (a registered dataclass); any pytree of arrays is stored alike


def _flat_leaves(tree: PyTree) -> dict[str, Any]:
    leaves = jax.tree.leaves(tree)
    return {f"{i:05d}": leaf for i, leaf in enumerate(leaves)}


def _mesh_sharding(a):
    """The sharding of a leaf placed on a device mesh (restored the same way); None for single-device leaves."""
    sharding = getattr(a, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.NamedSharding) else None


def _leaf_names(tree: PyTree) -> dict[str, str]:
    """Flat storage key ("00012") -> readable path (".params['blocks'][0]['attn1']['to_q']['kernel']")."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {f"{i:05d}": jax.tree_util.keystr(path) for i, (path, _) in enumerate(paths)}


def _meta_digest(meta: Mapping[str, Any]) -> str:
    from jax_vdit.io.integrity import text_digest

    return text_digest(json.dumps({k: v for k, v in meta.items() if k != "meta_sha256"}, sort_keys=True, default=str))


class StateCheckpoints:
    """Orbax CheckpointManager over a flattened TrainState (atomic writes, keeps the newest N).

    Each checkpoint's ``meta`` records every array's shape, dtype, finiteness and checksum
    (:mod:`jax_vdit.io.integrity`) and its own sha256; :meth:`restore` verifies them and raises
    :class:`~jax_vdit.io.integrity.CheckpointIntegrityError` naming the array (or file) that differs. A state with
    NaN or Inf anywhere is never written (:class:`~jax_vdit.io.integrity.NonFiniteStateError`).
    """

    def __init__(self, directory: Path, keep: int):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self._keep = keep
        self.directory = Path(directory).absolute()
        self.manager = self._open()

    def _open(self):
        ocp = self._ocp
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True),
            item_names=("state", "meta"),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every step with a checkpoint folder, newest first."""
        return sorted(self.manager.all_steps(), reverse=True)

    def save(self, state: TrainState, meta: dict) -> None:
        from jax_vdit.io.integrity import NonFiniteStateError, checksums_jax, non_finite_names

        ocp = self._ocp
        step = int(state.step)
        leaves = _flat_leaves(state)
        records = checksums_jax(leaves)
        bad = non_finite_names(records)
        if bad:
            names = _leaf_names(state)
            raise NonFiniteStateError(
                f"train state at step {step} holds NaN or Inf in {len(bad)} arrays, e.g. "
                f"{[names[b] for b in bad[:4]]}; not checkpointed (last good checkpoint: step {self.latest_step()}). "
                "Lower the learning rate or set qk_clip_max_gain, then resume.")
        meta = dict(meta, structure=str(jax.tree.structure(state)), step=step,
                    integrity={n: r.to_json() for n, r in records.items()})
        meta["meta_sha256"] = _meta_digest(meta)
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(leaves), meta=ocp.args.JsonSave(meta)))
        self.manager.wait_until_finished()

    def read_meta(self, step: int) -> dict:
        """The verified ``meta`` of one checkpoint (CheckpointIntegrityError if unreadable or changed)."""
        from jax_vdit.io.integrity import CheckpointIntegrityError

        ocp = self._ocp
        where = f"checkpoint at step {step} in {self.directory}"
        try:
            meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:  # noqa: BLE001 - orbax raises many types for missing or damaged files
            raise CheckpointIntegrityError(f"{where} is unreadable ({err.__class__.__name__}: {err})") from err
        if not isinstance(meta, dict):
            raise CheckpointIntegrityError(f"{where} has no metadata")
        if "meta_sha256" in meta and meta["meta_sha256"] != _meta_digest(meta):
            raise CheckpointIntegrityError(f"{where}: its metadata is corrupted (sha256 differs)")
        return meta

    def restore(self, like: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """Restore into the structure of ``like`` (a freshly initialised state), verifying every array."""
        from jax_vdit.io.integrity import (ArrayRecord, CheckpointIntegrityError, checksums_jax, non_finite_names,
                                           verify)

        ocp = self._ocp
        step = self.latest_step() if step is None else step
        where = f"checkpoint at step {step} in {self.directory}"
        meta = self.read_meta(step)
        if meta.get("structure") != str(jax.tree.structure(like)):
            raise ValueError(
                f"{where} holds a different train state structure "
                "(model or optimiser configuration changed since it was written)"
            )
        target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=_mesh_sharding(a)),
                              _flat_leaves(like))
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        except Exception as err:  # noqa: BLE001 - tensorstore raises its own errors for damaged chunks
            raise CheckpointIntegrityError(f"{where} is unreadable ({err.__class__.__name__}: {err})") from err
        records = checksums_jax(restored["state"])
        names = _leaf_names(like)
        if "integrity" in meta:
            expected = {n: ArrayRecord.from_json(r) for n, r in meta["integrity"].items()}
            verify({names.get(n, n): r for n, r in expected.items()},
                   {names.get(n, n): r for n, r in records.items()}, what=where)
        bad = non_finite_names(records)
        if bad:
            raise CheckpointIntegrityError(f"{where} holds NaN or Inf in {[names.get(b, b) for b in bad[:4]]}")
        leaves = [restored["state"][k] for k in sorted(restored["state"])]
        return jax.tree.unflatten(jax.tree.structure(like), leaves), meta

    def restore_newest_intact(self, like: TrainState) -> tuple[TrainState, dict, int] | None:
        """Restore the newest checkpoint that reads back intact; None when there is none at all.

        A damaged newer checkpoint is moved to ``<directory>_damaged/<step>`` (kept for inspection, out of orbax's
        way) with a warning naming it and the step used instead. Raises CheckpointIntegrityError when every
        checkpoint is damaged; a structure mismatch (another model or optimiser) raises ValueError at once.
        """
        import warnings

        from jax_vdit.io.integrity import CheckpointIntegrityError

        damaged: list[tuple[int, str]] = []
        found = None
        for step in self.all_steps():
            try:
                state, meta = self.restore(like, step)
            except CheckpointIntegrityError as err:
                damaged.append((step, str(err)))
                continue
            found = (state, meta, step)
            break
        if damaged:
            self.manager.close()
            aside = self.directory.with_name(self.directory.name + "_damaged")
            aside.mkdir(parents=True, exist_ok=True)
            for step, _ in damaged:
                src = self.directory / str(step)
                if src.exists():
                    src.rename(aside / f"{step}-{int(time.time())}")
            self.manager = self._open()
            why = "; ".join(f"step {s}: {e}" for s, e in damaged)
            if found is None:
                raise CheckpointIntegrityError(
                    f"no intact checkpoint in {self.directory} (moved to {aside}): {why}")
            warnings.warn(f"resuming from step {found[2]}: newer checkpoint(s) are damaged and were moved to {aside} "
                          f"({why})", stacklevel=2)
        return found

    def close(self) -> None:
        self.manager.close()


# fields that may change when a run resumes (bookkeeping; "steps" only with a constant learning rate after warmup)
