"""The XLA flags `vdit sample` adds on a GPU, and when it leaves XLA_FLAGS alone."""

from __future__ import annotations

import pytest

from jax_vdit import xla_defaults
from jax_vdit.xla_defaults import GPU_CLIENT_DEFAULTS, GPU_COMPILE_FLAGS, add_gpu_client_defaults, add_gpu_compile_flags


@pytest.fixture
def before_backends(monkeypatch):
    """As in a fresh `vdit` process: JAX has not started its backends yet (this test process has)."""
    monkeypatch.setattr(xla_defaults, "backends_started", lambda: False)


def test_the_flags_are_appended_to_the_users_own(before_backends):
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/d"}
    assert add_gpu_compile_flags(env) == list(GPU_COMPILE_FLAGS)
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/d --xla_gpu_enable_triton_gemm=false"
    assert add_gpu_compile_flags(env) == [] and env["XLA_FLAGS"].count("triton_gemm") == 1  # not twice


@pytest.mark.parametrize("user_flag", ["--xla_gpu_enable_triton_gemm=true", "--xla_gpu_enable_triton_gemm"])
def test_a_flag_the_user_set_is_left_as_it_is(before_backends, user_flag):
    env = {"XLA_FLAGS": user_flag}
    assert add_gpu_compile_flags(env) == [] and env["XLA_FLAGS"] == user_flag


def test_nothing_is_added_without_a_gpu_platform_or_after_the_backends_started(before_backends, monkeypatch):
    env = {"JAX_PLATFORMS": "cpu"}
    assert add_gpu_compile_flags(env) == [] and "XLA_FLAGS" not in env
    env = {"JAX_PLATFORMS": "cuda,cpu"}
    assert add_gpu_compile_flags(env) == list(GPU_COMPILE_FLAGS)
    monkeypatch.setattr(xla_defaults, "backends_started", lambda: True)  # XLA would not read them any more
    env = {}
    assert add_gpu_compile_flags(env) == [] and env == {}


def test_this_process_has_started_its_backends():
    import jax

    jax.devices()
    assert xla_defaults.backends_started()


def test_the_client_stops_reserving_memory_unless_the_user_chose_how_it_takes_memory(before_backends, monkeypatch):
    env = {}
    assert add_gpu_client_defaults(env) == GPU_CLIENT_DEFAULTS == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert env == GPU_CLIENT_DEFAULTS
    for name, value in [("XLA_PYTHON_CLIENT_PREALLOCATE", "true"), ("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9"),
                        ("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")]:
        env = {name: value}
        assert add_gpu_client_defaults(env) == {} and env == {name: value}
    env = {"JAX_PLATFORMS": "cpu"}
    assert add_gpu_client_defaults(env) == {} and env == {"JAX_PLATFORMS": "cpu"}
    monkeypatch.setattr(xla_defaults, "backends_started", lambda: True)  # the client has read them already
    env = {}
    assert add_gpu_client_defaults(env) == {} and env == {}
