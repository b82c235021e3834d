"""Read a checkpoint's tensors into host memory in background threads from the start of a command, before JAX is
imported, so that the file reads overlap the imports and the start of JAX's backend.

`vdit sample` spends about a second importing JAX and flax and starting the GPU client before its loader reads the
first byte of the transformer's 5.5 GB; the reads themselves release Python's lock, so they can run meanwhile::

    early = start_prefetch(find_weight_files(model_dir))   # no JAX import
    import jax                                               # meanwhile the threads read
    source = open_tensors(model_dir)                         # claims the prefetch: reads come from memory

:func:`jax_vdit.io.tensors.open_tensors` of the same files (same paths, sizes and modification times) hands back a
source whose reads take the tensors already read, wait for those being read, and read the rest themselves
(a tensor still queued is taken off the queue and read by the caller at once). Tensors are read in the order a loader asks for them (by name, numbers
compared as numbers) until ``budget`` bytes are held; each is dropped from here when taken, so host memory holds at most the budget
beyond what the loader holds. The threads are daemons: an unclaimed prefetch never delays the process's exit, and
:func:`stop_all` drops what it holds.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jax_vdit.host_memory import host_bytes_available
from jax_vdit.process_clock import seconds_since_process_start
from jax_vdit.io.tensors import SafetensorsSource, TensorInfo, add_safetensors_wrapper

BYTES_ENV = "JAX_VDIT_PREFETCH_BYTES"  # "0": no prefetch; a byte count: the most held at once
THREADS_ENV = "JAX_VDIT_PREFETCH_THREADS"
DEFAULT_THREADS = 4
MAX_DEFAULT_BYTES = 16 << 30  # the default budget's ceiling; a quarter of the host's available memory below that

_QUEUED, _READING, _DONE = "queued", "reading", "done"


def _natural_key(name: str) -> list:
    """``name`` split into text and numbers, for sorting ``a.2`` before ``a.10``."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name)]


