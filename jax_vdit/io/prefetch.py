"""Read a checkpoint's tensors into host memory in background threads from the start of a command, before JAX is
imported, and copy them to the device as soon as JAX's backend is up, so that the file reads and the copies overlap
the imports and the start of the backend.

`vdit sample` spends about a second importing JAX, flax and the model's code and starting the GPU client before
its loader would read the first byte of the transformer's 5.5 GB; reads and host-to-device copies release Python's
lock, so they can run meanwhile::

    early = start_prefetch(find_weight_files(model_dir))   # no JAX import; the threads start reading
    import jax
    jax.devices()                                            # the backend is up (in the CLI: in its own thread)
    early.place_with(jax.device_put, wanted, budget)         # from now on each tensor read is also copied over
    source = open_tensors(model_dir)                         # claims the prefetch: reads come from memory

:func:`jax_vdit.io.tensors.open_tensors` of the same files (same paths, sizes and modification times) hands back a
source whose reads take the tensors already read (as device arrays once placed), wait for those being read or
copied, and read the rest themselves (a tensor still queued is taken off the queue and read by the caller at once).
Tensors are read in the order a loader asks for them (by name, numbers compared as numbers) until ``budget`` bytes
are queued; each is dropped from here when taken, so memory holds at most the budgets beyond what the loader
holds. The threads are daemons: an unclaimed prefetch never delays the process's exit, and :func:`stop_all` drops
what it holds.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jax_vdit.env_values import number_from_env
from jax_vdit.host_memory import host_bytes_available
from jax_vdit.process_clock import seconds_since_process_start
from jax_vdit.io.tensors import SafetensorsSource, TensorInfo, add_safetensors_wrapper

BYTES_ENV = "JAX_VDIT_PREFETCH_BYTES"  # "0": no prefetch; a byte count: the most held at once
THREADS_ENV = "JAX_VDIT_PREFETCH_THREADS"
DEFAULT_THREADS = 4  # the most reading threads by default (:func:`default_threads`), and the placing threads
MAX_DEFAULT_BYTES = 16 << 30  # the default budget's ceiling; a quarter of the host's available memory below that

_QUEUED, _READING, _READ, _PLACING, _GONE = "queued", "reading", "read", "placing", "gone"


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


def budget_from_env(environ: dict[str, str] | None = None) -> int:
    """Bytes a prefetch may hold: ``$JAX_VDIT_PREFETCH_BYTES`` if set (0: none), else a quarter of the host's
    available memory, at most 16 GiB (0 where the available memory cannot be read)."""
    environ = os.environ if environ is None else environ
    if environ.get(BYTES_ENV, "").strip():
        return number_from_env(BYTES_ENV, 0, int, lambda v: v >= 0, "a whole number >= 0", environ)
    available = host_bytes_available()
    return 0 if available is None else min(MAX_DEFAULT_BYTES, available // 4)


def default_threads(cores: int | None = None) -> int:
    """Reading threads for a host of ``cores`` CPU cores (default: this one's): a quarter of them, 1 to 4. The
    threads compete with the imports they overlap: on a 2-core CPU `import jax` took 2.2 s alone, 2.5 s beside one
    reading thread and 3.8 s beside four (experiments/results/first_video/prefetch_import_cpu_2026-12-07/); on an
    H100 host's 16 cores four threads read 5.5 GB before the loader asked for any of it."""
    cores = os.cpu_count() if cores is None else cores
    return max(1, min(DEFAULT_THREADS, (cores or 1) // 4))


def threads_from_env(environ: dict[str, str] | None = None) -> int:
    """Reading threads: ``$JAX_VDIT_PREFETCH_THREADS`` (>= 1) if set, else :func:`default_threads`."""
    return number_from_env(THREADS_ENV, default_threads(), int, lambda v: v >= 1, "a thread count >= 1", environ)


@dataclass
class _Slot:
    nbytes: int
    state: str = _QUEUED  # queued -> reading -> read (-> placing -> read); gone once taken, dropped or failed
    array: Any = None  # the host array once read; a device array once placed
    placed: bool = False
    skip_placing: bool = False  # not wanted on the device, or over the device budget


class Prefetch:
    """Tensors of safetensors ``files`` read in the order loaders ask for them (by name, numbers as numbers) by
    ``threads`` daemon threads until ``budget`` bytes are queued (``threads=0``: queued, never read; for tests);
    :meth:`place_with` then also copies them to a device. See the module's docstring."""

    def __init__(self, files: list[Path], budget: int, threads: int = DEFAULT_THREADS):
        self.files = [Path(f) for f in files]
        self.key = _stat_key(self.files)
        self.source = SafetensorsSource(self.files)
        self.started = time.perf_counter()
        since_start = seconds_since_process_start()  # None off Linux
        self.started_s = None if since_start is None else round(since_start, 3)
        self._cond = threading.Condition()
        self._slots: dict[str, _Slot] = {}  # the tensors not taken yet, in load order
        self._queue: deque[str] = deque()
        self._stopped = False
        self._place: tuple[Callable[[np.ndarray], Any], Callable[[np.ndarray], bool], int] | None = None
        self._placed_bytes = 0
        self.claimed = False  # a loader reads through it (:func:`claim`)
        self.stats: dict[str, Any] = {
            "tensors_queued": 0, "bytes_queued": 0, "tensors_read": 0, "bytes_read": 0, "read_s": None,
            "tensors_placed": 0, "bytes_placed": 0, "place_started_s": None, "place_s": None,
            "taken": 0, "taken_placed": 0, "taken_waiting": 0, "taken_from_queue": 0}
        queued = 0
        for name, nbytes in self._load_order():
            if queued + nbytes > budget:
                break
            queued += nbytes
            self._slots[name] = _Slot(nbytes)
            self._queue.append(name)
        self.stats.update(tensors_queued=len(self._queue), bytes_queued=queued)
        self._readers = threads if self._queue else 0
        self._placers = 0
        for i in range(self._readers):
            threading.Thread(target=self._read_work, name=f"weights-prefetch-{i}", daemon=True).start()

    def _load_order(self) -> list[tuple[str, int]]:
        """(name, bytes) of every tensor in the order loaders ask for them: by name with numbers compared as
        numbers (``blocks.2`` before ``blocks.10``), which puts a release checkpoint's transformer blocks in
        order after the tensors outside them."""
        where = self.source.byte_ranges()
        return [(n, where[n][2]) for n in sorted(where, key=_natural_key)]

    def infos(self) -> dict[str, TensorInfo]:
        return dict(self.source.infos())

    def _read_work(self) -> None:
        while True:
            with self._cond:
                if self._stopped or not self._queue:
                    self._readers -= 1
                    if self._readers == 0:
                        self.stats["read_s"] = round(time.perf_counter() - self.started, 3)
                        self._cond.notify_all()  # placing threads waiting for reads can end
                    return
                name = self._queue.popleft()
                slot = self._slots[name]
                slot.state = _READING
            try:
                array = self.source.read(name)
            except Exception:  # noqa: BLE001 - the caller reads it again and gets the error itself
                array = None
            with self._cond:
                if array is None or self._stopped:
                    slot.state, slot.array = _GONE, None
                else:
                    slot.state, slot.array = _READ, array
                    self.stats["tensors_read"] += 1
                    self.stats["bytes_read"] += array.nbytes
                self._cond.notify_all()

    def place_with(self, put: Callable[[np.ndarray], Any], wanted: Callable[[np.ndarray], bool], budget: int,
                   threads: int = DEFAULT_THREADS) -> None:
        """From now on also copy each tensor read (and not taken yet) for which ``wanted(array)`` holds with
        ``put(array)`` (e.g. ``jax.device_put``) in ``threads`` daemon threads, in load order, until ``budget``
        bytes are placed; :meth:`take` then hands out the placed array. A failed ``put`` keeps the host array."""
        since_start = seconds_since_process_start()
        with self._cond:
            if self._stopped or self._place is not None:
                return
            self._place = (put, wanted, budget)
            self._place_started = time.perf_counter()
            self.stats["place_started_s"] = None if since_start is None else round(since_start, 3)
            self._placers = threads
        for i in range(threads):
            threading.Thread(target=self._place_work, name=f"weights-place-{i}", daemon=True).start()

    def _next_to_place(self) -> tuple[str, _Slot] | None:
        """(name, slot) of the first read tensor to place now, marked as being placed; None if none is ready."""
        put, wanted, budget = self._place
        for name, slot in self._slots.items():
            if slot.state != _READ or slot.placed or slot.skip_placing:
                continue
            if not wanted(slot.array) or self._placed_bytes + slot.nbytes > budget:
                slot.skip_placing = True
                continue
            slot.state = _PLACING
            self._placed_bytes += slot.nbytes
            return name, slot
        return None

    def _place_work(self) -> None:
        put = self._place[0]
        while True:
            with self._cond:
                while True:
                    found = None if self._stopped else self._next_to_place()
                    if found is not None:
                        break
                    more_reads = any(s.state in (_QUEUED, _READING) for s in self._slots.values())
                    if self._stopped or not more_reads:
                        self._placers -= 1
                        if self._placers == 0:
                            self.stats["place_s"] = round(time.perf_counter() - self._place_started, 3)
                        return
                    self._cond.wait()
                name, slot = found
                host = slot.array
            try:
                placed = put(host)
            except Exception:  # noqa: BLE001 - the host array is handed out instead
                placed = None
            with self._cond:
                if self._stopped:  # dropped meanwhile: keep nothing
                    slot.state, slot.array = _GONE, None
                elif slot.state == _PLACING:
                    slot.state = _READ
                    if placed is not None:
                        slot.array, slot.placed = placed, True
                        self.stats["tensors_placed"] += 1
                        self.stats["bytes_placed"] += slot.nbytes
                    else:
                        slot.skip_placing = True
                self._cond.notify_all()

    def take(self, name: str) -> Any:
        """The tensor ``name`` if this prefetch read it (waiting while it is being read or placed): the host array,
        or the device array :meth:`place_with` made of it; else None: not queued, still queued (taken off the
        queue: the caller reads it now), its read failed, or stopped. Each tensor is handed out once."""
        with self._cond:
            slot = self._slots.pop(name, None)
            if slot is None:
                return None
            if slot.state == _QUEUED:
                self._queue.remove(name)
                self.stats["taken_from_queue"] += 1
                slot.state = _GONE
                self._cond.notify_all()  # placing threads may end once nothing is left to read
                return None
            waiting = slot.state in (_READING, _PLACING)
            self._cond.wait_for(lambda: slot.state not in (_READING, _PLACING))
            array, slot.array = slot.array, None
            if array is not None:
                self.stats["taken"] += 1
                self.stats["taken_placed"] += int(slot.placed)
                self.stats["taken_waiting"] += int(waiting)
            slot.state = _GONE
            self._cond.notify_all()  # placing threads may end once nothing is left
            return array

    def stop(self) -> None:
        """Read and place nothing more and drop every tensor not taken (a read or copy under way finishes and its
        result is dropped)."""
        with self._cond:
            self._stopped = True
            self._queue.clear()
            for slot in self._slots.values():
                if slot.state != _PLACING:
                    slot.state = _GONE
                slot.array = None
            self._slots.clear()
            self._cond.notify_all()

    def report(self) -> dict:
        """The files, when the prefetch started (seconds after the process started), whether a loader claimed
        it, what was queued, read, placed on the device and taken (counts, bytes; "taken_placed": handed out as
        device arrays, "taken_waiting": while being read or placed, "taken_from_queue": not read yet, so read by
        the loader), the seconds from the start until the reading threads ended ("read_s") and from
        :meth:`place_with` until the placing threads ended ("place_s"; None while they run or without it)."""
        with self._cond:
            return {"files": [str(f) for f in self.files], "started_s": self.started_s, "claimed": self.claimed,
                    **self.stats}


class PrefetchedSource:
    """A :class:`~jax_vdit.io.tensors.SafetensorsSource` whose reads take ``prefetch``'s tensors first: a NumPy
    array, or, for a tensor the prefetch copied to the device (:meth:`Prefetch.place_with`), the device array of
    the same values (loaders that copy tensors to the device take it as it is)."""

    concurrent_reads = True

    def __init__(self, source: SafetensorsSource, prefetch: Prefetch):
        self._source, self.prefetch = source, prefetch

    def infos(self):
        return self._source.infos()

    def read(self, name: str) -> Any:
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


def place_all_with(put: Callable[[np.ndarray], Any], wanted: Callable[[np.ndarray], bool], budget: int) -> int:
    """:meth:`Prefetch.place_with` for every prefetch running now (claimed or not: a loader may be reading through
    it); returns how many."""
    with _REGISTRY_LOCK:
        running = [p for p in _ACTIVE + _FINISHED if not p._stopped]
    for prefetch in running:
        prefetch.place_with(put, wanted, budget)
    return len(running)


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
