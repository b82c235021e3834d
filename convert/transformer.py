"""Streaming conversion of an OpenSoraT2V release checkpoint to our orbax model checkpoint."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jax_vdit.checkpoints import atomic_directory, save_params_tree, MODEL_CONFIG_NAME, PARAMS_DIR
from jax_vdit.config import ModelConfig
from jax_vdit.tensor_io import open_tensors
from jax_vdit.weights import _resolve_config, release_key_map, stream_release_params


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion did: parameter count, bytes written, wall time and the process's peak RSS."""

    output: Path
    num_tensors: int
    num_params: int
    param_dtype: str
    seconds: float
    peak_rss_bytes: int


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def convert_transformer(
    source_path: str | Path,
    output: str | Path,
    *,
    config: ModelConfig | str | None = None,
    param_dtype: str = "float32",
    overwrite: bool = False,
    show_progress: bool = True,
) -> ConversionReport:
    """Read a release folder / safetensors / PyTorch file tensor by tensor and write an orbax checkpoint.

    Host memory holds the converted parameters (in ``param_dtype``) plus one source tensor at a time. The
    output directory appears only once complete (see ``checkpoints.atomic_directory``).
    """
    start = time.perf_counter()
    source_path = Path(source_path)
    cfg = _resolve_config(source_path, config, {"param_dtype": param_dtype})
    source = open_tensors(source_path)
    try:
        names = list(release_key_map(cfg).rules)
        with tqdm(total=len(names), desc="convert", unit="tensor", disable=not show_progress) as bar:
            params = stream_release_params(cfg, source, to_array=np.asarray, progress=lambda _: bar.update())
    finally:
        source.close()
    with atomic_directory(output, overwrite=overwrite) as tmp:
        save_params_tree(tmp / PARAMS_DIR, params)
        (tmp / MODEL_CONFIG_NAME).write_text(cfg.to_json())
    num_params = int(sum(np.size(a) for a in _leaves(params)))
    return ConversionReport(
        output=Path(output), num_tensors=len(names), num_params=num_params, param_dtype=cfg.param_dtype,
        seconds=time.perf_counter() - start, peak_rss_bytes=peak_rss_bytes(),
    )


def _leaves(tree):
    for v in tree.values():
        if isinstance(v, dict):
            yield from _leaves(v)
        else:
            yield v
