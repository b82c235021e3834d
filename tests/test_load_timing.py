"""``jax_vdit.io.load_timing``: per-thread parts of a load, recorded only inside a collection."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from jax_vdit.io.load_timing import collect_load_timing, timed


def test_parts_add_up_per_thread_and_only_inside_a_collection():
    with timed("outside"):  # no collection open: nothing recorded, nothing raised
        pass
    seen_in_thread: dict = {}

    def other_thread():
        with timed("read_wait"):  # another thread's load does not land in this thread's collection
            time.sleep(0.01)
        with collect_load_timing() as own:
            with timed("device_put"):
                time.sleep(0.01)
        seen_in_thread.update(own)

    with collect_load_timing() as parts:
        for _ in range(2):
            with timed("read_wait"):
                time.sleep(0.02)
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        with collect_load_timing() as inner:  # a nested collection takes the parts while open
            with timed("layout"):
                pass
        with timed("checks"):
            pass
    assert set(parts) == {"read_wait", "checks"} and parts["read_wait"] >= 0.04
    assert set(inner) == {"layout"}
    assert set(seen_in_thread) == {"device_put"} and seen_in_thread["device_put"] >= 0.01
    with timed("after"):
        pass
    assert "after" not in parts


@pytest.mark.parametrize("copies", ["readers", "caller"])
def test_the_release_loader_reports_its_parts_and_copies_in_the_threads_asked_for(tmp_path, monkeypatch, copies):
    """Loading a release folder inside a collection names each phase of the load. By default the reading threads
    make the host-to-device copies ($JAX_VDIT_LOAD_COPIES=caller: the loading thread, one "device_put" per group);
    either way the loaded parameters equal the model's."""
    import jax
    from flax import nnx

    from jax_vdit.config import get_preset
    from jax_vdit.io import load_model
    from jax_vdit.io.release import write_release_folder
    from jax_vdit.model.transformer import OpenSoraT2V

    cfg = get_preset("tiny", num_layers=2)
    model = OpenSoraT2V(cfg, rngs=nnx.Rngs(0))
    folder = write_release_folder(model, tmp_path / "release", dtype="float32")
    monkeypatch.setenv("JAX_VDIT_LOAD_COPIES", copies)
    real_put, copied_by = jax.device_put, set()

    def spy(x, *args, **kwargs):
        if any(isinstance(a, np.ndarray) and a.size > 1 for a in (x if isinstance(x, list) else [x])):
            copied_by.add(threading.current_thread().name.split("_")[0])
        return real_put(x, *args, **kwargs)

    monkeypatch.setattr(jax, "device_put", spy)
    with collect_load_timing() as parts:
        loaded = load_model(folder)
    assert {"open", "read_wait", "layout", "checks", "build_model"} <= set(parts), parts
    if copies == "readers":
        assert copied_by == {"tensor-read"} and "device_put" not in parts
    else:
        assert copied_by == {threading.current_thread().name} and parts["device_put"] > 0
    a = jax.tree.leaves(nnx.state(model, nnx.Param))
    b = jax.tree.leaves(nnx.state(loaded, nnx.Param))
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def test_under_a_default_device_context_the_loading_thread_copies(tmp_path, monkeypatch):
    """``jax.default_device`` holds for its own thread only: under one, the reading threads do not copy."""
    import jax
    from flax import nnx

    from jax_vdit.config import get_preset
    from jax_vdit.io import load_model
    from jax_vdit.io.release import write_release_folder
    from jax_vdit.model.transformer import OpenSoraT2V

    folder = write_release_folder(OpenSoraT2V(get_preset("tiny", num_layers=1), rngs=nnx.Rngs(0)),
                                  tmp_path / "release", dtype="float32")
    with collect_load_timing() as parts, jax.default_device(jax.devices()[-1]):
        loaded = load_model(folder)
    assert parts["device_put"] > 0  # copied by this thread
    leaf = jax.tree.leaves(nnx.state(loaded, nnx.Param))[0]
    assert leaf.devices() == {jax.devices()[-1]}


def test_load_thread_settings_are_checked(monkeypatch):
    from jax_vdit.io.device_layout import LoadThreads

    assert LoadThreads.from_env() == LoadThreads(readers=4, depth=8, copies="readers")
    monkeypatch.setenv("JAX_VDIT_LOAD_READERS", "2")
    assert LoadThreads.from_env() == LoadThreads(readers=2, depth=4, copies="readers")
    for bad in ("0", "two"):
        monkeypatch.setenv("JAX_VDIT_LOAD_READERS", bad)
        with pytest.raises(ValueError, match="JAX_VDIT_LOAD_READERS must be a thread count"):
            LoadThreads.from_env()
    monkeypatch.delenv("JAX_VDIT_LOAD_READERS")
    monkeypatch.setenv("JAX_VDIT_LOAD_COPIES", "gpu")
    with pytest.raises(ValueError, match="JAX_VDIT_LOAD_COPIES must be 'readers' or 'caller'"):
        LoadThreads.from_env()


def test_layout_programs_come_from_the_executable_store_in_a_later_process(tmp_path, monkeypatch):
    """With the store on, the first load compiles and stores each group's layout program; a later process (its
    in-memory table emptied) runs them from the store without tracing or lowering, with the same parameters."""
    import jax
    from flax import nnx

    from jax_vdit import executable_store
    from jax_vdit.config import get_preset
    from jax_vdit.io import device_layout, load_model
    from jax_vdit.io.release import write_release_folder
    from jax_vdit.model.transformer import OpenSoraT2V

    monkeypatch.setattr(executable_store, "store_directory", lambda: tmp_path / "store")
    executable_store.forget_held()
    folder = write_release_folder(OpenSoraT2V(get_preset("tiny", num_layers=3), rngs=nnx.Rngs(0)),
                                  tmp_path / "release", dtype="bfloat16")
    first = load_model(folder, param_dtype="bfloat16")
    assert len(list((tmp_path / "store").glob("*.bin"))) == 2  # "main" and the blocks' shared program
    executable_store.forget_held()  # as in a new process

    class NotTraced:
        def lower(self, *args, **kwargs):
            raise AssertionError("the layout program was lowered again")

        def __call__(self, *args, **kwargs):
            raise AssertionError("the layout program was traced again")

    monkeypatch.setattr(device_layout, "group_to_layout", NotTraced())
    later = load_model(folder, param_dtype="bfloat16")
    a, b = jax.tree.leaves(nnx.state(first)), jax.tree.leaves(nnx.state(later))
    assert len(a) == len(b) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
