"""Shape-only construction of Flax NNX models: build a module's parameter tree without computing any weights.

``nnx.eval_shape(lambda: Model(..., rngs=nnx.Rngs(0)))`` traces every initialiser, and every draw from an
``nnx.Rngs`` stream increments a counter variable inside the trace. Flax checks each such update for a sharding,
and on a tracer that check builds an error message that walks the whole trace so far, so the cost grows with the
square of the model's size: 8.0 s for the release transformer's 32 blocks on a 2-core CPU, against 0.43 s with
:class:`ShapeOnlyRngs` (whose streams return one constant key and count nothing;
``python -m experiments.studies.warm_start_cpu``). Loading a checkpoint
and making random full-size weights both start from such an abstract model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
from flax import nnx

M = TypeVar("M")


class ShapeOnlyRngs:
    """A stand-in for ``nnx.Rngs`` while only shapes are wanted: every stream (``rngs.params()``,
    ``rngs.dropout()``, ``rngs()``...) returns the same constant PRNG key, and nothing is counted.

    Only for :func:`abstract` construction: weights drawn from it are all alike, so never keep them.
    """

    def __call__(self) -> jax.Array:
        return jax.random.key(0)

    def __getattr__(self, stream: str) -> Callable[[], jax.Array]:
        if stream.startswith("__"):  # keep copy/pickle protocols from seeing a stream
            raise AttributeError(stream)
        return self


def abstract(build: Callable[..., M]) -> M:
    """``build(rngs)`` evaluated for shapes only: the module with ``jax.ShapeDtypeStruct`` leaves, nothing
    allocated. ``build`` takes the rngs to pass to the module's constructor."""
    return nnx.eval_shape(lambda: build(ShapeOnlyRngs()))
