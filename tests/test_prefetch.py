"""The weights' prefetch (``jax_vdit.io.prefetch``): tensors read in the background before a loader opens the
files come back identical through ``open_tensors``; the budget, a tensor still queued, a changed file, a stop and
bad settings behave as documented; nothing here imports JAX."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from jax_vdit.io import prefetch
from jax_vdit.io.tensors import SafetensorsSource, open_tensors

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_leftovers():
    prefetch.stop_all()
    yield
    prefetch.stop_all()


def _checkpoint(tmp_path: Path, n: int = 6, shards: int = 1) -> tuple[list[Path], dict[str, np.ndarray]]:
    """``n`` float32 tensors of 4 KiB each, in ``shards`` safetensors files."""
    rng = np.random.default_rng(0)
    tensors = {f"w{i}": rng.standard_normal((32, 32)).astype(np.float32) for i in range(n)}
    files = []
    for s in range(shards):
        part = {k: v for i, (k, v) in enumerate(tensors.items()) if i % shards == s}
        path = tmp_path / f"model-{s}.safetensors"
        save_file(part, str(path))
        files.append(path)
    return files, tensors


def _wait_for(p: prefetch.Prefetch, seconds_key: str) -> None:
    """Until the prefetch reports ``seconds_key`` ("read_s": every read done, "place_s": every copy done)."""
    for _ in range(500):
        if p.report()[seconds_key] is not None:
            return
        time.sleep(0.01)
    raise AssertionError(f"the prefetch did not report {seconds_key}: {p.report()}")


def _wait_read(p: prefetch.Prefetch) -> None:
    _wait_for(p, "read_s")


def test_reads_through_a_finished_prefetch_come_from_memory_and_equal_the_file(tmp_path):
    files, tensors = _checkpoint(tmp_path, shards=2)
    started = prefetch.start_prefetch(files, budget=1 << 30, threads=2)
    assert started is not None
    _wait_read(started)
    assert started.report()["tensors_read"] == len(tensors)
    source = open_tensors(files[0].parent / "model-0.safetensors")  # one shard: not the prefetched pair
    assert isinstance(source, SafetensorsSource)
    source = prefetch.claim(files, SafetensorsSource(files))
    assert isinstance(source, prefetch.PrefetchedSource)
    for name, value in tensors.items():
        np.testing.assert_array_equal(source.read(name), value)
    report = started.report()
    assert report["claimed"] and report["taken"] == len(tensors) and report["taken_from_queue"] == 0, report
    source.close()
    assert prefetch.stop_all() == [dict(report, claimed=True)]


def test_open_tensors_claims_the_prefetch_of_its_file(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    started = prefetch.start_prefetch(files, budget=1 << 30, threads=1)
    _wait_read(started)
    source = open_tensors(files[0])
    assert isinstance(source, prefetch.PrefetchedSource) and source.prefetch is started
    assert isinstance(open_tensors(files[0]), SafetensorsSource)  # claimed once
    np.testing.assert_array_equal(source.read("w3"), tensors["w3"])
    assert started.report()["taken"] == 1


def test_the_budget_bounds_what_is_read_in_the_loaders_order(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    one = tensors["w0"].nbytes
    started = prefetch.start_prefetch(files, budget=2 * one + 1, threads=1)
    _wait_read(started)
    report = started.report()
    assert report["tensors_queued"] == 2 and report["bytes_read"] == 2 * one, report
    assert set(started._slots) == {"w0", "w1"}  # the first two a loader asks for
    source = open_tensors(files[0])
    for name, value in tensors.items():  # every tensor reads right, from memory or from the file
        np.testing.assert_array_equal(source.read(name), value)
    assert started.report()["taken"] == 2
    assert prefetch.start_prefetch(files, budget=one - 1) is None  # not even one tensor fits


def test_blocks_are_read_in_numeric_order_after_the_tensors_outside_them(tmp_path):
    names = ["transformer_blocks.10.w", "transformer_blocks.2.w", "pos_embed.w", "transformer_blocks.1.w", "proj_out"]
    save_file({n: np.zeros(4, np.float32) for n in names}, str(tmp_path / "m.safetensors"))
    queued = prefetch.Prefetch([tmp_path / "m.safetensors"], budget=1 << 30, threads=0)
    assert list(queued._queue) == ["pos_embed.w", "proj_out", "transformer_blocks.1.w", "transformer_blocks.2.w",
                                   "transformer_blocks.10.w"]


def test_a_tensor_still_queued_is_read_by_the_caller(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    started = prefetch.Prefetch(files, budget=1 << 30, threads=0)  # queued, never read
    source = prefetch.PrefetchedSource(SafetensorsSource(files), started)
    np.testing.assert_array_equal(source.read("w1"), tensors["w1"])
    report = started.report()
    assert report["taken_from_queue"] == 1 and report["taken"] == 0 and report["tensors_read"] == 0, report


def test_a_changed_file_is_not_claimed(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    started = prefetch.start_prefetch(files, budget=1 << 30, threads=1)
    _wait_read(started)
    save_file({k: v + 1 for k, v in tensors.items()}, str(files[0]))  # rewritten: new size or time
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    source = open_tensors(files[0])
    assert isinstance(source, SafetensorsSource)
    np.testing.assert_array_equal(source.read("w0"), tensors["w0"] + 1)
    [report] = prefetch.stop_all()
    assert not report["claimed"] and report["taken"] == 0


def test_stop_drops_what_was_not_taken(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    started = prefetch.start_prefetch(files, budget=1 << 30, threads=1)
    _wait_read(started)
    held = [slot for slot in started._slots.values()]
    assert len(held) == len(tensors) and all(slot.array is not None for slot in held)
    prefetch.stop_all()
    assert started.take("w0") is None
    assert all(slot.array is None for slot in held) and not started._slots


class Placed:
    """What a fake ``put`` returns: the array it was given, marked as placed."""

    def __init__(self, array: np.ndarray):
        self.array = array


def _wait_placed(p: prefetch.Prefetch) -> None:
    _wait_for(p, "place_s")


def test_placed_tensors_are_handed_out_as_placed_within_the_budget_and_the_filter(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    started = prefetch.Prefetch(files, budget=1 << 30, threads=1)
    one = tensors["w0"].nbytes
    # placing starts while the reads go on; w2 is not wanted; the budget holds three tensors
    started.place_with(Placed, wanted=lambda a: not np.array_equal(a, tensors["w2"]), budget=3 * one, threads=2)
    _wait_read(started)
    _wait_placed(started)
    report = started.report()
    assert report["tensors_placed"] == 3 and report["bytes_placed"] == 3 * one, report
    source = prefetch.PrefetchedSource(SafetensorsSource(files), started)
    got = {name: source.read(name) for name in tensors}
    assert sorted(n for n, v in got.items() if isinstance(v, Placed)) == ["w0", "w1", "w3"]  # in load order
    for name, value in got.items():
        np.testing.assert_array_equal(value.array if isinstance(value, Placed) else value, tensors[name])
    assert started.report()["taken_placed"] == 3 and started.report()["taken"] == len(tensors)


def test_a_failed_copy_hands_out_the_host_array_and_placing_waits_for_reads(tmp_path):
    files, tensors = _checkpoint(tmp_path)
    started = prefetch.Prefetch(files, budget=1 << 30, threads=0)  # nothing read yet

    def failing_put(array):
        raise RuntimeError("no device")

    started.place_with(failing_put, wanted=lambda a: True, budget=1 << 30, threads=1)
    time.sleep(0.05)
    assert started.report()["place_s"] is None  # waiting for reads that may still come
    source = prefetch.PrefetchedSource(SafetensorsSource(files), started)
    for name, value in tensors.items():  # every one taken off the queue and read here
        np.testing.assert_array_equal(source.read(name), value)
    _wait_placed(started)  # nothing left to read: the placing thread ended
    assert started.report()["tensors_placed"] == 0

    second = prefetch.Prefetch(files, budget=1 << 30, threads=1)
    _wait_read(second)
    second.place_with(failing_put, wanted=lambda a: True, budget=1 << 30, threads=1)
    _wait_placed(second)
    np.testing.assert_array_equal(second.take("w4"), tensors["w4"])
    assert second.report()["taken_placed"] == 0 and second.report()["tensors_placed"] == 0


def test_files_that_are_not_safetensors_or_missing_start_nothing(tmp_path):
    files, _ = _checkpoint(tmp_path)
    assert prefetch.start_prefetch([tmp_path / "model.pt"], budget=1 << 30) is None
    assert prefetch.start_prefetch([tmp_path / "missing.safetensors"], budget=1 << 30) is None
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 4)
    assert prefetch.start_prefetch([tmp_path / "bad.safetensors"], budget=1 << 30) is None
    assert prefetch.start_prefetch(files, budget=0) is None


def test_settings_from_the_environment():
    assert prefetch.budget_from_env({prefetch.BYTES_ENV: "0"}) == 0
    assert prefetch.budget_from_env({prefetch.BYTES_ENV: "123"}) == 123
    default = prefetch.budget_from_env({})
    assert 0 < default <= prefetch.MAX_DEFAULT_BYTES
    with pytest.raises(ValueError, match="JAX_VDIT_PREFETCH_BYTES"):
        prefetch.budget_from_env({prefetch.BYTES_ENV: "2G"})
    with pytest.raises(ValueError, match="JAX_VDIT_PREFETCH_BYTES"):
        prefetch.budget_from_env({prefetch.BYTES_ENV: "-1"})
    assert prefetch.threads_from_env({}) == prefetch.default_threads()
    assert [prefetch.default_threads(n) for n in (1, 2, 4, 8, 16, 64)] == [1, 1, 1, 2, 4, 4]
    assert prefetch.threads_from_env({prefetch.THREADS_ENV: "2"}) == 2
    with pytest.raises(ValueError, match="JAX_VDIT_PREFETCH_THREADS"):
        prefetch.threads_from_env({prefetch.THREADS_ENV: "0"})


def test_the_prefetch_imports_no_jax(tmp_path):
    files, _ = _checkpoint(tmp_path)
    code = ("import sys; from jax_vdit.io import prefetch; "
            f"p = prefetch.start_prefetch([{str(files[0])!r}], budget=1 << 30); "
            "print(p is not None, sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'flax'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True []", proc.stdout
