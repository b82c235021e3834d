"""``jax_vdit.io.load_timing``: per-thread parts of a load, recorded only inside a collection."""

from __future__ import annotations

import threading
import time

import numpy as np

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


def test_the_release_loader_reports_its_parts(tmp_path):
    """Loading a release folder inside a collection names each phase of the load."""
    import jax

    from jax_vdit.config import get_preset
    from jax_vdit.io import load_model
    from jax_vdit.io.release import write_release_folder
    from jax_vdit.model.transformer import OpenSoraT2V
    from flax import nnx

    cfg = get_preset("tiny", num_layers=2)
    model = OpenSoraT2V(cfg, rngs=nnx.Rngs(0))
    folder = write_release_folder(model, tmp_path / "release", dtype="float32")
    with collect_load_timing() as parts:
        loaded = load_model(folder)
    assert {"open", "read_wait", "device_put", "layout", "checks", "build_model"} <= set(parts), parts
    a = jax.tree.leaves(nnx.state(model, nnx.Param))
    b = jax.tree.leaves(nnx.state(loaded, nnx.Param))
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
