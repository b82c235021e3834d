"""Read named tensors from release checkpoints one at a time (streaming).

Supported sources, all exposed through :class:`TensorSource`:

* a lone ``.safetensors`` file (header parsed up front; a tensor's bytes are read only when asked for);
* a sharded safetensors checkpoint described by ``*.safetensors.index.json`` (diffusers / transformers layout);
* a PyTorch pickle (``.pt``, ``.pth``, ``.bin``, ``.ckpt``), loaded with ``torch.load(weights_only=True, mmap=True)``
  so tensors stay on disk until read. Nested state dicts (``{"state_dict": ...}``, ``{"ema_state_dict": ...}``,
  ``{"state_dict": {"gen_model": ...}}``) and a ``module.`` prefix are unwrapped.

Every tensor comes back as a NumPy array in its stored dtype (``ml_dtypes.bfloat16`` for bf16).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class CheckpointFormatError(ValueError):
    """The file or folder is not a checkpoint we can read, or its contents are malformed."""


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of one stored tensor, known without reading its data."""

    shape: tuple[int, ...]
    dtype: str


class TensorSource(Protocol):
    """Named tensors that can be listed cheaply and read one at a time."""

    def infos(self) -> Mapping[str, TensorInfo]:
        """Every tensor name with its shape and dtype (no tensor data is read)."""

    def read(self, name: str) -> np.ndarray:
        """Load one tensor into host memory as a NumPy array."""

    def close(self) -> None:
        """Release file handles."""


_SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}


def _numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


