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

import hashlib
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
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


_PACKAGE_DIR = str(Path(__file__).resolve().parent)
_pickled: dict[str, bytes] = {}  # abstract modules built or read in this process, by key
_lock = threading.Lock()


def abstract_cached(description: tuple, build: Callable[..., M]) -> M:
    """:func:`abstract` ``(build)``, built once per ``description`` (a ``repr``-stable value naming the module and
    every constructor argument) and kept pickled: in this process, and in the executable store where it is on
    (:mod:`jax_vdit.executable_store`, keyed with the package's source and the jax and flax versions), so a later
    process unpickles it (about 20 ms for the release transformer) instead of tracing its construction (0.5 s on
    an H100's host, 0.8 s on a 2-core CPU). Each call returns a new module: callers may fill it with arrays."""
    import flax

    from jax_vdit import executable_store

    text = repr(("abstract-module", jax.__version__, flax.__version__,
                 executable_store.source_fingerprint(_PACKAGE_DIR), description))
    key = hashlib.sha256(text.encode()).hexdigest()
    with _lock:
        data = _pickled.get(key)
    from_store = data is None
    if from_store:
        data = executable_store.load_object(key)
    if data is not None:
        try:
            module = pickle.loads(data)
        except Exception as err:  # noqa: BLE001 - a bad file costs a build, never a wrong model
            executable_store.note_problem(f"ignored unusable object {key[:16]}: {type(err).__name__}: {err}")
        else:
            if from_store:
                with _lock:
                    _pickled[key] = data
            return module
    module = abstract(build)
    data = pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL)
    with _lock:
        _pickled[key] = data
    executable_store.save_object(key, data)
    return module
