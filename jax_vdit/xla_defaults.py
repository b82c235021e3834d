"""XLA flags that `vdit sample` adds on a GPU unless the user set them: flags that shortened a cold process's
compile without slowing its sampler where measured.

``--xla_gpu_enable_triton_gemm=false``: XLA:GPU otherwise rewrites matmuls with their neighbouring elementwise ops
into Triton GEMM fusions and autotunes each one while compiling. For the release transformer's 4-step sampler
(29x720p, 1:7 tile masks, bf16) on an H100, without them the backend compile took 4.6 and 5.4 s instead of
7.1-10.1 s, and a sampling step 0.443-0.453 s against 0.454-0.473 s (cuBLAS GEMMs instead; the dense teacher and
the 3:21 student not measured yet; ``experiments/results/first_video/cli_exit_gemm_workers_h100_2026-12-07/``).

``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (:func:`add_gpu_client_defaults`): JAX's GPU client otherwise reserves
75% of the card's memory when it starts. Without that reservation a warm `vdit sample` (29x720p student) copied
the 5.5 GB of weights to the device in 0.45-0.91 s instead of 1.0-2.5 s and took 7.0 s against 7.3-7.4 s on one
H100 host, 10.1-11.0 s against 11.3-11.7 s on a slower one, sampling and decoding as fast; cold commands moved
by no more than their run-to-run spread (``experiments/results/first_video/cli_prealloc_h100_2026-12-07/``). It
changes no compiled program (it is not an XLA flag); memory is then taken as the work needs it.

XLA reads ``XLA_FLAGS`` once, when JAX starts its backends: flags added later have no effect, so
:func:`add_gpu_compile_flags` adds nothing then (its empty result says so); the client's settings likewise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

GPU_COMPILE_FLAGS: tuple[str, ...] = ("--xla_gpu_enable_triton_gemm=false",)
GPU_CLIENT_DEFAULTS: dict[str, str] = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
# a user who sets any of these has chosen how the client takes memory: nothing is added then
GPU_CLIENT_MEMORY_SETTINGS = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                              "XLA_PYTHON_CLIENT_ALLOCATOR")

def keyed_xla_flags(environ: Mapping[str, str] | None = None) -> str:
    """What a key of a compiled program records of the XLA flags: ``$XLA_FLAGS`` (default ``os.environ``'s),
    stripped."""
    environ = os.environ if environ is None else environ
    return environ.get("XLA_FLAGS", "").strip()


def _flag_name(flag: str) -> str:
    return flag.lstrip("-").split("=", 1)[0]


def backends_started() -> bool:
    """Whether JAX has started its backends in this process (after which ``XLA_FLAGS`` is not read again)."""
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(xla_bridge is not None and getattr(xla_bridge, "_backends", None))


def cpu_only(environ: Mapping[str, str]) -> bool:
    """True when ``JAX_PLATFORMS`` names platforms and none of them is a GPU one (the flags would do nothing)."""
    platforms = [p.strip().lower() for p in environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    return bool(platforms) and not any(p in ("cuda", "gpu", "rocm") for p in platforms)


def add_gpu_compile_flags(environ: MutableMapping[str, str] | None = None,
                          flags: tuple[str, ...] = GPU_COMPILE_FLAGS) -> list[str]:
    """Append each of ``flags`` to ``environ["XLA_FLAGS"]`` (default ``os.environ``) whose flag name the user's
    ``XLA_FLAGS`` does not already set; returns the flags added. Adds nothing once JAX's backends have started or
    when ``JAX_PLATFORMS`` rules out a GPU. Child processes started afterwards (the VAE's compile workers) inherit
    the flags, so their programs match this process's."""
    environ = os.environ if environ is None else environ
    if backends_started() or cpu_only(environ):
        return []
    current = environ.get("XLA_FLAGS", "")
    present = {_flag_name(f) for f in current.split()}
    added = [f for f in flags if _flag_name(f) not in present]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added


def add_gpu_client_defaults(environ: MutableMapping[str, str] | None = None,
                            defaults: Mapping[str, str] | None = None) -> dict[str, str]:
    """Set :data:`GPU_CLIENT_DEFAULTS` in ``environ`` (default ``os.environ``) unless the user set any of
    :data:`GPU_CLIENT_MEMORY_SETTINGS`; returns what was set. Sets nothing once JAX's backends have started or when
    ``JAX_PLATFORMS`` rules out a GPU."""
    environ = os.environ if environ is None else environ
    defaults = GPU_CLIENT_DEFAULTS if defaults is None else defaults
    if backends_started() or cpu_only(environ) or any(name in environ for name in GPU_CLIENT_MEMORY_SETTINGS):
        return {}
    environ.update(defaults)
    return dict(defaults)
