"""Our model checkpoint format (orbax + config JSON), written atomically.

Layout of a model checkpoint directory::

    <dir>/jax_vdit_model.json   ModelConfig (architecture + dtype policy)
    <dir>/params/main/          orbax StandardCheckpointer tree: every parameter outside the blocks
    <dir>/params/blocks/<i>/    orbax StandardCheckpointer tree: the parameters of transformer block i

Splitting by block lets a converter write a 2.77B-parameter model holding one block in memory at a time, and
lets a loader place parameters on devices block by block.

The directory is assembled under ``<dir>.partial-<pid>`` and renamed into place only when complete, so an
interrupted write never leaves something that looks like a finished checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jax_vdit.config import ModelConfig
from jax_vdit.io.key_map import check_tree_shapes
from jax_vdit.io.params import model_from_pure_params

MODEL_CONFIG_NAME = "jax_vdit_model.json"
PARAMS_DIR = "params"


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success rename it to ``path`` (replacing it if ``overwrite``).

    On error the partial directory is removed and ``path`` is left untouched.
    """
    path = Path(path).absolute()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True / --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        yield partial
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


BLOCKS_KEY = "blocks"


def split_param_groups(params: dict) -> Iterator[tuple[str, dict]]:
    """(group name, subtree): "main" for parameters outside the blocks, "blocks/<i>" for block i."""
    yield "main", {k: v for k, v in params.items() if k != BLOCKS_KEY}
    for i, block in sorted(params.get(BLOCKS_KEY, {}).items()):
        yield f"{BLOCKS_KEY}/{i}", block


def save_param_group(checkpoint_tmp: Path, group: str, subtree: dict) -> None:
    """Write one parameter group into a checkpoint directory under construction."""
    save_params_tree(checkpoint_tmp / PARAMS_DIR / group, subtree)


def save_model_checkpoint(path: str | Path, cfg: ModelConfig, params: dict, *, overwrite: bool = False) -> Path:
    """Write ``cfg`` and ``params`` (nested dict, see ``weights.pure_params``) atomically to ``path``."""
    with atomic_directory(path, overwrite=overwrite) as tmp:
        for group, subtree in split_param_groups(params):
            save_param_group(tmp, group, subtree)
        (tmp / MODEL_CONFIG_NAME).write_text(cfg.to_json())
    return Path(path)


def is_orbax_model_dir(path: Path) -> bool:
    """True when ``path`` is a model checkpoint written by :func:`save_model_checkpoint`."""
    return path.is_dir() and (path / MODEL_CONFIG_NAME).is_file()


def read_model_config(path: str | Path) -> ModelConfig:
    file = Path(path) / MODEL_CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a jax-vdit model checkpoint (no {MODEL_CONFIG_NAME})")
    return ModelConfig.from_json(file.read_text())


def restore_params(path: str | Path, cfg: ModelConfig) -> dict:
    """Restore the parameter tree of a model checkpoint, cast to ``cfg.param_dtype``."""
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
        stored = restore_params_tree(params_dir / group, like)
        check_tree_shapes(like, stored, what=f"orbax checkpoint {path} [{group}]")
        values = jax.tree.map(lambda t, s: jnp.asarray(s, dtype=t.dtype), like, stored)
        if group == "main":
            out.update(values)
        else:
            out.setdefault(BLOCKS_KEY, {})[int(group.split("/")[1])] = values
    return out


def load_model_checkpoint(path: str | Path, *, param_dtype: str | None = None, compute_dtype: str | None = None):
    """Load a model written by :func:`save_model_checkpoint` (or the converter)."""
    cfg = read_model_config(path)
    policy = {k: v for k, v in (("param_dtype", param_dtype), ("compute_dtype", compute_dtype)) if v is not None}
    if policy:
        cfg = cfg.replace(**policy)
    return model_from_pure_params(cfg, restore_params(path, cfg))
