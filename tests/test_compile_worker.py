"""The VAE's decode stages compiled in separate processes (``jax_vdit.vae.compile_worker``): two workers share the
stages through the executable store, the parent then reads every one without planning or compiling and decodes
the same pixels; a warm store needs no workers; a failed worker is reported and the parent compiles instead."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit import executable_store
from jax_vdit.io.vae_weights import write_vae_folder
from jax_vdit.vae import TilingConfig, clear_compile_cache, compile_worker, decode_latents_to_video
from jax_vdit.vae.warmup import decode_is_stored, precompile_decode

LATENT = (1, 4, 3, 6, 7)
TILES = TilingConfig.sample_script(uniform_tiles=True)  # what the workers use for tiles="uniform"


@pytest.fixture
def store(executable_store_on):
    """JAX's cache folder (holding the executable store, on: tests/conftest.py) that the workers share."""
    return executable_store_on.parent


@pytest.fixture
def vae_dir(micro_vae, tmp_path):
    return write_vae_folder(micro_vae, tmp_path / "vae", dtype="float32")


def test_two_workers_fill_the_store_and_the_parent_reads_every_stage(micro_vae, vae_dir, store):
    from jax_vdit.io import load_vae

    vae = load_vae(vae_dir, dtype=jnp.float32)
    z = jax.random.normal(jax.random.key(3), LATENT)
    assert compile_worker.needed(vae_dir, LATENT, dtype="float32", tiles="uniform")
    reports = compile_worker.wait(compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform",
                                                       cache=str(store), processes=2))
    assert all("error" not in r for r in reports), reports
    assert sum(r["compiled"] for r in reports) == reports[0]["stages"] > 2 and {r["part"] for r in reports} == {
        "0/2", "1/2"}
    for r in reports:  # where each worker's seconds went
        assert len(r["stage_seconds"]) == r["compiled"] and all(s > 0 for s in r["stage_seconds"])
        assert 0 < r["imports_s"] and 0 < r["plan_s"] and r["imports_s"] + r["plan_s"] < r["seconds"]
    assert decode_is_stored(vae, LATENT, tiling=TILES)
    assert not compile_worker.needed(vae_dir, LATENT, dtype="float32", tiles="uniform")  # warm: no workers
    report = precompile_decode(vae, LATENT, tiling=TILES)
    assert report.compiled == 0 and report.loaded == report.stages == reports[0]["stages"] and not report.planned
    frames = decode_latents_to_video(vae, z, tiling=TILES)

    clear_compile_cache()
    jax.config.update("jax_compilation_cache_dir", None)  # the store off: compiled here, for reference
    np.testing.assert_array_equal(frames, decode_latents_to_video(vae, z, tiling=TILES))


def test_a_failed_worker_is_reported_and_the_parent_compiles(vae_dir, store, tmp_path):
    from jax_vdit.io import load_vae

    reports = compile_worker.wait(compile_worker.start(tmp_path / "no_vae", LATENT, dtype="float32",
                                                       tiles="uniform", cache=str(store)))
    assert len(reports) == 1 and "error" in reports[0] and "no_vae" in reports[0]["error"], reports
    report = precompile_decode(load_vae(vae_dir, dtype=jnp.float32), LATENT, tiling=TILES)
    assert report.loaded == 0 and report.compiled == report.stages > 2


def test_bad_arguments_are_refused(vae_dir, store):
    with pytest.raises(ValueError, match="processes"):
        compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform", cache=str(store), processes=0)
    with pytest.raises(ValueError, match="tiles"):
        compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="square", cache=str(store))


def test_a_cancelled_wait_terminates_the_workers(vae_dir, store):
    import threading

    cancel = threading.Event()
    cancel.set()  # e.g. the transformer failed to load: no decode will follow
    workers = compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform", cache=str(store),
                                   processes=2)
    reports = compile_worker.wait(workers, cancel)
    assert all(w.process.returncode not in (None, 0) for w in workers)
    assert all("error" in r for r in reports) and not compile_worker._RUNNING


