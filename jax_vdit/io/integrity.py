"""Integrity records of the arrays we write: shape, dtype, finiteness and a 32-bit checksum per array.

Every checkpoint jax-vdit writes (model checkpoints, converter outputs, train states) stores one
:class:`ArrayRecord` per array; loading recomputes them and raises :class:`CheckpointIntegrityError` naming the
first array that differs, so a flipped byte, a truncated file or a NaN written into stored data never loads
silently.

The checksum is a position-weighted sum of the array's bit patterns read as unsigned words (uint32 for 4-byte
dtypes, uint16 for 2-byte, uint8 for 1-byte), ``sum_i w_i * (2 i + 1) mod 2**32``. Every weight is odd, so any
single flipped bit changes it; random corruption goes unnoticed with probability 2**-32. The NumPy
(:func:`checksum_numpy`) and JAX (:func:`checksums_jax`, on device, jitted, works on sharded arrays) versions
give identical numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_CHUNK = 1 << 22  # elements per NumPy chunk (bounds temporaries to ~32 MB)
_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32}


class CheckpointIntegrityError(ValueError):
    """A stored checkpoint is unreadable, incomplete, or its data differs from what was written."""


class NonFiniteStateError(FloatingPointError):
    """Parameters, EMAs or optimiser state hold NaN or Inf; the message names the arrays."""


@dataclass(frozen=True)
class ArrayRecord:
    """What was written for one array: shape, dtype name, whether every entry was finite, checksum."""

    shape: tuple[int, ...]
    dtype: str
    finite: bool
    checksum: int

    def to_json(self) -> dict:
        return dict(asdict(self), shape=list(self.shape))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ArrayRecord:
        try:
            return cls(tuple(int(s) for s in d["shape"]), str(d["dtype"]), bool(d["finite"]), int(d["checksum"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointIntegrityError(f"malformed integrity record {d!r}") from err


def _words_numpy(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a).reshape(-1)
    if a.dtype == np.bool_:
        return a.view(np.uint8)
    word = _WORDS.get(a.dtype.itemsize)
    if word is None:
        raise TypeError(f"no checksum for dtype {a.dtype} (itemsize {a.dtype.itemsize})")
    return a.view(word)


def checksum_numpy(a: Any) -> int:
    """The 32-bit checksum of a host array (any shape; 1-, 2- or 4-byte dtype)."""
    words = _words_numpy(np.asarray(a))
    total = np.uint32(0)
    with np.errstate(over="ignore"):
        for start in range(0, words.size, _CHUNK):
            w = words[start:start + _CHUNK].astype(np.uint32)
            odd = np.arange(start, start + w.size, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
            total = np.uint32(total + np.sum(w * odd, dtype=np.uint32))
    return int(total)


def _is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind == "f" or np.dtype(dtype).name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


_EXPONENT_MASKS = {"bfloat16": 0x7F80, "float16": 0x7C00}


_COUNT_CHUNK = 1 << 18  # elements per pass: the temporaries stay in the CPU's cache


def count_non_finite_numpy(a: Any) -> int:
    """The number of NaN and Inf entries of a host array (0 for integer and bool arrays). 16-bit floats are
    tested on their bits (NaN and Inf are the values whose exponent bits are all ones), without a float32 copy.
    Large arrays are counted in chunks of :data:`_COUNT_CHUNK` elements, so that no temporary as large as the
    array is made (the temporaries of one pass over a whole array made the check several times slower)."""
    a = np.asarray(a)
    if not _is_float(a.dtype):
        return 0
    flat = np.ascontiguousarray(a).reshape(-1)
    mask = _EXPONENT_MASKS.get(np.dtype(a.dtype).name)
    if mask is not None:
        bits, m = flat.view(np.uint16), np.uint16(mask)
        scratch = np.empty(min(bits.size, _COUNT_CHUNK), np.uint16)
        total = 0
        for start in range(0, bits.size, _COUNT_CHUNK):
            part = bits[start:start + _COUNT_CHUNK]
            masked = np.bitwise_and(part, m, out=scratch[:part.size])
            total += int(np.count_nonzero(masked == m))
        return total
    total = 0
    for start in range(0, flat.size, _COUNT_CHUNK):
        part = flat[start:start + _COUNT_CHUNK]
        values = part if part.dtype.itemsize >= 4 else part.astype(np.float32)
        total += int(values.size - np.count_nonzero(np.isfinite(values)))
    return total


def finite_numpy(a: Any) -> bool:
    """True when a host array has no NaN or Inf (always True for integer and bool arrays)."""
    return count_non_finite_numpy(a) == 0


def record_numpy(a: Any) -> ArrayRecord:
    """The :class:`ArrayRecord` of a host array."""
    a = np.asarray(a)
    return ArrayRecord(tuple(int(s) for s in a.shape), np.dtype(a.dtype).name, finite_numpy(a), checksum_numpy(a))


def _device_summary(x):
    """(checksum uint32, finite bool) of one jax array, computed on its device(s)."""
    import jax
    import jax.numpy as jnp

    flat = x.reshape(-1)
    if flat.dtype == jnp.bool_:
        words = flat.astype(jnp.uint32)
    else:
        word = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[flat.dtype.itemsize]
        words = jax.lax.bitcast_convert_type(flat, word).astype(jnp.uint32)
    odd = jnp.arange(words.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    total = jnp.sum(words * odd, dtype=jnp.uint32)
    finite = jnp.all(jnp.isfinite(flat)) if jnp.issubdtype(flat.dtype, jnp.floating) else jnp.array(True)
    return total, finite


_summaries = None


def checksums_jax(leaves: Mapping[str, Any]) -> dict[str, ArrayRecord]:
    """:class:`ArrayRecord` of every array in ``leaves`` (name -> jax or NumPy array), computed on device in one
    jitted call (only the 8-byte summaries travel to the host)."""
    import jax

    global _summaries
    if _summaries is None:
        _summaries = jax.jit(lambda tree: jax.tree.map(_device_summary, tree))
    names = sorted(leaves)
    sums = jax.device_get(_summaries({n: leaves[n] for n in names}))
    out = {}
    for n in names:
        a = leaves[n]
        out[n] = ArrayRecord(tuple(int(s) for s in a.shape), np.dtype(a.dtype).name, bool(sums[n][1]), int(sums[n][0]))
    return out


def verify(expected: Mapping[str, ArrayRecord], found: Mapping[str, ArrayRecord], *, what: str) -> None:
    """Raise :class:`CheckpointIntegrityError` naming every array whose record differs (missing arrays included)."""
    problems = []
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            problems.append(f"{name}: missing")
        elif name not in expected:
            problems.append(f"{name}: not in the integrity record")
        else:
            e, f = expected[name], found[name]
            if e.shape != f.shape or e.dtype != f.dtype:
                problems.append(f"{name}: written as {e.dtype}{list(e.shape)}, read as {f.dtype}{list(f.shape)}")
            elif e.checksum != f.checksum:
                problems.append(f"{name}: checksum {f.checksum:#010x} != written {e.checksum:#010x} (data changed)")
            elif e.finite != f.finite:
                problems.append(f"{name}: finiteness changed (written finite={e.finite})")
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise CheckpointIntegrityError(f"{what} is corrupted: " + "; ".join(problems[:8]) + more)


def non_finite_names(records: Mapping[str, ArrayRecord]) -> list[str]:
    return sorted(n for n, r in records.items() if not r.finite)


def text_digest(text: str | bytes) -> str:
    """sha256 hex digest of a small metadata file's content."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()
