"""Compile every stage a decode (or encode) of a given shape needs before the data exists, in parallel.

A staged, tiled decode at 29x720p runs about 40 distinct stage programs; compiled one after another as the
decode reaches them, they cost about a minute on a GPU (measured on an H100). The shapes are known as soon as
the latent shape is, so the stages can be planned under ``jax.eval_shape`` (nothing runs), traced one after
another (tracing holds Python's lock) and handed to XLA in several threads (compiling releases it), while the
transformer compiles or samples::

    job = precompile_decode_in_background(vae, (1, 4, 8, 90, 160))
    latents = sampler(key)                  # meanwhile
    job.result()                            # the decode below compiles nothing
    frames = decode_latents_to_video(vae, latents)

The compiled stages land in the stage cache of :mod:`jax_vdit.vae.runtime` (and in JAX's persistent compilation
cache when it is on), so the decode that follows finds them.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jax_vdit import executable_store
from jax_vdit.background import in_background
from jax_vdit.vae.model import CausalVAE
from jax_vdit.vae.pipeline import RELEASE_TILING
from jax_vdit.vae.runtime import (
    StageCall,
    decode_nthwc,
    encode_moments_nthwc,
    finish_stage,
    is_compiled,
    load_stored_stage,
    lower_stage,
    preload_stored_stages,
    recording_stages,
    stage_key,
    store_name,
    stored_stage_name,
)
from jax_vdit.vae.tiling import TilingConfig



@dataclass(frozen=True)
class WarmupReport:
    """What :func:`precompile` did: distinct stages planned, how many were compiled, wall seconds of the planning,
    of the tracing and of the whole call, the threads used, and how many stages came from the executable store
    (:mod:`jax_vdit.executable_store`) instead, and whether the stages were planned by tracing the decode."""

    stages: int
    compiled: int
    plan_s: float
    lower_s: float
    total_s: float
    workers: int
    loaded: int = 0
    planned: bool = True  # False: the stages came from a recorded plan (:func:`precompile_decode`), not tracing


def _distinct(calls: Sequence[StageCall]) -> list[StageCall]:
    seen, out = set(), []
    for call in calls:
        key = stage_key(call)
        if key not in seen:
            seen.add(key)
            out.append(call)
    return out


def plan_decode(vae: CausalVAE, latent_shape: Sequence[int], *, tiling: TilingConfig | None = RELEASE_TILING
                ) -> list[StageCall]:
    """The distinct stages that ``decode_latents_to_video(vae, latents, tiling=tiling)`` runs for DiT latents of
    shape (B, C, t, h, w); nothing is compiled or run."""
    b, c, t, h, w = (int(n) for n in latent_shape)
    if c != vae.config.embed_dim:
        raise ValueError(f"latents must have {vae.config.embed_dim} channels; got shape {tuple(latent_shape)}")
    spec = jax.ShapeDtypeStruct((b, t, h, w, c), jnp.float32)  # decode_latents_to_video feeds float32 NTHWC
    with recording_stages() as calls:
        jax.eval_shape(lambda z: decode_nthwc(vae, z, tiling=tiling), spec)
    return _distinct(calls)


def plan_encode(vae: CausalVAE, video_shape: Sequence[int], *, tiling: TilingConfig | None = RELEASE_TILING
                ) -> list[StageCall]:
    """The distinct stages that encoding a video of shape (B, T, H, W, 3) runs; nothing is compiled or run."""
    b, t, h, w, c = (int(n) for n in video_shape)
    if c != 3:
        raise ValueError(f"video must be frames (B, T, H, W, 3); got shape {tuple(video_shape)}")
    spec = jax.ShapeDtypeStruct((b, t, h, w, 3), jnp.float32)
    with recording_stages() as calls:
        jax.eval_shape(lambda x: encode_moments_nthwc(vae, x, tiling=tiling), spec)
    return _distinct(calls)


WORKERS_ENV = "JAX_VDIT_VAE_COMPILE_WORKERS"


def default_workers() -> int:
    """Threads for the VAE's XLA compiles: ``$JAX_VDIT_VAE_COMPILE_WORKERS`` if set, else 1.

    One thread, because concurrent compiles did not finish sooner on an H100 host (16 cores, jax 0.11.2; 29x720p
    decode, 40 stages, which compile in about 62 s one after another): with 15 threads the stages took 121 s of
    wall time (1,387 compile seconds summed over the threads) and slowed the transformer's compile beside them
    from 5 s to 117 s; with 4 threads 113 s (438 s summed) and 24 s
    (``experiments/results/first_video/README.md``). The one thread still overlaps the transformer's compile and
    sampling."""
    if os.environ.get(WORKERS_ENV):
        return max(1, int(os.environ[WORKERS_ENV]))
    return 1


def precompile(calls: Sequence[StageCall], *, workers: int | None = None, plan_s: float = 0.0,
               cancel: threading.Event | None = None) -> WarmupReport:
    """Compile the stages in ``calls`` that are not compiled yet: traced here one by one, compiled by
    ``workers`` threads (default :func:`default_workers`; 1 compiles in this thread). Once ``cancel`` is set, no
    further stage starts (``compiled`` then counts the stages that did)."""
    t0 = time.perf_counter()
    workers = default_workers() if workers is None else max(1, int(workers))
    distinct = _distinct(calls)
    todo = [call for call in distinct if not is_compiled(call)]
    # stages in the executable store load without tracing or lowering; the rest are lowered here, compiled there
    missing = [call for call in todo if not load_stored_stage(call.fn, stage_key(call), call.x_spec)]
    loaded, todo = len(todo) - len(missing), missing
    lower_s = 0.0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vae-compile") as pool:
        futures = []
        for call in todo:
            if cancel is not None and cancel.is_set():
                break
            t = time.perf_counter()
            key, lowered, out_shape, donated = lower_stage(call.fn, call.modules, call.x_spec, donate=call.donate)
            dt = time.perf_counter() - t
            lower_s += dt
            futures.append(pool.submit(finish_stage, call.fn, key, lowered, out_shape, donated, call.x_spec, dt))
        for future in futures:
            future.result()
    return WarmupReport(stages=len(distinct), compiled=len(futures), plan_s=round(plan_s, 3), lower_s=round(lower_s, 3),
                        total_s=round(plan_s + time.perf_counter() - t0, 3), workers=workers, loaded=loaded)


def _decode_plan_name(vae: CausalVAE, latent_shape: Sequence[int], tiling: TilingConfig | None) -> str | None:
    """The executable store's record name of this decode's stages (the decoder's structure and dtypes, the latent
    shape, the tiling, and the code: see :func:`jax_vdit.executable_store.store_key`); None with the store off.
    The encoder is no part of it: a decoder-only VAE (``load_vae(..., parts="decoder")``) finds the plan that the
    compile processes, which build the whole VAE's shapes, recorded."""
    if executable_store.store_directory() is None:
        return None
    decoding = (repr(nnx.graphdef(vae.decoder)),
                None if vae.post_quant_conv is None else repr(nnx.graphdef(vae.post_quant_conv)))
    description = ("vae-decode-plan", decoding, repr(vae.config), str(jnp.dtype(vae.param_dtype)),
                   tuple(int(n) for n in latent_shape), repr(tiling))
    return store_name(description) + ".decode-plan"  # keyed by the VAE's code, as the stages' own names


