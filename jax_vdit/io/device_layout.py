"""Checkpoint tensors laid out and cast on the device, one parameter group at a time.

The host only reads the file: each group's tensors are copied over together and one jitted program transposes,
casts and checks them all (NumPy's strided transposes and casts of a 2.77B checkpoint took about a minute on two
CPU cores). Groups with the same shapes and layouts (the transformer's blocks) share that program.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
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

# how a load spreads its work over threads (measured in experiments/results/first_video/; change only to compare):
LOAD_READERS_ENV = "JAX_VDIT_LOAD_READERS"  # threads that read the file (default 4)
LOAD_COPIES_ENV = "JAX_VDIT_LOAD_COPIES"  # "readers" (default): each reading thread copies its tensor to the
# device right after reading it, so several copies run at once; "caller": the loading thread copies each group


@dataclass(frozen=True)
class LoadThreads:
    """Threads of a weight load: ``readers`` read the file ``depth`` tensors ahead of the loading thread;
    ``copies`` says which threads make the host-to-device copies ("readers" or "caller")."""

    readers: int = 4
    depth: int = 8
    copies: str = "readers"

    @classmethod
    def from_env(cls) -> LoadThreads:
        """The defaults, or what ``$JAX_VDIT_LOAD_READERS`` / ``$JAX_VDIT_LOAD_COPIES`` set (clear errors)."""
        readers, copies = os.environ.get(LOAD_READERS_ENV, ""), os.environ.get(LOAD_COPIES_ENV, "")
        out = cls()
        if readers:
            try:
                count = int(readers)
            except ValueError:
                count = 0
            if count < 1:
                raise ValueError(f"${LOAD_READERS_ENV} must be a thread count >= 1, got {readers!r}")
            out = replace(out, readers=count, depth=2 * count)
        if copies:
            if copies not in ("readers", "caller"):
                raise ValueError(f"${LOAD_COPIES_ENV} must be 'readers' or 'caller', got {copies!r}")
            out = replace(out, copies=copies)
        return out


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
    ``to_array`` keeps. The reading threads also copy each float tensor to the device (:class:`LoadThreads`:
    ``$JAX_VDIT_LOAD_COPIES=caller`` makes this thread copy each group instead). Wall seconds go to
    :mod:`~jax_vdit.io.load_timing`'s parts "read_wait" (waiting for the file reads, and the readers' copies),
    "device_put" (copies made by this thread), "layout" (dispatching the layout programs, tracing them the
    first time), "host_convert" (tensors converted on the host) and "checks" (the device's checks, read back
    at the end: this waits for every copy and layout program to finish).
    """
    place = to_array or to_device
    threads = LoadThreads.from_env()
    # the readers copy to JAX's default device, uncommitted as this thread's copies would be; a
    # ``jax.default_device`` context holds for its own thread only, so under one this thread copies
    copy_in_readers = to_array is None and threads.copies == "readers" and jax.config.jax_default_device is None

    def then(raw: np.ndarray):
        return jax.device_put(raw) if raw.dtype in DEVICE_LAYOUT_DTYPES else raw

    reads = read_ahead(source, [name for names in groups.values() for name in names], threads.depth,
                       workers=threads.readers, then=then if copy_in_readers else None)
    tree: dict = {}
    checks: list[tuple[list[str], Any]] = []
    for names in groups.values():
        on_device, on_host = [], []  # (name, device array) copied by a reader; (name, host array) to copy here
        for _ in names:
            with timed("read_wait"):  # with copies in the readers: the read and the copy
                name, raw = next(reads)
            if isinstance(raw, jax.Array):
                on_device.append((name, raw))
            elif to_array is None and raw.dtype in DEVICE_LAYOUT_DTYPES:
                on_host.append((name, raw))
            else:
                with timed("host_convert"):
                    set_path(tree, key_map.rules[name].path, place(host_convert(name, key_map.rules[name], raw)))
        if on_host:
            with timed("device_put"):
                on_device += zip([n for n, _ in on_host], jax.device_put([raw for _, raw in on_host]))
        if on_device:
            order = {name: i for i, name in enumerate(names)}
            on_device.sort(key=lambda item: order[item[0]])  # the key map's order, whoever copied each tensor
            with timed("layout"):
                outs, check = lay_out(tuple(a for _, a in on_device),
                                      tuple(key_map.rules[n].transform for n, _ in on_device), np.dtype(dtype))
            for (name, _), out in zip(on_device, outs):
                set_path(tree, key_map.rules[name].path, out)
            checks.append(([n for n, _ in on_device], check))
        del on_device, on_host
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


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])


def _transform_id(transform: Callable) -> tuple:
    """What identifies a layout transform across processes: its module and qualified name, and the values it
    closes over (the code itself is covered by the store key's source fingerprint)."""
    cells = tuple(repr(c.cell_contents) for c in (getattr(transform, "__closure__", None) or ()))
    return (getattr(transform, "__module__", "?"), getattr(transform, "__qualname__", repr(transform)), cells)


def lay_out(raws: tuple[jax.Array, ...], transforms: tuple, dtype: np.dtype):
    """:func:`group_to_layout`, with its executable from the executable store where that is on, so a warm process
    neither traces nor lowers the layout programs (0.5-0.7 s for the release transformer's two on an H100's host);
    compiled and stored there the first time. With the store off, the jitted function."""
    from jax_vdit import executable_store

    if executable_store.store_directory() is None:
        return group_to_layout(raws, transforms, dtype)
    description = ("group_to_layout", tuple((tuple(r.shape), str(r.dtype)) for r in raws),
                   tuple(_transform_id(t) for t in transforms), str(np.dtype(dtype)))
    key = executable_store.store_key(description, _PACKAGE_DIR)
    held = executable_store.load_or_compile(key, lambda: group_to_layout.lower(raws, transforms, dtype),
                                            kind="layout")
    return held.executable(raws)


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
