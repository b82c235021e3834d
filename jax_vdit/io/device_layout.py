"""Checkpoint tensors laid out and cast on the device, one parameter group at a time.

The host only reads the file: each group's tensors are copied over together and one jitted program transposes,
casts and checks them all (NumPy's strided transposes and casts of a 2.77B checkpoint took about a minute on two
CPU cores). Groups with the same shapes and layouts (the transformer's blocks) share that program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit.host_arrays import to_device
from jax_vdit.io.key_map import (
    KeyMap,
    TensorRule,
    cast_range_error,
    non_finite_error,
    set_path,
)
from jax_vdit.io.load_timing import timed
from jax_vdit.io.tensors import TensorSource, read_ahead

DEVICE_LAYOUT_DTYPES = tuple(np.dtype(d) for d in ("float32", "float16", jnp.bfloat16))


def place_groups(
    source: TensorSource,
    key_map: KeyMap,
    groups: Mapping[str, Sequence[str]],
    dtype: np.dtype,
    *,
    host_convert: Callable[[str, TensorRule, np.ndarray], np.ndarray],
    to_array: Callable[[np.ndarray], Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Read every tensor of ``groups`` (name lists, in order) once into a nested pure dict at its rule's path.

    Float tensors are laid out on the default device by :func:`group_to_layout`, one call per group. Others, or
    every tensor when ``to_array`` is given, go through ``host_convert(name, rule, raw)`` (which checks them and
    raises its own errors) and are placed by ``to_array`` (default :func:`~jax_vdit.host_arrays.to_device`). The
    device's checks raise at the end, for the first failing tensor in the key map's order: a non-finite source value
    (:class:`~jax_vdit.io.key_map.NonFiniteWeightError`) or a cast that overflows ``dtype``
    (:class:`~jax_vdit.io.key_map.CastRangeError`). Reads run a few tensors ahead of the placing
    (:func:`~jax_vdit.io.tensors.read_ahead`); host memory holds one group and a few tensors beyond what
    ``to_array`` keeps. Wall seconds go to :mod:`~jax_vdit.io.load_timing`'s parts "read_wait" (waiting for the
    file reads), "device_put" (host-to-device copies), "layout" (dispatching the layout programs, tracing them
    the first time), "host_convert" (tensors converted on the host) and "checks" (the device's checks, read back
    at the end: this waits for every copy and layout program to finish).
    """
    place = to_array or to_device
    reads = read_ahead(source, [name for names in groups.values() for name in names])
    tree: dict = {}
    checks: list[tuple[list[str], Any]] = []
    for names in groups.values():
        on_device = []
        for _ in names:
            with timed("read_wait"):
                name, raw = next(reads)
            if to_array is None and raw.dtype in DEVICE_LAYOUT_DTYPES:
                on_device.append((name, raw))
            else:
                with timed("host_convert"):
                    set_path(tree, key_map.rules[name].path, place(host_convert(name, key_map.rules[name], raw)))
        if on_device:
            with timed("device_put"):
                arrays = jax.device_put([raw for _, raw in on_device])
            with timed("layout"):
                outs, check = group_to_layout(tuple(arrays), tuple(key_map.rules[n].transform for n, _ in on_device),
                                              np.dtype(dtype))
            for (name, _), out in zip(on_device, outs):
                set_path(tree, key_map.rules[name].path, out)
            checks.append(([n for n, _ in on_device], check))
        del on_device
        if progress is not None:
            for name in names:
                progress(name)
    with timed("checks"):
        raise_on_failed_checks(checks, np.dtype(dtype), order=list(key_map.rules))
    return tree


@functools.partial(jax.jit, static_argnums=(1, 2))
def group_to_layout(raws: tuple[jax.Array, ...], transforms: tuple, dtype: np.dtype):
    """A group of checkpoint tensors -> our layout and ``dtype``, with what the host path checks, one entry per
    tensor: the number of non-finite source values (int32), whether the cast stayed finite (bool), and the
    largest source magnitude (float32). Sources are cast through float32, as the host path does."""
    outs, bad, cast_ok, peak = [], [], [], []
    for raw, transform in zip(raws, transforms):
        src = raw.astype(jnp.float32)
        out = transform(src).astype(dtype)
        outs.append(out)
        bad.append(jnp.sum(~jnp.isfinite(src)))
        cast_ok.append(jnp.all(jnp.isfinite(out)))
        peak.append(jnp.max(jnp.abs(src)))
    return tuple(outs), (jnp.stack(bad), jnp.stack(cast_ok), jnp.stack(peak))


def raise_on_failed_checks(checks: list[tuple[list[str], Any]], dtype: np.dtype, order: list[str]) -> None:
    """Raise the host path's error for the first tensor in ``order`` whose device checks failed (one transfer of
    all the flags)."""
    if not checks:
        return
    found: dict[str, tuple[int, float]] = {}
    for names, (bad, cast_ok, peak) in zip([n for n, _ in checks], jax.device_get([c for _, c in checks])):
        for i, name in enumerate(names):
            if int(bad[i]) or not bool(cast_ok[i]):
                found[name] = (int(bad[i]), float(peak[i]))
    for name in order:
        if name in found:
            bad, peak = found[name]
            raise non_finite_error(name, bad) if bad else cast_range_error(name, dtype, peak)