def _stat_key(files: list[Path]) -> tuple:
    """What identifies the files read: resolved paths, sizes and modification times."""
    out = []
    for file in files:
        st = Path(file).stat()
        out.append((str(Path(file).resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${name} must be a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise ValueError(f"${name} must be a whole number >= 0, got {text!r}")
    return value


def budget_from_env(environ: dict[str, str] | None = None) -> int:
    """Bytes a prefetch may hold: ``$JAX_VDIT_PREFETCH_BYTES`` if set (0: none), else a quarter of the host's
    available memory, at most 16 GiB (0 where the available memory cannot be read)."""
    environ = os.environ if environ is None else environ
    text = environ.get(BYTES_ENV, "").strip()
    if text:
        return _positive_int(BYTES_ENV, text)
    available = host_bytes_available()
    return 0 if available is None else min(MAX_DEFAULT_BYTES, available // 4)


def threads_from_env(environ: dict[str, str] | None = None) -> int:
    """Reading threads: ``$JAX_VDIT_PREFETCH_THREADS`` (>= 1) if set, else 4."""
    environ = os.environ if environ is None else environ
    text = environ.get(THREADS_ENV, "").strip()
    if not text:
        return DEFAULT_THREADS
    count = _positive_int(THREADS_ENV, text)
    if count < 1:
        raise ValueError(f"${THREADS_ENV} must be a thread count >= 1, got {text!r}")
    return count


@dataclass
class _Slot:
    state: str = _QUEUED
    array: np.ndarray | None = None
    failed: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class Prefetch:
    """Tensors of safetensors ``files`` read by name (numbers as numbers) by ``threads`` daemon threads until ``budget`` bytes
    are queued (``threads=0``: queued, never read; for tests). See the module's docstring."""

    def __init__(self, files: list[Path], budget: int, threads: int = DEFAULT_THREADS):
        self.files = [Path(f) for f in files]
        self.key = _stat_key(self.files)
        self.source = SafetensorsSource(self.files)
        self.started = time.perf_counter()
        since_start = seconds_since_process_start()  # None off Linux
        self.started_s = None if since_start is None else round(since_start, 3)
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._queue: deque[str] = deque()
        self._stopped = False
        self.claimed = False  # a loader reads through it (:func:`claim`)
        self.stats = {"tensors_queued": 0, "bytes_queued": 0, "tensors_read": 0, "bytes_read": 0, "taken": 0,
                      "taken_waiting": 0, "taken_from_queue": 0, "read_s": None}
        queued = 0
        for name, nbytes in self._load_order():
            if queued + nbytes > budget:
                break
            queued += nbytes
            self._slots[name] = _Slot()
            self._queue.append(name)
        self.stats.update(tensors_queued=len(self._queue), bytes_queued=queued)
        self._running = threads if self._queue else 0
        self._threads = [threading.Thread(target=self._work, name=f"weights-prefetch-{i}", daemon=True)
                         for i in range(self._running)]
        for thread in self._threads:
            thread.start()

    def _load_order(self) -> list[tuple[str, int]]:
        """(name, bytes) of every tensor in the order loaders ask for them: by name with numbers compared as
        numbers (``blocks.2`` before ``blocks.10``), which puts a release checkpoint's transformer blocks in
        order after the tensors outside them."""
        where = self.source.byte_ranges()
        return [(n, where[n][2]) for n in sorted(where, key=_natural_key)]

    def infos(self) -> dict[str, TensorInfo]:
        return dict(self.source.infos())

    def _work(self) -> None:
        while True:
            with self._lock:
                if self._stopped or not self._queue:
                    self._running -= 1
                    if self._running == 0:
                        self.stats["read_s"] = round(time.perf_counter() - self.started, 3)
                    return
                name = self._queue.popleft()
                slot = self._slots[name]
                slot.state = _READING
            try:
                array = self.source.read(name)
            except Exception:  # noqa: BLE001 - the caller reads it again and gets the error itself
                array = None
            with self._lock:
                slot.state, slot.array, slot.failed = _DONE, array, array is None
                if array is not None and not self._stopped and name in self._slots:
                    self.stats["tensors_read"] += 1
                    self.stats["bytes_read"] += array.nbytes
                else:
                    slot.array = None  # taken off meanwhile (stopped): not kept
            slot.done.set()

    def take(self, name: str) -> np.ndarray | None:
        """The tensor ``name`` if this prefetch read it (waiting while it is being read), else None: not queued,
        still queued (taken off the queue: the caller reads it now), its read failed, or stopped. Each tensor is
        handed out once."""
        with self._lock:
            slot = self._slots.pop(name, None)
            if slot is None:
                return None
            if slot.state == _QUEUED:
                try:
                    self._queue.remove(name)
                except ValueError:
                    pass
                self.stats["taken_from_queue"] += 1
                return None
            waiting = slot.state == _READING
        slot.done.wait()
        with self._lock:
            array, slot.array = slot.array, None
            if array is not None:
                self.stats["taken"] += 1
                self.stats["taken_waiting"] += int(waiting)
        return array

    def stop(self) -> None:
        """Read nothing more and drop every tensor not taken (a read under way finishes and is dropped)."""
        with self._lock:
            self._stopped = True
            self._queue.clear()
            for slot in self._slots.values():
                slot.array = None
            self._slots.clear()

    def report(self) -> dict:
        """The files, when the prefetch started (seconds after the process started), whether a loader claimed
        it, what was queued, read and taken (counts, bytes; "taken_waiting": taken while being read,
        "taken_from_queue": taken off the queue and read by the loader) and the seconds from the start until the
        threads ended ("read_s", None while they run)."""
        with self._lock:
            return {"files": [str(f) for f in self.files], "started_s": self.started_s, "claimed": self.claimed,
                    **self.stats}


class PrefetchedSource:
    """A :class:`~jax_vdit.io.tensors.SafetensorsSource` whose reads take ``prefetch``'s tensors first."""

    concurrent_reads = True

    def __init__(self, source: SafetensorsSource, prefetch: Prefetch):
        self._source, self.prefetch = source, prefetch

    def infos(self):
        return self._source.infos()

    def read(self, name: str) -> np.ndarray:
        array = self.prefetch.take(name)
        return self._source.read(name) if array is None else array

    def close(self) -> None:
        self.prefetch.stop()
        self._source.close()


_ACTIVE: list[Prefetch] = []
_FINISHED: list[Prefetch] = []  # claimed, not reported yet
_REGISTRY_LOCK = threading.Lock()


def start_prefetch(files: list[Path], *, budget: int | None = None, threads: int | None = None) -> Prefetch | None:
    """Start reading the safetensors ``files`` (one checkpoint) in the background: ``budget`` bytes at most
    (default :func:`budget_from_env`), ``threads`` threads (default :func:`threads_from_env`). None where there
    is nothing to do: a budget of 0, files that are not all ``.safetensors`` or cannot be opened (the loader
    reports those itself), or no tensor within the budget."""
    budget = budget_from_env() if budget is None else budget
    threads = threads_from_env() if threads is None else threads
    files = [Path(f) for f in files]
    if budget <= 0 or not files or any(f.suffix != ".safetensors" for f in files):
        return None
    try:
        prefetch = Prefetch(files, budget, threads)
    except (OSError, ValueError):  # missing or malformed files: the loader names the problem
        return None
    if not prefetch.stats["tensors_queued"]:
        return None
    with _REGISTRY_LOCK:
        _ACTIVE.append(prefetch)
    return prefetch


def claim(files: list[Path], source: SafetensorsSource):
    """``source`` reading through the prefetch of exactly these ``files`` (unchanged since it started), which is
    claimed (one loader per prefetch); ``source`` itself where none matches."""
    with _REGISTRY_LOCK:
        if not _ACTIVE:
            return source
        try:
            key = _stat_key([Path(f) for f in files])
        except OSError:
            return source
        for prefetch in list(_ACTIVE):
            if prefetch.key == key:
                prefetch.claimed = True
                _ACTIVE.remove(prefetch)
                _FINISHED.append(prefetch)
                return PrefetchedSource(source, prefetch)
    return source


def stop_all() -> list[dict]:
    """Stop every prefetch no loader claimed (their memory is freed); returns the report of every prefetch of
    this process not reported yet, claimed or not (each is reported once)."""
    with _REGISTRY_LOCK:
        for prefetch in _ACTIVE:
            prefetch.stop()
        done = _FINISHED + _ACTIVE
        _FINISHED.clear()
        _ACTIVE.clear()
    return [p.report() for p in done]


add_safetensors_wrapper(claim)  # open_tensors of the files a prefetch reads takes its tensors
