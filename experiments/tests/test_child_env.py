"""Benchmark parents leave the GPU's memory to the children they time, and children get JAX's defaults."""

import os
import subprocess
import sys

import pytest

from experiments import child_env


def test_children_get_the_original_environment_and_the_repository_on_the_path(monkeypatch):
    monkeypatch.setattr(child_env, "ORIGINAL_ENV", {"PATH": "/bin", "PYTHONPATH": "/x"})
    monkeypatch.setattr(os, "environ", dict(os.environ))
    os.environ.update(child_env.PARENT_SETTINGS)
    env = child_env.child_env(TQDM_MININTERVAL="30")
    assert env["PYTHONPATH"] == str(child_env.ROOT) + os.pathsep + "/x"
    assert env["TQDM_MININTERVAL"] == "30" and env["PATH"] == "/bin"
    assert not set(child_env.PARENT_SETTINGS) & set(env)  # the parent's allocator settings stay in the parent


def test_the_parent_setting_must_come_before_jax_starts():
    code = ("from experiments.child_env import parent_releases_gpu_memory as f, PARENT_SETTINGS as P\n"
            "import os, jax\nf()\nassert all(os.environ[k] == v for k, v in P.items())\n"
            "jax.devices()\n"
            "try:\n    f()\nexcept RuntimeError as e:\n    print('refused:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=child_env.ROOT, capture_output=True, text=True,
                         env=child_env.child_env(JAX_PLATFORMS="cpu"), check=True).stdout
    assert "refused: JAX already started its backends" in out


@pytest.mark.parametrize("module", ["bench_first_video", "bench_prepare_data", "reproduce_toy_students"])
def test_benchmark_parents_build_child_environments_with_child_env(module):
    source = (child_env.ROOT / "experiments" / f"{module}.py").read_text()
    assert "dict(os.environ" not in source and "child_env(" in source
