"""Where a weight load's seconds go, per thread: the loaders add wall seconds to named parts while a
:func:`collect_load_timing` block of the same thread is open, so ``vdit sample`` can report the transformer's load
as file reads waited for, host-to-device copies, layout programs and so on (the VAE, loading in another thread at
the same time, keeps its own parts). Outside such a block the loaders record nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def collect_load_timing() -> Iterator[dict[str, float]]:
    """A dict that fills with ``part -> wall seconds`` for the loads this thread runs inside the block."""
    parts: dict[str, float] = {}
    outer = getattr(_local, "parts", None)
    _local.parts = parts
    try:
        yield parts
    finally:
        _local.parts = outer


@contextmanager
def timed(part: str) -> Iterator[None]:
    """Add the block's wall seconds to ``part`` of this thread's open collection (if any)."""
    parts = getattr(_local, "parts", None)
    if parts is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        parts[part] = parts.get(part, 0.0) + time.perf_counter() - t0
