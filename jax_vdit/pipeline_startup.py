"""The pipeline's start-up work beside the transformer's load: the VAE loaded in a background thread, its decode
stages compiled (or read from the executable store) from the latent shape before the first latents exist, the
decode's marker for the next command, and the sampler compiled on the model's shapes alone. Used by
:meth:`jax_vdit.pipeline.OpenSoraPipeline.from_pretrained`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path

import jax
import jax.numpy as jnp

from jax_vdit import executable_store
from jax_vdit.background import in_background
from jax_vdit.config import VideoSize
from jax_vdit.pipeline_types import default_size


def decode_tiling(vae_tiles: str):
    """The release's decode tiling (``sample_t2v.py --enable_tiling``), run as ``vae_tiles`` says."""
    from jax_vdit.vae import TilingConfig

    return TilingConfig.sample_script(uniform_tiles=vae_tiles == "uniform")


def decode_shape(model_dir: Path, config, decode_size) -> tuple[int, ...] | None:
    """(1, C, t, h, w) of the latents of ``decode_size`` videos, or None where the size cannot be told without
    loading the transformer (an orbax checkpoint) or is not one the model can make (:meth:`OpenSoraPipeline.prepare`
    reports that)."""
    from jax_vdit.io.checkpoints import is_orbax_model_dir
    from jax_vdit.io.release import resolve_config

    if is_orbax_model_dir(model_dir):
        return None
    try:
        base = default_size(resolve_config(Path(model_dir), config, {}))
        frames, height, width = decode_size
        size = VideoSize(frames or base.frames, height or base.height, width or base.width)
    except (ValueError, OSError):
        return None
    return (1, *size.latent_shape)


def start_decoder_warmup(vae, model_dir: Path, config, decode_size, vae_tiles: str, cancel, workers=None, *,
                          vae_dir: Path | None = None, vae_dtype: str = "bfloat16"):
    """((1, C, t, h, w), future) of a background warm-up of the decode of ``decode_size`` videos (it stops early
    once ``cancel``, a ``threading.Event``, is set), or None where the size cannot be told (:func:`decode_shape`).
    ``workers``: (compile processes of :mod:`jax_vdit.vae.compile_worker`, a list their reports go into): the
    warm-up first waits for them, then reads from the executable store what they compiled. Once the store holds
    the whole decode, the VAE folder ``vae_dir`` (if given; VAE in ``vae_dtype``) gets its marker
    (:func:`jax_vdit.vae.early_compile.mark_decode_stored`): the next command starts no processes before JAX."""
    from jax_vdit.vae import compile_worker
    from jax_vdit.vae.warmup import precompile_decode, precompile_decode_in_background

    shape = decode_shape(model_dir, config, decode_size)
    if shape is None:
        return None
    tiling = decode_tiling(vae_tiles)
    if not workers:
        future = precompile_decode_in_background(vae, shape, tiling=tiling, cancel=cancel)
    else:
        processes, reports = workers

        def after_workers():
            reports.extend(compile_worker.wait(processes, cancel))
            return precompile_decode(vae, shape, tiling=tiling, cancel=cancel)

        future = in_background("vae-warmup", after_workers)
    if vae_dir is None:
        return shape, future
    marked: Future = Future()  # the warm-up's result, once the decode's marker is written (if it is stored)

    def mark_then_relay(done: Future) -> None:  # in the warm-up's thread, once it has finished
        error = done.exception()
        if error is not None:
            marked.set_exception(error)
            return
        try:
            if not cancel.is_set():
                mark_if_stored(vae, vae_dir, shape, tiling, vae_tiles, vae_dtype)
        finally:  # whatever the marker did, the warm-up's result is passed on
            marked.set_result(done.result())

    future.add_done_callback(mark_then_relay)
    return shape, marked


def mark_if_stored(vae, vae_dir: Path, shape: tuple[int, ...], tiling, vae_tiles: str, vae_dtype: str) -> None:
    """Write the decode's marker for the next command when the executable store now holds all of it."""
    from jax_vdit.vae import early_compile
    from jax_vdit.vae.warmup import decode_is_stored

    cache = jax.config.jax_compilation_cache_dir
    if not cache or early_compile.decode_marker(cache, vae_dir, shape, vae_dtype, vae_tiles).is_file():
        return  # a warm command: marked already
    try:
        stored = executable_store.store_directory() is not None and decode_is_stored(vae, shape, tiling=tiling)
    except Exception:  # noqa: BLE001 -- a marker only saves the next command an early start
        return
    if stored:
        early_compile.mark_decode_stored(cache, vae_dir, shape, vae_dtype, vae_tiles)


def compile_sampler_in_background(cls, model_dir: Path, load_args: dict, parts: dict, job_args: Mapping,
                                   cancel) -> Future:
    """A future of {"seconds", "compile" (this thread's :class:`~jax_vdit.compile_meter.CompileMeter` report),
    "error"} of compiling, or reading from the executable store, the sampler of the job that
    ``prepare(**job_args)`` makes, on a pipeline (``parts``: its fields) whose transformer has only the shapes
    of the one at ``model_dir`` (``load_args``: :func:`~jax_vdit.io.load.model_config`'s arguments). Nothing
    starts once ``cancel`` is set."""
    from jax_vdit.compile_meter import CompileMeter
    from jax_vdit.io.load import model_config
    from jax_vdit.model import abstract_model

    def work() -> dict:
        t0 = time.perf_counter()
        error = None
        with CompileMeter() as meter:
            try:
                shapes = cls(abstract_model(model_config(model_dir, **load_args)), **parts)
                job = shapes.prepare(**job_args)
                if not cancel.is_set():
                    shapes.compile_sampler(job)
                    shapes.draw_first_noise(job)
            except Exception as err:  # noqa: BLE001 - the caller compiles instead; prepare() raises it there
                error = f"{type(err).__name__}: {err}"
        return {"seconds": round(time.perf_counter() - t0, 3), "compile": meter.report(), "error": error}

    return in_background("sampler-compile", work)


def load_vae_in_background(vae_dir: Path, dtype, warmup: tuple | None, cancel, parts: str = "all") -> Future:
    """Load the VAE (``parts``: "all" or "decoder", see :func:`~jax_vdit.io.load_vae`) from ``vae_dir`` in a
    background thread, then (``warmup`` = (model_dir, config, decode_size,
    vae_tiles, compile processes and their reports' list or None)) start compiling its decode stages
    there. The future's result: (VAE, load seconds, the load's CPU seconds in that thread, the
    :func:`start_decoder_warmup` result or None). Nothing starts once ``cancel`` is set."""
    from jax_vdit.io import load_vae

    def work():
        t0, cpu0 = time.perf_counter(), time.thread_time()
        vae = load_vae(vae_dir, dtype=dtype, parts=parts)
        seconds, cpu_seconds = time.perf_counter() - t0, time.thread_time() - cpu0
        early = None
        if warmup is not None and not cancel.is_set():
            model_dir, config, decode_size, vae_tiles, workers = warmup
            vae_dtype = "bfloat16" if dtype == jnp.bfloat16 else "float32"
            early = start_decoder_warmup(vae, model_dir, config, decode_size, vae_tiles, cancel, workers,
                                          vae_dir=vae_dir, vae_dtype=vae_dtype)
        return vae, seconds, cpu_seconds, early

    return in_background("vae-load", work)
