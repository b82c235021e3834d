"""What `vdit sample` does before its load, to shorten the time to the first video: the weights' reads started
before JAX is imported (:mod:`jax_vdit.io.prefetch`), JAX's backend started beside the remaining imports, and the
prefetched weights copied to the device once it is up. Nothing here imports JAX at module level."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from jax_vdit.env_values import choice_from_env


def start_weight_prefetch(args: argparse.Namespace):
    """The transformer's safetensors read into host memory in background threads from now on, while JAX is
    imported and started (:mod:`jax_vdit.io.prefetch`; ``$JAX_VDIT_PREFETCH_BYTES`` bounds the bytes held, 0
    turns it off), or None where that does not apply: a checkpoint that is not a local folder of safetensors (a
    repo id, our orbax format, a PyTorch pickle). No JAX import."""
    from jax_vdit.io.prefetch import budget_from_env, start_prefetch
    from jax_vdit.io.tensors import CheckpointFormatError, find_weight_files

    budget = budget_from_env()  # a bad value is refused here, before any work
    root = Path(args.checkpoint).expanduser()
    if budget <= 0 or not root.is_dir():
        return None
    model_dir = root / args.variant if args.variant and (root / args.variant).is_dir() else root
    try:
        files = find_weight_files(model_dir)
    except (CheckpointFormatError, OSError):  # not a weights folder: the loader says what is wrong
        return None
    return start_prefetch(files, budget=budget)


PREFETCH_TO_DEVICE_ENV = "JAX_VDIT_PREFETCH_TO_DEVICE"  # "auto" (default), "1" or "0"
_FLOAT_NAMES = ("float32", "float16", "bfloat16")  # what the loader lays out on the device


def prefetch_to_device_wanted(cold: bool, environ=None) -> bool:
    """Whether the weights' prefetch also copies its tensors to the device: ``$JAX_VDIT_PREFETCH_TO_DEVICE`` "1"
    or "0", or "auto" (the default): only in a command that looks warm (``cold`` False: the VAE's decode is
    already stored, so no compile processes started before JAX). In a cold command the sampler's compile beside
    the load is the longest path, and the copying threads slowed it: on an H100 the cold
    29x720p command took 22.3 s with the copies against 21.0 s without, the warm one 11.2 against 12.5 s (one run
    each, experiments/results/first_video/cli_prefetch_h100_2026-12-07/)."""
    value = choice_from_env(PREFETCH_TO_DEVICE_ENV, "auto", ("auto", "0", "1"), environ)
    return value == "1" or (value == "auto" and not cold)


def place_prefetched_weights(jax) -> int:
    """Have the weights' prefetch (:func:`start_weight_prefetch`) also copy each floating-point tensor to JAX's
    default device, as the loader's reading threads would, up to an eighth of the device's memory (the host
    budget where the device does not report it). Returns how many prefetches were told. Call once JAX's backend
    is up, where :func:`prefetch_to_device_wanted` says so."""
    from jax_vdit.io import prefetch

    limit = (jax.devices()[0].memory_stats() or {}).get("bytes_limit")
    budget = int(limit) // 8 if limit else prefetch.budget_from_env()
    return prefetch.place_all_with(jax.device_put, lambda a: a.dtype.name in _FLOAT_NAMES, budget)


EARLY_BACKEND_ENV = "JAX_VDIT_EARLY_BACKEND"  # "0": JAX's backend starts where it is first used, not beside imports


def import_jax_and_start_backend(to_device: bool) -> tuple[dict, object]:
    """Import JAX, then start its backend (the GPU client: the driver's context, the devices) in a background
    thread while this one imports the rest (flax, the model's modules), unless ``$JAX_VDIT_EARLY_BACKEND=0``; with
    ``to_device`` that thread then has the weights' prefetch copy its tensors to the device
    (:func:`place_prefetched_weights`).
    Returns (seconds: "jax_import_s", and later "imports_s" and "backend_wait_s", filled by the caller; the
    thread's future, or None)."""
    from jax_vdit.background import in_background

    t0 = time.perf_counter()
    import jax

    seconds = {"jax_import_s": round(time.perf_counter() - t0, 3)}
    if choice_from_env(EARLY_BACKEND_ENV, "1", ("0", "1")) == "0":
        return seconds, None

    def start_backend() -> float:
        started = time.perf_counter()
        jax.devices()
        seconds = round(time.perf_counter() - started, 3)
        if to_device:
            place_prefetched_weights(jax)
        return seconds

    return seconds, in_background("jax-backend", start_backend)