def _recorded_stages(name: str | None) -> list[str] | None:
    record = None if name is None else executable_store.load_record(name)
    names = record.get("stages") if isinstance(record, dict) else None
    return names if isinstance(names, list) and names and all(isinstance(n, str) for n in names) else None


def decode_is_stored(vae: CausalVAE, latent_shape: Sequence[int], *,
                     tiling: TilingConfig | None = RELEASE_TILING) -> bool:
    """Whether the executable store holds this decode's recorded plan and every stage it names (``vae`` may be
    abstract: only its structure and dtypes matter): then :func:`precompile_decode` compiles and plans nothing."""
    names = _recorded_stages(_decode_plan_name(vae, latent_shape, tiling))
    return names is not None and all(executable_store.has(n) for n in names)


def _record_stages(name: str, calls: Sequence[StageCall]) -> None:
    """Record the store names of ``calls`` once every one of them is in the store."""
    names = [stored_stage_name(call) for call in _distinct(calls)]
    if all(executable_store.has(n) for n in names):
        executable_store.save_record(name, {"stages": names})


def precompile_decode(vae: CausalVAE, latent_shape: Sequence[int], *,
                      tiling: TilingConfig | None = RELEASE_TILING, workers: int | None = None,
                      cancel: threading.Event | None = None, part: tuple[int, int] = (0, 1)) -> WarmupReport:
    """Plan and compile every stage of decoding DiT latents of ``latent_shape`` (B, C, t, h, w); no stage starts
    once ``cancel`` is set. ``part`` (k, n): only every n-th distinct stage from the k-th (for n processes that
    share the work through the executable store, :mod:`jax_vdit.vae.compile_worker`).

    With the executable store on, a decode whose every stage is stored is recorded there (the stages' store
    names); a later process then reads those executables without planning the decode at all (planning traces the
    whole decode abstractly and holds Python's lock, time the transformer's load beside it waits for: 0.49 s at
    29x720p and 0.85 s at 93x720p with uniform tiles on a 2-core CPU since each distinct stage is traced once, 1.96
    and 7.41 s before; experiments/results/first_video/decode_planning_once_cpu_2026-12-07/). Its report says ``planned=False``."""
    k, n = part
    if not 0 <= k < n:
        raise ValueError(f"part must be (k, n) with 0 <= k < n, got {part}")
    t0 = time.perf_counter()
    record = _decode_plan_name(vae, latent_shape, tiling)
    names = _recorded_stages(record)
    if names is not None and preload_stored_stages(names[k::n]):
        return WarmupReport(stages=len(names), compiled=0, plan_s=0.0, lower_s=0.0,
                            total_s=round(time.perf_counter() - t0, 3), workers=0, loaded=len(names[k::n]),
                            planned=False)
    calls = plan_decode(vae, latent_shape, tiling=tiling)
    report = precompile(_distinct(calls)[k::n], workers=workers, plan_s=time.perf_counter() - t0, cancel=cancel)
    if n > 1:  # the stages of the whole decode, whichever part this process compiled
        report = dataclasses.replace(report, stages=len(_distinct(calls)))
    if record is not None and not (cancel is not None and cancel.is_set()):
        _record_stages(record, calls)
    return report


def precompile_encode(vae: CausalVAE, video_shape: Sequence[int], *,
                      tiling: TilingConfig | None = RELEASE_TILING, workers: int | None = None) -> WarmupReport:
    """Plan and compile every stage of encoding videos of ``video_shape`` (B, T, H, W, 3)."""
    t0 = time.perf_counter()
    calls = plan_encode(vae, video_shape, tiling=tiling)
    return precompile(calls, workers=workers, plan_s=time.perf_counter() - t0)


def precompile_decode_in_background(vae: CausalVAE, latent_shape: Sequence[int], *,
                                    tiling: TilingConfig | None = RELEASE_TILING,
                                    workers: int | None = None, cancel: threading.Event | None = None) -> Future:
    """:func:`precompile_decode` in a background thread; returns its future (``.result()`` is the
    :class:`WarmupReport`, or raises what the compile raised). Wait for it before decoding. Set ``cancel`` when the
    decode will not happen (e.g. loading the transformer failed): the thread then stops after the stage it is
    compiling, instead of keeping the process from exiting until every stage is compiled."""
    return in_background("vae-warmup", precompile_decode, vae, latent_shape, tiling=tiling, workers=workers,
                         cancel=cancel)
