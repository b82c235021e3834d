"""Our model checkpoint format (orbax + config JSON), written atomically.

Layout of a model checkpoint directory::

    <dir>/jax_vdit_model.json   ModelConfig (architecture + dtype policy)
    <dir>/params/main/          orbax StandardCheckpointer tree: every parameter outside the blocks
    <dir>/params/blocks/<i>/    orbax StandardCheckpointer tree: the parameters of transformer block i
    <dir>/jax_vdit_integrity.json  per array: shape, dtype, finiteness, checksum; sha256 of the config file
    <dir>/.jax_vdit_output       marker: this folder was written by jax-vdit (``--overwrite`` replaces only these)

Splitting by block lets a converter write a 2.77B-parameter model holding one block in memory at a time, and
lets a loader place parameters on devices block by block.

The directory is assembled under ``<dir>.partial-<pid>`` and renamed into place only when complete, so an
interrupted write never leaves something that looks like a finished checkpoint; partial folders of processes that
died are removed by the next write to the same place. Loading recomputes every array's integrity record and raises
:class:`~jax_vdit.io.integrity.CheckpointIntegrityError` naming the array that differs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jax_vdit.config import ModelConfig, dtype_policy
from jax_vdit.io.integrity import (ArrayRecord, CheckpointIntegrityError, non_finite_names, record_numpy, text_digest,
                                   verify)
from jax_vdit.io.key_map import NonFiniteWeightError, check_tree_shapes
from jax_vdit.io.params import model_from_pure_params

MODEL_CONFIG_NAME = "jax_vdit_model.json"
INTEGRITY_NAME = "jax_vdit_integrity.json"
PARAMS_DIR = "params"


OUTPUT_MARKER = ".jax_vdit_output"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove ``<path>.partial-<pid>`` / ``<path>.old-<pid>`` folders left by processes that are no longer running
    (a killed conversion or save); returns the folders removed."""
    path = Path(path).absolute()
    removed = []
    if not path.parent.is_dir():
        return removed
    for kind in ("partial", "old"):
        for leftover in path.parent.glob(f"{path.name}.{kind}-*"):
            pid = leftover.name.rsplit("-", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
    return removed


def is_our_output(path: Path) -> bool:
    """True for a folder jax-vdit wrote (the marker file, or a model checkpoint of ours), or an empty folder."""
    return path.is_dir() and (
        (path / OUTPUT_MARKER).is_file() or (path / MODEL_CONFIG_NAME).is_file() or not any(path.iterdir()))


def check_output_path(path: str | Path, *, overwrite: bool, sources: tuple[str | Path, ...] = ()) -> Path:
    """Refuse an output ``path`` that would destroy data: one that is, contains or is inside a ``sources`` path;
    an existing one without ``overwrite``; with ``overwrite``, one that is not a folder we wrote before."""
    path = Path(path).absolute().resolve()
    for src in sources:
        src = Path(src).absolute().resolve()
        if path == src or path in src.parents or src in path.parents:
            relation = "is" if path == src else "contains" if path in src.parents else "is inside"
            raise ValueError(f"output {path} {relation} the source {src}; choose an output outside the source")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")
        if not is_our_output(path):
            raise FileExistsError(
                f"refusing to overwrite {path}: it is not a previous jax-vdit output (no {OUTPUT_MARKER} marker or "
                f"{MODEL_CONFIG_NAME}); remove it yourself if it should go")
    return path


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False,
                     sources: tuple[str | Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success mark it as ours and rename it to ``path``.

    ``path`` may be replaced only with ``overwrite`` and only if it is a previous output of ours (see
    :func:`check_output_path`; ``sources`` are paths the output must not touch). Stale partial folders of dead
    processes next to ``path`` are removed first. On error the partial directory is removed and ``path`` is left
    untouched.
    """
    path = check_output_path(path, overwrite=overwrite, sources=sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        yield partial
        (partial / OUTPUT_MARKER).write_text(json.dumps({"written_by": "jax-vdit", "time": time.time()}) + "\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f"{path.name}.old-{os.getpid()}")
        path.rename(old)
    partial.rename(path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _str_keys(tree: Any) -> Any:
    """Orbax stores dict keys as strings; make that explicit (layer indices 0, 1, ... -> "0", "1", ...)."""
    if isinstance(tree, dict):
        return {str(k): _str_keys(v) for k, v in tree.items()}
    return tree


def _match_keys(target: Any, stored: Any) -> Any:
    """Give ``stored`` (string keys) the key types of ``target`` (e.g. int layer indices)."""
    if isinstance(target, dict) and isinstance(stored, dict):
        by_str = {str(k): k for k in target}
        return {by_str.get(k, k): _match_keys(target.get(by_str.get(k, k)), v) for k, v in stored.items()}
    return stored


def save_params_tree(params_dir: Path, params: dict) -> None:
    """Write a nested dict of arrays (NumPy or jax) with orbax; blocks until the write is complete."""
    ckptr = _checkpointer()
    ckptr.save(params_dir.absolute(), _str_keys(params))
    ckptr.wait_until_finished()


def restore_params_tree(params_dir: Path, like: Any) -> Any:
    """Read a tree written by :func:`save_params_tree`, with the key types of ``like``."""
    return _match_keys(like, _checkpointer().restore(params_dir.absolute()))


def leaf_records(tree: Any) -> dict[str, ArrayRecord]:
    """``"a/b/kernel"`` -> :class:`ArrayRecord` for every array of a nested dict (host copies are made)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
        out[name] = record_numpy(jax.device_get(leaf))
    return out


BLOCKS_KEY = "blocks"


def split_param_groups(params: dict) -> Iterator[tuple[str, dict]]:
    """(group name, subtree): "main" for parameters outside the blocks, "blocks/<i>" for block i."""
    yield "main", {k: v for k, v in params.items() if k != BLOCKS_KEY}
    for i, block in sorted(params.get(BLOCKS_KEY, {}).items()):
        yield f"{BLOCKS_KEY}/{i}", block


def save_param_group(checkpoint_tmp: Path, group: str, subtree: dict) -> dict[str, ArrayRecord]:
    """Write one parameter group into a checkpoint directory under construction; returns its integrity records.
    Raises :class:`NonFiniteWeightError` naming the arrays if any holds NaN or Inf (nothing is written)."""
    records = leaf_records(subtree)
    bad = non_finite_names(records)
    if bad:
        raise NonFiniteWeightError(f"not writing parameter group {group!r}: non-finite values (NaN or Inf) in {bad}")
    save_params_tree(checkpoint_tmp / PARAMS_DIR / group, subtree)
    return records


def finish_model_checkpoint(checkpoint_tmp: Path, cfg: ModelConfig, records: dict[str, dict[str, ArrayRecord]]) -> None:
    """Write the config and the integrity file (records by group) of a checkpoint under construction."""
    text = cfg.to_json()
    (checkpoint_tmp / MODEL_CONFIG_NAME).write_text(text)
    integrity = {"config_sha256": text_digest(text),
                 "groups": {g: {n: r.to_json() for n, r in recs.items()} for g, recs in records.items()}}
    (checkpoint_tmp / INTEGRITY_NAME).write_text(json.dumps(integrity, indent=1, sort_keys=True))


def save_model_checkpoint(path: str | Path, cfg: ModelConfig, params: dict, *, overwrite: bool = False) -> Path:
    """Write ``cfg`` and ``params`` (nested dict, see ``weights.pure_params``) atomically to ``path``."""
    with atomic_directory(path, overwrite=overwrite) as tmp:
        records = {group: save_param_group(tmp, group, subtree) for group, subtree in split_param_groups(params)}
        finish_model_checkpoint(tmp, cfg, records)
    return Path(path)


def is_orbax_model_dir(path: Path) -> bool:
    """True when ``path`` is a model checkpoint written by :func:`save_model_checkpoint`."""
    return path.is_dir() and (path / MODEL_CONFIG_NAME).is_file()


def read_integrity(path: str | Path) -> dict | None:
    """The integrity file of a model checkpoint (None for checkpoints written before it existed)."""
    file = Path(path) / INTEGRITY_NAME
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text())
        groups = {g: {n: ArrayRecord.from_json(r) for n, r in recs.items()} for g, recs in data["groups"].items()}
        return {"config_sha256": str(data["config_sha256"]), "groups": groups}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointIntegrityError(f"{file} is unreadable ({err.__class__.__name__}: {err})") from err


def read_model_config(path: str | Path, integrity: dict | None = None) -> ModelConfig:
    """The :class:`ModelConfig` of a model checkpoint (checked against ``integrity``'s digest when given)."""
    file = Path(path) / MODEL_CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a jax-vdit model checkpoint (no {MODEL_CONFIG_NAME})")
    raw = file.read_bytes()
    if integrity is not None and text_digest(raw) != integrity["config_sha256"]:
        raise CheckpointIntegrityError(f"{file} is corrupted: its sha256 differs from the one written")
    try:
        return ModelConfig.from_json(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as err:
        raise CheckpointIntegrityError(f"{file} is unreadable ({err.__class__.__name__}: {err})") from err


def restore_params(path: str | Path, cfg: ModelConfig, integrity: dict | None = None) -> dict:
    """Restore the parameter tree of a model checkpoint, cast to ``cfg.param_dtype``.

    Every array is checked: shape against ``cfg``; shape, dtype, finiteness and checksum against ``integrity`` (the
    records written with it); NaN or Inf raise :class:`NonFiniteWeightError` naming the arrays even without records.
    """
    from flax import nnx

    from jax_vdit.model.transformer import abstract_model

    abstract = nnx.to_pure_dict(nnx.state(abstract_model(cfg), nnx.Param))
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract)
    params_dir = Path(path) / PARAMS_DIR
    found_blocks = sorted(int(p.name) for p in (params_dir / BLOCKS_KEY).iterdir()) if (params_dir / BLOCKS_KEY).is_dir() else []
    if found_blocks != list(range(cfg.num_layers)):
        raise ValueError(f"{path}: expected parameter groups for blocks 0..{cfg.num_layers - 1}, found {found_blocks}")
    out: dict = {}
    for group, like in split_param_groups(target):
        what = f"orbax checkpoint {path} [{group}]"
        try:
            stored = restore_params_tree(params_dir / group, like)
        except Exception as err:  # noqa: BLE001 - orbax/tensorstore raise many types for damaged files
            raise CheckpointIntegrityError(f"{what} is unreadable ({err.__class__.__name__}: {err})") from err
        check_tree_shapes(like, stored, what=what)
        records = leaf_records(stored)
        if integrity is not None:
            verify(integrity["groups"].get(group, {}), records, what=what)
        bad = non_finite_names(records)
        if bad:
            raise NonFiniteWeightError(f"{what}: non-finite values (NaN or Inf) in {bad}")
        values = jax.tree.map(lambda t, s: jnp.asarray(s, dtype=t.dtype), like, stored)
        if group == "main":
            out.update(values)
        else:
            out.setdefault(BLOCKS_KEY, {})[int(group.split("/")[1])] = values
    return out


def load_model_checkpoint(path: str | Path, *, param_dtype: str | None = None, compute_dtype: str | None = None):
    """Load a model written by :func:`save_model_checkpoint` (or the converter), verifying its integrity file."""
    integrity = read_integrity(path)
    if integrity is None:
        warnings.warn(f"{path} has no {INTEGRITY_NAME} (written by an older jax-vdit): only shapes and finiteness "
                      "are checked; re-save or re-convert it to get checksums", stacklevel=2)
    cfg = read_model_config(path, integrity)
    policy = dtype_policy(param_dtype, compute_dtype)
    if policy:
        cfg = cfg.replace(**policy)
    return model_from_pure_params(cfg, restore_params(path, cfg, integrity))
