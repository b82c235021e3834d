"""The persistent compilation cache flags shared by `vdit sample`, `vdit prepare-data` and `vdit distill`.

With the cache on (the default), a second run of the same command, or a run resumed after a kill, reads its
compiled programs (the sampler, the VAE's stages, a training step) from disk instead of compiling them again, and
the VAE's stages come from the executable store inside it (:mod:`jax_vdit.executable_store`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_COMPILE_CACHE = "~/.cache/jax-vdit/xla"  # JAX's persistent compilation cache
COMPILE_CACHE_ENV = "JAX_VDIT_COMPILE_CACHE"


def add_compile_cache_arguments(group) -> None:
    """``--compile-cache DIR`` (default ``$JAX_VDIT_COMPILE_CACHE`` or ``~/.cache/jax-vdit/xla``; '' disables it) and
    ``--no-compile-cache`` on a parser or argument group."""
    group.add_argument("--compile-cache", default=os.environ.get(COMPILE_CACHE_ENV, DEFAULT_COMPILE_CACHE),
                       help=f"persistent XLA compilation cache directory (env {COMPILE_CACHE_ENV}); '' disables it")
    group.add_argument("--no-compile-cache", action="store_true", help="do not use the persistent compilation cache")


def setup_compile_cache(args: argparse.Namespace) -> str | None:
    """Turn on JAX's persistent compilation cache (unless ``--no-compile-cache`` or an empty directory); returns
    the directory, or None."""
    if getattr(args, "no_compile_cache", False) or not getattr(args, "compile_cache", None):
        return None
    import jax

    path = Path(args.compile_cache).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # every program, not only those that compile for over a second (JAX's default): loading a checkpoint and
    # preparing a sampler build many small programs (a cold `vdit sample` of the release student built 54 while
    # loading), and a warm run that compiled them all again would not be warm
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return str(path)
