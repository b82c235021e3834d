"""Benchmarks that time fresh child processes: the parent must not hold the GPU memory its children need.

JAX's GPU client reserves 75% of the card's memory when it starts (``XLA_PYTHON_CLIENT_PREALLOCATE``), and its
allocator keeps what it freed. A parent that touches the GPU before or between its children (to write random weights,
or to read the device name) would leave each child a quarter of the card. :func:`parent_releases_gpu_memory` makes
the parent allocate on demand and free at once; :func:`child_env` is the environment the parent had before that, so
the children run with JAX's defaults, as a user's process does.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL_ENV = dict(os.environ)  # captured on first import, before the parent changes its own allocator settings
PARENT_SETTINGS = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_ALLOCATOR": "platform"}


def parent_releases_gpu_memory() -> None:
    """Make this process's JAX allocate GPU memory on demand and return it when freed. Call before JAX starts a
    backend (raises ``RuntimeError`` otherwise: the settings would have no effect)."""
    from jax_vdit.xla_defaults import backends_started

    if backends_started():
        raise RuntimeError("JAX already started its backends; call parent_releases_gpu_memory() before using JAX")
    os.environ.update(PARENT_SETTINGS)


def child_env(root: Path = ROOT, **extra: str) -> dict[str, str]:
    """The environment for a child: the parent's original one (JAX's allocator defaults), ``root`` (this
    repository, or another commit's source tree) first on ``PYTHONPATH``, plus ``extra``."""
    env = dict(ORIGINAL_ENV)
    env["PYTHONPATH"] = str(root) + os.pathsep + ORIGINAL_ENV.get("PYTHONPATH", "")
    env.update(extra)
    return env
