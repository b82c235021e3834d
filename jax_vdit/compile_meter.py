"""How long JAX spent compiling, measured from its own monitoring events rather than guessed from wall clocks.

JAX reports, for every program it builds, the seconds spent tracing to a jaxpr, lowering to MLIR and compiling in
the backend (``/jax/core/compile/*_duration``), and each persistent-cache hit or miss
(``/jax/compilation_cache/cache_hits|cache_misses``). :class:`CompileMeter` adds up the events raised in its
``with`` block by the threads it watches::

    with CompileMeter() as meter:
        pipe.warm_up(job)
    meter.compile_s, meter.cache_hits, meter.cache_misses, meter.programs

A warm persistent cache shows as ``cache_misses == 0`` and a ``backend_s`` near zero (a cache read is not a
backend compile).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import jax

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND = "/jax/core/compile/backend_compile_duration"
HITS = "/jax/compilation_cache/cache_hits"
MISSES = "/jax/compilation_cache/cache_misses"

_LOCK = threading.Lock()
_ACTIVE: list[CompileMeter] = []
_INSTALLED = False


def _on_duration(name: str, seconds: float, **_: object) -> None:
    if not _ACTIVE:
        return
    ident = threading.get_ident()
    with _LOCK:
        for meter in _ACTIVE:
            meter._add_duration(name, float(seconds), ident)


def _on_event(name: str, **_: object) -> None:
    if not _ACTIVE:
        return
    ident = threading.get_ident()
    with _LOCK:
        for meter in _ACTIVE:
            meter._add_event(name, ident)


def _install() -> None:
    global _INSTALLED
    with _LOCK:
        if not _INSTALLED:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            jax.monitoring.register_event_listener(_on_event)
            _INSTALLED = True


@dataclass
class CompileMeter:
    """Seconds of tracing, lowering and backend compilation, programs built, and persistent-cache hits/misses
    between ``__enter__`` and ``__exit__``; ``all_threads=False`` (default) counts only the entering thread's
    compilations (a background VAE warm-up is then not mixed into the sampler's figure)."""

    all_threads: bool = False
    trace_s: float = 0.0
    lower_s: float = 0.0
    backend_s: float = 0.0
    programs: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    _thread: int | None = field(default=None, repr=False)

    @property
    def compile_s(self) -> float:
        """Tracing + lowering + backend compilation (a persistent-cache read counts as a short backend step)."""
        return self.trace_s + self.lower_s + self.backend_s

    def _watches(self, ident: int) -> bool:
        return self.all_threads or ident == self._thread

    def _add_duration(self, name: str, seconds: float, ident: int) -> None:
        if not self._watches(ident):
            return
        if name == TRACE:
            self.trace_s += seconds
        elif name == LOWER:
            self.lower_s += seconds
        elif name == BACKEND:
            self.backend_s += seconds
            self.programs += 1

    def _add_event(self, name: str, ident: int) -> None:
        if self._watches(ident):
            if name == HITS:
                self.cache_hits += 1
            elif name == MISSES:
                self.cache_misses += 1

    def __enter__(self) -> CompileMeter:
        _install()
        self._thread = threading.get_ident()
        with _LOCK:
            _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        with _LOCK:
            _ACTIVE.remove(self)

    def report(self) -> dict:
        """Rounded figures for a JSON report."""
        return {"compile_s": round(self.compile_s, 3), "trace_s": round(self.trace_s, 3),
                "lower_s": round(self.lower_s, 3), "backend_compile_s": round(self.backend_s, 3),
                "programs": self.programs, "cache_hits": self.cache_hits, "cache_misses": self.cache_misses}
