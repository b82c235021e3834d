"""Explicit key maps from release (PyTorch) tensor names to Flax NNX parameter paths.

A :class:`KeyMap` lists, for every release tensor name, the NNX state path it fills, the release shape it must
have and the transform from release layout to ours (e.g. ``Linear.weight (out, in)`` -> ``kernel (in, out)``).
Before any tensor is read, :func:`check_keys` compares the map with a checkpoint's listing and raises one
:class:`WeightMismatchError` naming every missing key, unexpected key and shape mismatch together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from jax_vdit.io.integrity import count_non_finite_numpy
from jax_vdit.io.tensors import TensorInfo

StatePath = tuple[str | int, ...]
Transform = Callable[[np.ndarray], np.ndarray]


class WeightMismatchError(ValueError):
    """A checkpoint does not match the model: lists every offending key with expected and found shapes."""


class NonFiniteWeightError(ValueError):
    """A checkpoint tensor holds NaN or Inf."""


def identity(x: np.ndarray) -> np.ndarray:
    return x


def linear_weight(x: np.ndarray) -> np.ndarray:
    """torch ``Linear.weight`` (out, in) -> Flax kernel (in, out)."""
    return x.T


@dataclass(frozen=True)
class TensorRule:
    """Where one release tensor goes: NNX state path, the release shape, and the layout transform."""

    path: StatePath
    source_shape: tuple[int, ...]
    transform: Transform = identity


@dataclass
class KeyMap:
    """Release tensor name -> :class:`TensorRule`, plus names that may be present and are ignored."""

    rules: dict[str, TensorRule] = field(default_factory=dict)
    ignorable_prefixes: tuple[str, ...] = ()

    def add(self, name: str, path: StatePath, shape: tuple[int, ...], transform: Transform = identity) -> None:
        if name in self.rules:
            raise ValueError(f"duplicate release key {name!r} in key map")
        self.rules[name] = TensorRule(tuple(path), tuple(int(s) for s in shape), transform)

    def add_linear(self, name: str, path: StatePath, in_features: int, out_features: int) -> None:
        """A torch ``nn.Linear`` with bias -> an ``nnx.Linear`` at ``path``."""
        self.add(f"{name}.weight", (*path, "kernel"), (out_features, in_features), linear_weight)
        self.add(f"{name}.bias", (*path, "bias"), (out_features,))

    def is_ignorable(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.ignorable_prefixes)


def _fmt(shape: tuple[int, ...] | None) -> str:
    return "x".join(str(s) for s in shape) if shape else "scalar" if shape == () else "-"


def check_keys(key_map: KeyMap, found: Mapping[str, TensorInfo], *, what: str = "checkpoint") -> None:
    """Raise one error listing every missing, unexpected and wrongly shaped tensor (reads no tensor data)."""
    missing = [n for n in key_map.rules if n not in found]
    unexpected = [n for n in found if n not in key_map.rules and not key_map.is_ignorable(n)]
    wrong = [
        (n, key_map.rules[n].source_shape, found[n].shape)
        for n in key_map.rules
        if n in found and tuple(found[n].shape) != key_map.rules[n].source_shape
    ]
    if not (missing or unexpected or wrong):
        return
    lines = [
        f"{what} does not match the model: {len(missing)} missing, {len(unexpected)} unexpected, "
        f"{len(wrong)} with the wrong shape"
    ]
    for n in missing:
        lines.append(f"  missing     {n}: expected {_fmt(key_map.rules[n].source_shape)}")
    for n in unexpected:
        lines.append(f"  unexpected  {n}: found {_fmt(tuple(found[n].shape))}")
    for n, exp, got in wrong:
        lines.append(f"  shape       {n}: expected {_fmt(exp)}, found {_fmt(tuple(got))}")
    raise WeightMismatchError("\n".join(lines))


def check_finite(name: str, array: np.ndarray) -> None:
    """Raise :class:`NonFiniteWeightError` naming the tensor if it has NaN or Inf entries."""
    bad = count_non_finite_numpy(array)
    if bad:
        raise non_finite_error(name, bad)


def non_finite_error(name: str, bad: int) -> NonFiniteWeightError:
    """The error for tensor ``name`` holding ``bad`` NaN or Inf entries."""
    return NonFiniteWeightError(f"tensor {name!r} has {bad} non-finite values (NaN or Inf)")


def check_tree_shapes(expected, found, *, what: str, limit: int = 40) -> None:
    """Compare two pytrees of arrays (or shape-carrying leaves) by path and shape; raise one ValueError listing
    missing, unexpected and wrongly shaped leaves (the first ``limit``) if they differ."""
    import jax

    def shapes(tree):
        return {jax.tree_util.keystr(p): tuple(np.shape(v)) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}

    want, got = shapes(expected), shapes(found)
    lines = [f"  missing     {k}: expected {want[k]}" for k in sorted(set(want) - set(got))]
    lines += [f"  unexpected  {k}: found {got[k]}" for k in sorted(set(got) - set(want))]
    lines += [f"  shape       {k}: expected {want[k]}, found {got[k]}" for k in want if k in got and want[k] != got[k]]
    if lines:
        more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
        raise ValueError(f"{what} does not match its config:\n" + "\n".join(lines[:limit]) + more)


def set_path(tree: dict, path: StatePath, value) -> None:
    """Set ``tree[p0][p1]...`` = value, creating nested dicts as needed."""
    node = tree
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value


class CastRangeError(ValueError):
    """A finite source tensor has values that the target dtype cannot hold (they would become Inf)."""


def cast_range_error(name: str, dtype: np.dtype, peak: float) -> CastRangeError:
    """The error for a finite tensor ``name`` whose largest magnitude ``peak`` does not fit ``dtype``."""
    return CastRangeError(
        f"tensor {name!r} does not fit {np.dtype(dtype).name}: its largest magnitude {peak:.4g} exceeds the "
        f"dtype's maximum {float(np.finfo(dtype).max):.4g}; convert to float32 or bfloat16 instead")
