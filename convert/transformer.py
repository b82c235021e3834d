"""Streaming conversion of an OpenSoraT2V release checkpoint to our orbax model checkpoint."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from jax_vdit.io.checkpoints import atomic_directory, check_output_path, finish_model_checkpoint, save_param_group
from jax_vdit.config import ModelConfig
from jax_vdit.io.tensors import open_tensors
from jax_vdit.io.release import resolve_config, release_key_map, stream_release_groups


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
    """Read a release folder / safetensors / PyTorch file and write an orbax model checkpoint, block by block.

    Host memory holds one parameter group (one transformer block, ~340 MB in fp32 at full size) plus one source
    tensor at a time. The output directory appears only once complete (see ``checkpoints.atomic_directory``).
    ``output`` must not be, contain or lie inside the source; ``overwrite`` replaces only a previous output of ours.
    A source value that does not fit ``param_dtype`` (e.g. beyond float16's range) or two tensors sharing bytes
    raise errors naming the tensor.
    """
    start = time.perf_counter()
    source_path = Path(source_path)
    check_output_path(output, overwrite=overwrite, sources=(source_path,))  # before anything is read
    cfg = resolve_config(source_path, config, {"param_dtype": param_dtype})
    source = open_tensors(source_path)
    num_params = 0
    names = list(release_key_map(cfg).rules)
    try:
        records = {}
        with atomic_directory(output, overwrite=overwrite, sources=(source_path,)) as tmp, \
                tqdm(total=len(names), desc="convert", unit="tensor", disable=not show_progress) as bar:
            for group, subtree in stream_release_groups(cfg, source, progress=lambda _: bar.update()):
                records[group] = save_param_group(tmp, group, subtree)
                num_params += int(sum(np.size(a) for a in jax.tree.leaves(subtree)))
                del subtree
            finish_model_checkpoint(tmp, cfg, records)
    finally:
        source.close()
    return ConversionReport(
        output=Path(output), num_tensors=len(names), num_params=num_params, param_dtype=cfg.param_dtype,
        seconds=time.perf_counter() - start, peak_rss_bytes=peak_rss_bytes(),
    )