def test_workers_past_the_time_limit_are_terminated_and_say_so(vae_dir, store, monkeypatch):
    """A compile process that runs past ``$JAX_VDIT_VAE_COMPILE_TIMEOUT`` (here 0.2 s: it is still importing JAX)
    is terminated and its report says why, so that a stuck process cannot hold `vdit sample`; a bad value is refused
    before any process starts."""
    monkeypatch.setenv(compile_worker.TIMEOUT_ENV, "0.2")
    workers = compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform", cache=str(store))
    (report,) = compile_worker.wait(workers)
    assert "did not finish in 0.2 s ($JAX_VDIT_VAE_COMPILE_TIMEOUT), terminated" in report["error"], report
    assert workers[0].process.returncode not in (None, 0) and not compile_worker._RUNNING
    for bad in ("0", "-5", "soon"):
        monkeypatch.setenv(compile_worker.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=compile_worker.TIMEOUT_ENV):
            compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform", cache=str(store))
    assert not compile_worker._RUNNING


def test_a_worker_compiles_from_the_config_alone(vae_dir, store, tmp_path):
    """Compiling needs the weights' shapes, not their values: a worker given a folder with the VAE's config.json
    and no weights compiles every stage, and the parent, with the real weights, reads them all from the store."""
    import shutil

    from jax_vdit.io import load_vae

    config_only = tmp_path / "config_only"
    config_only.mkdir()
    shutil.copy(vae_dir / "config.json", config_only / "config.json")
    reports = compile_worker.wait(compile_worker.start(config_only, LATENT, dtype="float32", tiles="uniform",
                                                       cache=str(store)))
    assert len(reports) == 1 and "error" not in reports[0], reports
    assert reports[0]["compiled"] == reports[0]["stages"] > 2
    report = precompile_decode(load_vae(vae_dir, dtype=jnp.float32), LATENT, tiling=TILES)
    assert report.compiled == 0 and report.loaded == report.stages == reports[0]["stages"], report


def test_the_workers_cpu_priority_can_be_lowered(vae_dir, store, monkeypatch):
    """``$JAX_VDIT_VAE_COMPILE_NICE=N`` starts the workers N steps nicer than this process; a bad value is an error
    naming the variable, before any worker starts."""
    import os
    import threading
    import time

    monkeypatch.setenv(compile_worker.NICE_ENV, "7")
    workers = compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform", cache=str(store), processes=2)
    try:
        mine, want = os.getpriority(os.PRIO_PROCESS, 0), min(os.getpriority(os.PRIO_PROCESS, 0) + 7, 19)
        deadline = time.monotonic() + 30  # nice(1) sets it right after its exec, before the worker's Python starts
        while time.monotonic() < deadline and any(os.getpriority(os.PRIO_PROCESS, w.process.pid) != want
                                                  for w in workers):
            time.sleep(0.01)
        assert [os.getpriority(os.PRIO_PROCESS, w.process.pid) for w in workers] == [want] * 2, mine
    finally:
        cancel = threading.Event()
        cancel.set()
        compile_worker.wait(workers, cancel)
    for bad in ("-3", "20", "low"):
        monkeypatch.setenv(compile_worker.NICE_ENV, bad)
        with pytest.raises(ValueError, match=compile_worker.NICE_ENV):
            compile_worker.start(vae_dir, LATENT, dtype="float32", tiles="uniform", cache=str(store))
    assert not compile_worker._RUNNING


def test_the_workers_inherit_the_xla_flags_without_preallocation():
    """The workers' environment keeps the parent's XLA_FLAGS (part of every stage's key, so both sides agree) and
    turns GPU memory preallocation off (the parent samples on that GPU)."""
    env = compile_worker.worker_environment({"XLA_FLAGS": "--a=1", "OTHER": "x"})
    assert env == {"XLA_FLAGS": "--a=1", "OTHER": "x", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}