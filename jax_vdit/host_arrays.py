"""Host values onto the device without compiling anything.

``jnp.asarray(numpy_array)`` runs a small ``stage`` program in recent JAX releases, compiled once per shape and
dtype (and, with the persistent cache on, traced, lowered and looked up again in every new process);
``jax.device_put`` copies the bytes without a program. Loading the release VAE tensor by tensor through
``jnp.asarray`` built 26 such programs (one per distinct weight shape), and a sampling call a few more (text,
plan arrays, step range). Use :func:`to_device` for every eager host -> device copy on the path to a video.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def to_device(value: Any, dtype: Any = None) -> jax.Array:
    """``value`` (a NumPy array, a Python or NumPy scalar, a nested list, or a ``jax.Array``) as a ``jax.Array`` on
    the default device, in ``dtype`` if given (else NumPy's dtype, canonicalised as JAX does: float64 -> float32
    without x64). A ``jax.Array`` stays where it is (cast on the device when ``dtype`` differs). Compiles no
    program for host values."""
    if isinstance(value, jax.Array):
        return value if dtype is None or value.dtype == np.dtype(dtype) else value.astype(dtype)
    return jax.device_put(np.asarray(value, dtype=dtype))