class SafetensorsSource:
    """One or several ``.safetensors`` files; tensor names must be unique across files.

    Tensors are read with plain positioned file reads rather than a memory map, so reading a large checkpoint
    tensor by tensor does not leave file pages counted in the process's resident memory. Each read opens its own
    file handle, so several threads may read at once (``concurrent_reads``).
    """

    concurrent_reads = True

    def __init__(self, files: list[Path]):
        self._where: dict[str, tuple[Path, int, int]] = {}
        self._infos: dict[str, TensorInfo] = {}
        for file in files:
            if not file.is_file():
                raise CheckpointFormatError(f"safetensors shard not found: {file}")
            header, data_start = self._read_header(file)
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                if name in self._where:
                    raise CheckpointFormatError(f"tensor {name!r} appears in more than one shard ({file})")
                try:
                    dtype = _SAFETENSORS_DTYPES[entry["dtype"]]
                    begin, end = entry["data_offsets"]
                    shape = tuple(int(d) for d in entry["shape"])
                except (KeyError, TypeError, ValueError) as err:
                    raise CheckpointFormatError(f"{file}: malformed header entry for {name!r}: {entry}") from err
                if (end - begin) != int(np.prod(shape, dtype=np.int64)) * _numpy_dtype(dtype).itemsize:
                    raise CheckpointFormatError(f"{file}: byte size of {name!r} does not match its shape/dtype")
                if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
                    raise CheckpointFormatError(f"{file}: invalid data_offsets {entry['data_offsets']} for {name!r}")
                self._where[name] = (file, data_start + begin, end - begin)
                self._infos[name] = TensorInfo(shape, dtype)
            self._check_no_overlap(file, header)

    @staticmethod
    def _check_no_overlap(file: Path, header: dict) -> None:
        """Two tensors whose byte ranges overlap would alias each other's data: refuse, naming both."""
        spans = sorted((tuple(e["data_offsets"]), n) for n, e in header.items() if n != "__metadata__")
        for ((b0, e0), n0), ((b1, e1), n1) in zip(spans, spans[1:]):
            if b1 < e0 and b1 < e1 and b0 < e0:
                raise CheckpointFormatError(
                    f"{file}: tensors {n0!r} (bytes {b0}-{e0}) and {n1!r} (bytes {b1}-{e1}) share data; "
                    "the header is corrupt")

    @staticmethod
    def _read_header(file: Path) -> tuple[dict, int]:
        with open(file, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointFormatError(f"{file} is too short to be a safetensors file")
            n = int.from_bytes(raw, "little")
            if n <= 0 or n > 100_000_000:
                raise CheckpointFormatError(f"{file} is not a safetensors file (header length {n})")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointFormatError(f"{file} is not a safetensors file (bad JSON header)") from err
        return header, 8 + n

    def infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def byte_ranges(self) -> Mapping[str, tuple[Path, int, int]]:
        """Every tensor's (file, offset of its first byte in the file, byte count)."""
        return self._where

    def read(self, name: str) -> np.ndarray:
        file, offset, nbytes = self._where[name]
        info = self._infos[name]
        out = np.empty(info.shape, dtype=_numpy_dtype(info.dtype))
        with open(file, "rb") as f:
            f.seek(offset)
            got = f.readinto(memoryview(out.reshape(-1).view(np.uint8)))
        if got != nbytes:
            raise CheckpointFormatError(f"{file}: truncated data for tensor {name!r}")
        return out

    def close(self) -> None:
        self._where.clear()


_TORCH_NESTING_KEYS = ("ema_state_dict", "state_dict", "model", "gen_model", "module")


def read_ahead(source: TensorSource, names: Iterable[str], depth: int = 4, *, workers: int = 2,
               then: Callable[[np.ndarray], Any] | None = None) -> Iterator[tuple[str, Any]]:
    """Yield ``(name, tensor)`` for ``names`` in order, reading up to ``depth`` tensors ahead in ``workers``
    background threads when the source allows concurrent reads (``concurrent_reads``), so the file reads overlap
    whatever the caller does with each tensor (host-to-device copies, layout programs). ``then(tensor)``, if given,
    runs in the reading thread right after the read and its result is yielded instead (e.g. the host-to-device
    copy, so that copies of several tensors run at once). Host memory holds at most ``depth + 1`` tensors beyond
    what the caller keeps. Other sources, or ``depth=0``, are read (and ``then`` run) one at a time in the caller's
    thread. A failed read raises in the caller when its tensor's turn comes."""
    names = iter(names)

    def fetch(name: str) -> Any:
        value = source.read(name)
        return value if then is None else then(value)

    if depth <= 0 or not getattr(source, "concurrent_reads", False):
        for name in names:
            yield name, fetch(name)
        return
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tensor-read")
    try:
        pending = deque((name, pool.submit(fetch, name)) for name in itertools.islice(names, depth))
        while pending:
            name, future = pending.popleft()
            following = next(names, None)
            if following is not None:
                pending.append((following, pool.submit(fetch, following)))
            yield name, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _unwrap_torch_state(obj: Any) -> dict[str, Any]:
    """Find the flat name -> tensor dict inside a PyTorch checkpoint object."""
    import torch

    def is_flat(d: Any) -> bool:
        return isinstance(d, Mapping) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())

    current = obj
    for _ in range(4):
        if is_flat(current):
            break
        if not isinstance(current, Mapping):
            raise CheckpointFormatError(f"expected a dict of tensors, found {type(current).__name__}")
        for key in _TORCH_NESTING_KEYS:
            if key in current and isinstance(current[key], Mapping) and len(current[key]) > 0:
                current = current[key]
                break
        else:
            # keep only tensors (e.g. training checkpoints with an "epoch" entry next to the weights)
            tensors = {k: v for k, v in current.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise CheckpointFormatError(
                    f"no tensors found; top-level keys are {sorted(map(str, current))[:20]}"
                )
            current = tensors
    if not is_flat(current):
        raise CheckpointFormatError("could not find a flat name -> tensor dict in the PyTorch checkpoint")
    names = list(current)
    if names and all(n.startswith("module.") for n in names):
        current = {n[len("module."):]: v for n, v in current.items()}
    return dict(current)


class TorchSource:
    """A PyTorch pickle checkpoint, loaded lazily with ``weights_only=True`` and ``mmap=True``."""

    def __init__(self, file: Path):
        try:
            import torch
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise CheckpointFormatError(
                f"{file} is a PyTorch pickle; reading it needs torch (pip install 'jax-vdit[torch]'), "
                "or convert it to .safetensors first"
            ) from err
        try:
            obj = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:
            # legacy (non-zip) pickles cannot be memory-mapped
            obj = torch.load(str(file), map_location="cpu", weights_only=True)
        self._tensors = _unwrap_torch_state(obj)
        self._infos = {
            name: TensorInfo(tuple(int(d) for d in t.shape), str(t.dtype).replace("torch.", ""))
            for name, t in self._tensors.items()
        }

    def infos(self) -> Mapping[str, TensorInfo]:
        return self._infos

    def read(self, name: str) -> np.ndarray:
        import ml_dtypes
        import torch

        t = self._tensors[name].detach()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        return t.numpy().copy()

    def close(self) -> None:
        self._tensors.clear()


def _sharded_files(index_file: Path) -> list[Path]:
    try:
        index = json.loads(index_file.read_text())
        weight_map = index["weight_map"]
    except (json.JSONDecodeError, KeyError) as err:
        raise CheckpointFormatError(f"{index_file} is not a safetensors index (needs 'weight_map')") from err
    return [index_file.parent / f for f in sorted(set(weight_map.values()))]


def find_weight_files(folder: Path) -> list[Path]:
    """The weight file(s) of a release folder, in order of preference: a sharded safetensors index,
    ``diffusion_pytorch_model.safetensors``, a single PyTorch pickle, a single other ``.safetensors``."""
    found = sorted(folder.glob("*.safetensors.index.json"))
    if found:
        return _sharded_files(found[0])
    preferred = folder / "diffusion_pytorch_model.safetensors"
    if preferred.is_file():
        return [preferred]
    pickles = sorted(f for suffix in TORCH_SUFFIXES for f in folder.glob(f"*{suffix}"))
    if len(pickles) == 1:
        return pickles
    if len(pickles) > 1:
        raise CheckpointFormatError(f"{folder} holds several PyTorch files: {[f.name for f in pickles]}")
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found
    if len(found) > 1:
        raise CheckpointFormatError(
            f"{folder} holds several .safetensors files and no index: {[f.name for f in found]}"
        )
    raise CheckpointFormatError(
        f"no weights in {folder}: expected diffusion_pytorch_model.safetensors, a *.safetensors.index.json, "
        f"or one of {TORCH_SUFFIXES}"
    )


# functions (files, source) -> source that :func:`open_tensors` applies to every safetensors source it opens
# (:mod:`jax_vdit.io.prefetch` adds its ``claim``, which returns the source unchanged unless it reads those files)
_SAFETENSORS_WRAPPERS: list[Callable[[list[Path], SafetensorsSource], TensorSource]] = []


def add_safetensors_wrapper(wrap: Callable[[list[Path], SafetensorsSource], TensorSource]) -> None:
    """Have :func:`open_tensors` pass each safetensors source it opens through ``wrap`` (once per function)."""
    if wrap not in _SAFETENSORS_WRAPPERS:
        _SAFETENSORS_WRAPPERS.append(wrap)


def open_tensors(path: str | os.PathLike) -> TensorSource:
    """Open a checkpoint file or release folder for streaming reads (safetensors files that
    :func:`jax_vdit.io.prefetch.start_prefetch` is reading are read through that prefetch)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    files = find_weight_files(path) if path.is_dir() else [path]
    first = files[0]
    if first.name.endswith(".safetensors.index.json"):
        files = _sharded_files(first)
        first = files[0]
    if first.suffix == ".safetensors":
        source = SafetensorsSource(files)
        for wrap in _SAFETENSORS_WRAPPERS:  # e.g. reads taken from a prefetch of these files, if one runs
            source = wrap(files, source)
        return source
    if first.suffix in TORCH_SUFFIXES:
        if len(files) != 1:
            raise CheckpointFormatError("sharded PyTorch pickles are not supported; use safetensors shards")
        return TorchSource(first)
    raise CheckpointFormatError(f"unsupported checkpoint file type: {first.name}")
