"""Tensors + string metadata <-> bytes in the safetensors layout (one blob per shard record, or one file).

The layout is the public safetensors one: an 8-byte little-endian header length N, N bytes of JSON header
(``{name: {"dtype", "shape", "data_offsets"}, "__metadata__": {str: str}}``, padded with spaces to a multiple of 8)
and the raw little-endian data; files written here open with any safetensors reader. Both directions are done here:
``safetensors.numpy`` cannot read bfloat16 back into NumPy (we map ``BF16`` to ``ml_dtypes.bfloat16``, which JAX
already depends on), and its writer orders the header's keys differently from call to call, while a shard's
bytes must be a function of its content (names are written sorted).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}

STORAGE_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}
"""Floating storage dtypes a dataset may use, by name."""


class CodecError(ValueError):
    """Bytes that are not a well-formed safetensors blob."""


_NAMES = {dtype: name for name, dtype in _DTYPES.items()}


def encode_tensors(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """``{name: array}`` (+ ``{str: str}`` metadata) -> safetensors bytes; the same input always gives the same
    bytes (tensors in name order, keys sorted)."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    blobs, offset = [], 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        if dtype not in _NAMES:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be stored")
        blob = np.ascontiguousarray(array, dtype=dtype).tobytes()
        header[name] = {"dtype": _NAMES[dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def _parse_header(data: bytes | memoryview | np.ndarray, what: str) -> tuple[dict, int]:
    if len(data) < 8:
        raise CodecError(f"{what}: {len(data)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    if n > len(data) - 8:
        raise CodecError(f"{what}: header length {n} exceeds the {len(data)} bytes available")
    try:
        header = json.loads(bytes(data[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CodecError(f"{what}: header is not JSON ({err})") from err
    if not isinstance(header, dict):
        raise CodecError(f"{what}: header is not a JSON object")
    return header, 8 + n


def _view(buffer, header: dict, start: int, what: str) -> dict[str, np.ndarray]:
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CodecError(f"{what}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        shape = tuple(int(s) for s in info["shape"])
        lo, hi = (int(x) for x in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64))
        if hi - lo != count * dtype.itemsize or start + hi > len(buffer):
            raise CodecError(f"{what}: tensor {name!r} offsets {lo}..{hi} do not fit shape {shape} {dtype}")
        out[name] = np.frombuffer(buffer, dtype=dtype, count=count, offset=start + lo).reshape(shape)
    return out


def decode_tensors(data: bytes, *, what: str = "record") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """safetensors bytes -> (``{name: read-only array view}``, metadata). Raises :class:`CodecError`."""
    header, start = _parse_header(data, what)
    return _view(data, header, start, what), dict(header.get("__metadata__") or {})


def read_tensor_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A ``.safetensors`` file -> (``{name: read-only memory-mapped array}``, metadata), bfloat16 included."""
    path = Path(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    header, start = _parse_header(mm, str(path))
    return _view(mm, header, start, str(path)), dict(header.get("__metadata__") or {})


def cast_for_storage(x: np.ndarray, dtype_name: str, *, what: str) -> np.ndarray:
    """Cast floats to a storage dtype (``float32``/``float16``/``bfloat16``); refuse a cast that overflows."""
    if dtype_name not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {dtype_name!r}; choose from {sorted(STORAGE_DTYPES)}")
    x = np.asarray(x)
    out = x.astype(STORAGE_DTYPES[dtype_name])
    if dtype_name != "float32" and not np.all(np.isfinite(out.astype(np.float32))):
        raise ValueError(f"{what} overflows {dtype_name} (max |x| = {float(np.max(np.abs(x)))}); "
                         "store it as float32 or bfloat16")
    return out
