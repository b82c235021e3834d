"""One function run in its own background thread, as a future (the VAE's load and decode warm-up, the sampler's
early compile)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def in_background(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
    """Start ``fn(*args, **kwargs)`` in a new thread named after ``name``; its future (``.result()`` waits and
    raises what ``fn`` raised). The thread does not keep the caller from going on."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future
