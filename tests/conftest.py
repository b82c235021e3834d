"""Shared test fixtures: paths to golden data, platform checks."""

from __future__ import annotations

import os
from pathlib import Path

# The executable store (jax_vdit.executable_store) follows JAX's persistent cache, which is on for the whole run
# (suite_compilation_cache below): keep the store off unless a test turns it on, so that compile counts mean what the
# tests say.
os.environ["JAX_VDIT_EXECUTABLE_STORE"] = "0"
# and commands that turn JAX's persistent cache on by default (vdit sample, prepare-data, distill) leave the run's
# cache as it is unless a test passes --compile-cache: nothing is written to the user's ~/.cache
os.environ["JAX_VDIT_COMPILE_CACHE"] = ""
# The suite's time is mostly XLA:CPU compiling many small programs. LLVM at -O0 without its expensive passes compiles
# them much faster (the whole suite on 2 cores: 1,303 s -> 738 s); XLA's HLO passes (fusion, the order of
# reductions) are unchanged, float32 results may differ in the last bits (no FMA contraction), within every test's
# tolerance. Subprocesses inherit the flags; a user's own XLA_FLAGS come first.
FAST_CPU_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if FAST_CPU_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_CPU_COMPILE}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

DATA_DIR = Path(__file__).parent / "data"
GOLDEN_DIR = DATA_DIR / "golden"


@pytest.fixture(scope="session", autouse=True)
def suite_compilation_cache(tmp_path_factory) -> Path:
    """One JAX persistent compilation cache for the whole run, shared by both pytest-xdist workers and every
    subprocess they start: many tests compile the same program again (an uninterrupted run, a killed one and its
    resume; the same tiny model's step in a worker and in its test), and XLA:CPU takes seconds for each. Programs
    that compile in under a second are not kept (JAX's default). It lives in pytest's temporary folder of this run
    (pytest keeps the last three). Tests that need a cache of their own set and restore theirs."""
    from jax._src import compilation_cache  # reset_cache: no public way to re-point JAX's cache at a new folder

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "xla-cache"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)  # subprocesses
    jax.config.update("jax_compilation_cache_dir", str(folder))
    compilation_cache.reset_cache()
    return folder


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden reference files (copied verbatim from ../shared/golden)."""
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def micro_vae():
    """A random float32 ``VAEConfig.micro()`` VAE (seed 0): every decoder stage kind at the smallest size."""
    import jax.numpy as jnp

    from jax_vdit.vae import VAEConfig, random_vae

    return random_vae(VAEConfig.micro(), seed=0, dtype=jnp.float32)


@pytest.fixture
def fresh_vae_stage_cache():
    """An empty VAE stage cache before and after the test, so that its compile counts are its own."""
    from jax_vdit.vae import clear_compile_cache

    clear_compile_cache()
    yield
    clear_compile_cache()


@pytest.fixture
def executable_store_on(tmp_path, monkeypatch):
    """The executable store on (as for a user of `vdit sample`) inside a fresh JAX persistent-cache folder, with an
    empty VAE stage cache and no executables held by this process; yields the store's folder. JAX's cache setting
    is restored after."""
    from jax._src import compilation_cache  # reset_cache: no public way to re-point JAX's cache at a new folder

    from jax_vdit import executable_store
    from jax_vdit.vae import clear_compile_cache

    previous = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv(executable_store.ENV_SWITCH, "1")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "cache"))
    compilation_cache.reset_cache()  # JAX's cache keeps the first folder it opened otherwise
    clear_compile_cache()  # also forgets this process's executables (executable_store.forget_held)
    yield tmp_path / "cache" / executable_store.SUBDIR
    clear_compile_cache()
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


def has_gpu() -> bool:
    try:
        return jax.default_backend() == "gpu"
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
