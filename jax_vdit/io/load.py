"""``load_model``: one entry for every model file we read (release folder, lone safetensors or PyTorch pickle, our
orbax model checkpoint)."""

from __future__ import annotations

from pathlib import Path

from jax_vdit.config import ModelConfig, dtype_policy
from jax_vdit.io.checkpoints import is_orbax_model_dir, load_model_checkpoint, read_integrity, read_model_config
from jax_vdit.io.release import load_release, resolve_config
from jax_vdit.io.tensors import find_weight_files
from jax_vdit.model.transformer import OpenSoraT2V


def load_model(
    path: str | Path,
    *,
    config: ModelConfig | str | None = None,
    param_dtype: str | None = None,
    compute_dtype: str | None = None,
) -> OpenSoraT2V:
    """Load an OpenSoraT2V from a release folder, a safetensors/PyTorch file, or our orbax model checkpoint.

    ``param_dtype`` / ``compute_dtype`` override the dtype policy ("float32", "bfloat16", "float16").
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if is_orbax_model_dir(path):
        return load_model_checkpoint(path, param_dtype=param_dtype, compute_dtype=compute_dtype)
    if path.is_dir():
        find_weight_files(path)  # clear error if the folder holds no weights
    return load_release(path, config=config, param_dtype=param_dtype, compute_dtype=compute_dtype)


def model_config(
    path: str | Path,
    *,
    config: ModelConfig | str | None = None,
    param_dtype: str | None = None,
    compute_dtype: str | None = None,
) -> ModelConfig:
    """The config :func:`load_model` would give the model at ``path`` (same arguments), read without loading any
    weights: e.g. to build the model's shapes (:func:`~jax_vdit.model.abstract_model`) while the weights load."""
    path = Path(path)
    policy = dtype_policy(param_dtype, compute_dtype)
    if is_orbax_model_dir(path):
        cfg = read_model_config(path, read_integrity(path))
        return cfg.replace(**policy) if policy else cfg
    return resolve_config(path, config, policy)
