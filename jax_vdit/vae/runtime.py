"""Public encode/decode API on (B, C, T, H, W) arrays: jit cache per tile shape, tiling, posterior.

The encoder and decoder run as chains of stages (:func:`run_stage`; or as one executable with
``ComputeConfig(staged=False)``). Each stage is compiled once per input shape (``jax.jit(...).lower(...)
.compile()``) and kept in a process-wide cache keyed by the stage function, the modules' graph definitions,
their parameter shapes/dtypes and the input shape, so repeated tiles, chunks, identical blocks and calls never
recompile. :func:`compile_log` lists what was compiled and how long each took.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_vdit import executable_store
from jax_vdit.host_arrays import to_device
from jax_vdit.vae import ops
from jax_vdit.vae.model import CausalVAE
from jax_vdit.vae.tiling import TilingConfig, assemble_tiles, tile_starts, time_chunks

F32 = jnp.float32
_PACKAGE_DIR = Path(__file__).resolve().parent  # the VAE's code: part of every stored executable's key
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


# ----------------------------------------------------------------------------------------------- posterior
@dataclass(frozen=True)
class DiagonalGaussian:
    """Posterior of the encoder: float32 ``mean`` and clamped ``logvar`` of shape (B, C, t, h, w)."""

    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments_nthwc: jax.Array) -> "DiagonalGaussian":
        """Channels 0..C-1 are the mean, C..2C-1 the log-variance (clamped to [-30, 20])."""
        m = jnp.transpose(moments_nthwc.astype(F32), (0, 4, 1, 2, 3))
        c = m.shape[1] // 2
        return cls(m[:, :c], jnp.clip(m[:, c:], LOGVAR_MIN, LOGVAR_MAX))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        """mean + std * N(0, 1) with an explicit PRNG key."""
        return self.mean + self.std * jax.random.normal(key, self.mean.shape, F32)

    def mode(self) -> jax.Array:
        return self.mean


# ----------------------------------------------------------------------------------------------- jit cache
_CACHE: dict = {}
_LOG: list[dict] = []
_LOCK = threading.Lock()
_STORE_KIND = "vae-stage"
_RECORDING = threading.local()  # .calls: list of StageCall while recording_stages() is active


def _signature(state) -> tuple:
    return tuple((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(state))


def _donation_supported() -> bool:
    return jax.default_backend() != "cpu"


@dataclass(frozen=True)
class StageCall:
    """One stage application as :func:`run_stage` would compile it: the stage function, its modules, the
    input's abstract value and whether the input buffer is donated."""

    fn: Callable
    modules: tuple
    x_spec: jax.ShapeDtypeStruct
    donate: bool = False
    key: Any = field(default=None, compare=False, repr=False)  # its cache key, where the recorder computed it


def _stage_parts(fn: Callable, modules: tuple, x_spec: jax.ShapeDtypeStruct, donate: bool):
    """(cache key, graph defs, states) of a stage; ``nnx.split`` runs here, in the caller's thread."""
    splits = [nnx.split(m) for m in modules]
    graphdefs = tuple(g for g, _ in splits)
    states = tuple(st for _, st in splits)
    key = (fn, graphdefs, _signature(states), tuple(x_spec.shape), str(x_spec.dtype), donate)
    return key, graphdefs, states


def _stage_function(fn: Callable, graphdefs: tuple):
    def pure(states, x):
        return fn(*[nnx.merge(g, st) for g, st in zip(graphdefs, states)], x)

    return pure


def lower_stage(fn: Callable, modules: tuple, x_spec: jax.ShapeDtypeStruct, *, donate: bool = False):
    """Trace and lower one stage without compiling: (cache key, lowered program, output shape, donated?).

    Tracing holds Python's interpreter lock; :func:`finish_stage` (the XLA compile) can run in another thread.
    """
    key, graphdefs, states = _stage_parts(fn, modules, x_spec, donate)
    pure = _stage_function(fn, graphdefs)
    spec = jax.ShapeDtypeStruct(x_spec.shape, x_spec.dtype)
    out_shape = jax.eval_shape(pure, states, spec)
    # donate only where an output can take over the input buffer (else XLA warns and ignores it)
    aliasable = any(o.shape == spec.shape and o.dtype == spec.dtype for o in jax.tree.leaves(out_shape))
    use_donation = donate and aliasable and _donation_supported()
    lowered = jax.jit(pure, donate_argnums=(1,) if use_donation else ()).lower(states, spec)
    return key, lowered, out_shape, use_donation


def _stored_name(key) -> str:
    """The executable store's key of a stage (see :mod:`jax_vdit.executable_store`): the stage function's name,
    the modules' graph definitions, parameter shapes, input shape/dtype and donation, the flax version and the
    source of this package's VAE code."""
    import flax

    fn, graphdefs, signature, shape, dtype, donate = key
    description = (f"{fn.__module__}.{fn.__qualname__}", tuple(str(g) for g in graphdefs), signature, shape, dtype,
                   donate, flax.__version__)
    return store_name(description)


def store_name(description) -> str:
    """The executable store's key of anything built by the VAE's code (a stage, a recorded decode plan): a change
    of that code is a new key."""
    return executable_store.store_key(description, str(_PACKAGE_DIR))


def _log_entry(fn: Callable, x_spec, donated: bool, seconds: float, *, loaded: bool) -> dict:
    """One :func:`compile_log` entry (memory statistics are added where the compile reports them)."""
    return {"stage": getattr(fn, "__name__", str(fn)), "shape": tuple(x_spec.shape), "dtype": str(x_spec.dtype),
            "donated": donated, "seconds": seconds, "thread": threading.current_thread().name, "loaded": loaded}


def load_stored_stage(fn: Callable, key, x_spec) -> bool:
    """Put the stage ``key`` into the stage cache from the executable store, without tracing or lowering it;
    False when the store is off or has no usable executable for it."""
    if key in _CACHE:
        return True
    if executable_store.store_directory() is None:
        return False
    t0 = time.perf_counter()
    found = executable_store.held(_stored_name(key), kind=_STORE_KIND)
    if found is None:
        return False
    compiled, (out_shape, donated) = found.executable, found.extra
    entry = _log_entry(fn, x_spec, donated, time.perf_counter() - t0, loaded=True)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = (compiled, out_shape)
            _LOG.append(entry)
    return True


def stored_stage_name(call: StageCall) -> str:
    """The executable store's name of ``call``'s stage program."""
    return _stored_name(stage_key(call))


def preload_stored_stages(names: list[str]) -> bool:
    """Read the stage executables ``names`` from the executable store into this process's table
    (:func:`jax_vdit.executable_store.held`), without tracing anything, so that the decode's stages take them
    (:func:`load_stored_stage`) instead of reading the store one by one; False when the store is off or any of them
    is missing or unusable (those read stay held; the others are compiled)."""
    if executable_store.store_directory() is None:
        return False
    return all(executable_store.held(name, kind=_STORE_KIND) is not None for name in names)


def finish_stage(fn: Callable, key, lowered, out_shape, donated: bool, x_spec, lower_s: float = 0.0) -> None:
    """Compile a program from :func:`lower_stage` into the stage cache (once per key) and log it; with the
    executable store on, also save it there."""
    if key in _CACHE:
        return
    t0 = time.perf_counter()
    loaded = False
    if executable_store.store_directory() is None:
        compiled = lowered.compile()
    else:
        held = executable_store.load_or_compile(_stored_name(key), lambda: lowered, (out_shape, donated),
                                                kind=_STORE_KIND)
        compiled, loaded = held.executable, held.source != "compiled"
    entry = _log_entry(fn, x_spec, donated, lower_s + time.perf_counter() - t0, loaded=loaded)
    try:
        mem = compiled.memory_analysis()
        entry.update(temp_bytes=int(mem.temp_size_in_bytes), argument_bytes=int(mem.argument_size_in_bytes),
                     output_bytes=int(mem.output_size_in_bytes), alias_bytes=int(mem.alias_size_in_bytes))
    except Exception:  # noqa: BLE001 - memory statistics are optional
        pass
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = (compiled, out_shape)
            _LOG.append(entry)


def compile_stage(fn: Callable, modules: tuple, x_spec: jax.ShapeDtypeStruct, *, donate: bool = False):
    """Compile ``fn(*modules, x)`` for an input like ``x_spec``: returns (executable taking ``(states, x)``,
    the modules' states, the output shape tree). Cached per (fn, module graphs, parameter shapes, input
    shape/dtype, donate); each compilation adds an entry (with XLA's memory analysis) to :func:`compile_log`.
    ``donate`` lets XLA reuse the input buffer where an output can take it over (not on CPU)."""
    key, _, states = _stage_parts(fn, modules, x_spec, donate)
    if key not in _CACHE and not load_stored_stage(fn, key, x_spec):
        t0 = time.perf_counter()
        key, lowered, out_shape, donated = lower_stage(fn, modules, x_spec, donate=donate)
        finish_stage(fn, key, lowered, out_shape, donated, x_spec, lower_s=time.perf_counter() - t0)
    compiled, out_shape = _CACHE[key]
    return compiled, states, out_shape


def run_stage(fn: Callable, modules: tuple, x: jax.Array, *, donate: bool = False) -> jax.Array:
    """``fn(*modules, x)`` through a compiled executable cached per (fn, module graphs, parameter shapes,
    input shape/dtype). ``donate`` lets XLA reuse ``x``'s buffer (the caller must not use ``x`` afterwards).
    Modules with identical structure (e.g. the res blocks of one level) share one executable.

    Inside :func:`recording_stages` nothing is compiled or run: the call is recorded and an abstract output of
    the right shape is returned, so a whole decode can be planned under ``jax.eval_shape``."""
    recorder = getattr(_RECORDING, "calls", None)
    if recorder is not None:
        spec = jax.ShapeDtypeStruct(x.shape, x.dtype)
        key, graphdefs, states = _stage_parts(fn, modules, spec, donate)
        recorder.append(StageCall(fn, modules, spec, donate, key))
        shapes = _RECORDING.out_shapes  # a stage's output shape depends on its key only: trace it once
        if key not in shapes:
            shapes[key] = jax.eval_shape(_stage_function(fn, graphdefs), states, spec)
        return jax.tree.map(lambda o: jnp.zeros(o.shape, o.dtype), shapes[key])
    compiled, states, _ = compile_stage(fn, modules, jax.ShapeDtypeStruct(x.shape, x.dtype), donate=donate)
    return compiled(states, x)


@contextmanager
def recording_stages():
    """Within this context (this thread only) :func:`run_stage` records :class:`StageCall` entries instead of
    running; yields the list they are appended to. Use it under ``jax.eval_shape``."""
    previous = getattr(_RECORDING, "calls", None), getattr(_RECORDING, "out_shapes", None)
    calls: list[StageCall] = []
    _RECORDING.calls, _RECORDING.out_shapes = calls, {}  # out_shapes: stage key -> abstract output, per recording
    try:
        yield calls
    finally:
        _RECORDING.calls, _RECORDING.out_shapes = previous


def stage_key(call: StageCall):
    """The cache key :func:`run_stage` would use for ``call``."""
    if call.key is not None:
        return call.key
    return _stage_parts(call.fn, call.modules, call.x_spec, call.donate)[0]


def is_compiled(call: StageCall) -> bool:
    return stage_key(call) in _CACHE


def compile_log() -> list[dict]:
    """One entry per compilation so far: stage name, input shape, dtype, seconds, donation, the compiling
    thread's name, and XLA's memory analysis of the executable (temp/argument/output/alias bytes) where the
    backend reports it."""
    return list(_LOG)


def clear_compile_cache() -> None:
    """Forget every compiled stage, the log, and this process's executables from the store (as a new process)."""
    with _LOCK:
        _CACHE.clear()
        _LOG.clear()
    executable_store.forget_held()


# ----------------------------------------------------------------------------------------------- tile regions
class TileRegion(nnx.Module):
    """The real part of a zero-padded latent tile: its first ``frames`` frames and top-left ``rows x cols`` of
    ``base`` = (frames, rows, cols) of the padded tile. The part's size is data (an int32 (3,) variable), so every
    tile shape runs one program."""

    def __init__(self, frames: int, rows: int, cols: int, base: tuple[int, int, int]):
        if not (0 < frames <= base[0] and 0 < rows <= base[1] and 0 < cols <= base[2]):
            raise ValueError(f"a tile of {frames} x {rows} x {cols} does not fit the padded tile {tuple(base)}")
        self.size = nnx.Variable(to_device([frames, rows, cols], np.int32))
        self.base = tuple(int(b) for b in base)


_IN_REGION: dict[Callable, Callable] = {}


def in_region(fn: Callable) -> Callable:
    """The stage ``fn(*modules, x)`` as ``g(*modules, region, x)``: traced inside ``ops.valid_region`` of the
    :class:`TileRegion` ``region``. One function object per ``fn`` (stage cache keys stay stable)."""
    found = _IN_REGION.get(fn)
    if found is not None:
        return found

    def staged(*args):
        *modules, region, x = args
        size = region.size[...]
        frames, rows, cols = region.base
        with ops.valid_region(size[1], size[2], rows, cols, frames=size[0], base_frames=frames):
            return fn(*modules, x)

    staged.__name__ = f"{fn.__name__}_in_region"
    staged.__qualname__ = f"{fn.__qualname__}[in_region]"
    staged.__module__ = fn.__module__
    return _IN_REGION.setdefault(fn, staged)


def _run(fn: Callable, modules: tuple, x: jax.Array, region: TileRegion | None, *, donate: bool = False):
    """:func:`run_stage` of ``fn``, inside ``region`` when one is given."""
    if region is None:
        return run_stage(fn, modules, x, donate=donate)
    return run_stage(in_region(fn), (*modules, region), x, donate=donate)


# stage functions (module-level so that cache keys are stable)
def _whole_decode(vae, z):
    return vae.decode_latent(z)


def _whole_encode(vae, x):
    return vae.encode_moments(x)


def _dec_head(pq, conv_in, mid, z):
    z = z.astype(conv_in.dtype)
    return mid(conv_in(pq(z)))


def _dec_head_noquant(conv_in, mid, z):
    return mid(conv_in(z.astype(conv_in.dtype)))


def _apply(module, x):
    return module(x)


def _upsample_then_block(upsample, block, x):
    return block.after_nearest_upsample(x, upsample)


def _norm_conv_tail(norm, conv, x):
    a, b = norm.affine(x)
    return conv(x, pre=ops.norm_silu_fn(a, b))


def _enc_head(conv_in, x):
    return conv_in(x.astype(conv_in.dtype))


def _enc_tail(mid, norm, conv, quant, x):
    h = _norm_conv_tail(norm, conv, mid(x))
    return quant(h).astype(F32)


def _enc_tail_noquant(mid, norm, conv, x):
    return _norm_conv_tail(norm, conv, mid(x)).astype(F32)


def decode_staged(vae: CausalVAE, z: jax.Array, region: TileRegion | None = None) -> jax.Array:
    """Decoder as a chain of compiled stages (see :class:`ComputeConfig`); same math as ``decode_latent``.
    ``region``: ``z`` is a zero-padded tile whose real part it gives (see :func:`in_region`)."""
    dec = vae.decoder
    if vae.post_quant_conv is not None:
        h = _run(_dec_head, (vae.post_quant_conv, dec.conv_in, dec.mid), z, region)
    else:
        h = _run(_dec_head_noquant, (dec.conv_in, dec.mid), z, region)
    pending_upsample = None
    for i in reversed(range(len(dec.up))):
        level = dec.up[i]
        for block in level.block:
            if pending_upsample is not None:
                h = _run(_upsample_then_block, (pending_upsample, block), h, region, donate=True)
                pending_upsample = None
            else:
                h = _run(_apply, (block,), h, region, donate=True)
        if level.upsample is not None:
            fusable = (
                vae.compute.fuse_upsample
                and level.upsample.kind == "SpatialUpsample2x"
                and i > 0
                and dec.up[i - 1].block[0].nin_shortcut is not None
            )
            if fusable:
                pending_upsample = level.upsample
            else:
                h = _run(_apply, (level.upsample,), h, region, donate=True)
    if pending_upsample is not None:  # pragma: no cover - no block after the last upsample
        h = _run(_apply, (pending_upsample,), h, region, donate=True)
    return _run(_norm_conv_tail, (dec.norm_out, dec.conv_out), h, region, donate=True)


def encode_staged(vae: CausalVAE, x: jax.Array) -> jax.Array:
    """Encoder (+ quant_conv) as a chain of compiled stages; float32 moments, same math as ``encode_moments``."""
    vae.require_encoder()
    enc = vae.encoder
    h = run_stage(_enc_head, (enc.conv_in,), x)
    n_levels = len(enc.down)
    for i, level in enumerate(enc.down):
        for block in level.block:
            h = run_stage(_apply, (block,), h, donate=True)
        # the mid block reads the last res block output: a downsample of the last level is never used
        if level.downsample is not None and i < n_levels - 1:
            h = run_stage(_apply, (level.downsample,), h, donate=True)
    if vae.quant_conv is not None:
        return run_stage(_enc_tail, (enc.mid, enc.norm_out, enc.conv_out, vae.quant_conv), h, donate=True)
    return run_stage(_enc_tail_noquant, (enc.mid, enc.norm_out, enc.conv_out), h, donate=True)


def _run_one(kind: str, vae: CausalVAE, x: jax.Array, region: TileRegion | None = None) -> jax.Array:
    if region is not None and kind != "decode":
        raise ValueError("uniform (zero-padded) tiles are supported for decoding only")
    if vae.compute.staged:
        return decode_staged(vae, x, region) if kind == "decode" else encode_staged(vae, x)
    return _run(_whole_decode if kind == "decode" else _whole_encode, (vae,), x, region)


def _padded_decode(vae: CausalVAE, z: jax.Array, base: tuple[int, int, int]) -> jax.Array:
    """Decode a latent tile (N, t, h, w, C) with (t, h, w) <= ``base`` as the first frames and top-left part of a
    zero-padded ``base`` tile (one program for every tile shape); returns the real part of the output."""
    _, t, h, w, _ = z.shape
    region = TileRegion(t, h, w, base)
    if (t, h, w) == tuple(base):
        return _run_one("decode", vae, z, region)
    padded = jnp.pad(z, ((0, 0), (0, base[0] - t), (0, base[1] - h), (0, base[2] - w), (0, 0)))
    out = _run_one("decode", vae, padded, region)
    scale = out.shape[2] // base[1]
    frames = t if base[0] == 1 else (t - 1) * ((out.shape[1] - 1) // (base[0] - 1)) + 1
    return out[:, :frames, : h * scale, : w * scale]


def _run_batched(kind: str, vae: CausalVAE, inputs: list[jax.Array], max_batch: int = 1,
                 uniform_size: tuple[int, int, int] | None = None) -> list[jax.Array]:
    """Run the encoder/decoder on each input; inputs of equal shape go together in batches of ``max_batch``.
    ``uniform_size`` (decoding): every input runs zero-padded to that (frames, rows, cols) (see
    :func:`_padded_decode`)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, x in enumerate(inputs):
        groups[(tuple(x.shape), str(x.dtype))].append(i)
    out: list[jax.Array | None] = [None] * len(inputs)
    for idxs in groups.values():
        for s in range(0, len(idxs), max_batch):
            part = idxs[s : s + max_batch]
            batch = inputs[part[0]] if len(part) == 1 else jnp.concatenate([inputs[i] for i in part], axis=0)
            if uniform_size is not None:
                res = _padded_decode(vae, batch, uniform_size)
            else:
                res = _run_one(kind, vae, batch)
            n = inputs[part[0]].shape[0]
            for k, i in enumerate(part):
                out[i] = res if len(part) == 1 else res[k * n : (k + 1) * n]
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- tiled paths
TileRunner = Callable[[list[jax.Array], int], list[jax.Array]]


def tile_runner(vae: CausalVAE, kind: str = "decode", *, uniform_size: tuple[int, int, int] | None = None
                ) -> TileRunner:
    """``run(tiles, max_batch)``: the model's decoder (or encoder) on a list of channels-last tiles, for
    :func:`tiled_apply` (equal-shape tiles batched up to ``max_batch``). ``uniform_size`` (decoder only): run
    every tile zero-padded to that (frames, rows, cols), so edge tiles and short time chunks share the programs
    of the largest tile."""
    if kind not in ("decode", "encode"):
        raise ValueError(f"kind must be 'decode' or 'encode', not {kind!r}")
    if uniform_size is not None and kind != "decode":
        raise ValueError("uniform (zero-padded) tiles are supported for decoding only")
    return partial(_run_batched, kind, vae, uniform_size=uniform_size)


def tiled_apply(run_tiles: TileRunner, x: jax.Array, **kw) -> jax.Array:
    """The release's time-chunk + spatial-tile driver on channels-last ``x`` (N, T, H, W, C): the pieces of
    :func:`tiled_apply_parts` (same keyword arguments) joined along time."""
    return join_time(tiled_apply_parts(run_tiles, x, **kw))


def join_time(parts: list[jax.Array]) -> jax.Array:
    """Time-ordered pieces (N, T_i, ...) -> (N, sum T_i, ...); one piece is returned as it is."""
    return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)


def tiled_apply_parts(
    run_tiles: TileRunner,
    x: jax.Array,
    *,
    in_size: int,
    in_t: int,
    out_size: int,
    overlap: float,
    max_tile_batch: int = 1,
) -> list[jax.Array]:
    """The release's time-chunk + spatial-tile driver on channels-last ``x`` (N, T, H, W, C), one output per
    time chunk, in order and without the frame a chunk shares with the one before: joined along axis 1 they are
    the whole output. Everything is dispatched before this returns (nothing waits for the device), so a caller
    can use the first chunk's output while the device computes the rest.

    ``run_tiles(tiles, max_batch)`` maps a list of input tiles to their outputs (the decoder or the encoder);
    ``in_size``/``in_t`` are the input tile size and chunk length, ``out_size`` the output tile size (blend
    width ``int(out_size * overlap)``, crop ``out_size - blend``). See :mod:`jax_vdit.vae.tiling`.
    """
    _, t, h, w, _ = x.shape
    rows, cols = tile_starts(h, in_size, overlap), tile_starts(w, in_size, overlap)
    extent = int(out_size * overlap)
    keep = out_size - extent
    chunks = time_chunks(t, in_t)

    def tiles_of(s: int, e: int) -> list[jax.Array]:
        return [x[:, s:e, i : i + in_size, j : j + in_size] for i in rows for j in cols]

    def assemble(flat: list[jax.Array]) -> jax.Array:
        grid = [flat[r * len(cols) : (r + 1) * len(cols)] for r in range(len(rows))]
        return assemble_tiles(grid, extent, keep)

    parts = []
    if max_tile_batch == 1:  # stream chunk by chunk: lowest memory
        for ci, (s, e) in enumerate(chunks):
            out = assemble(run_tiles(tiles_of(s, e), 1))
            parts.append(out if ci == 0 else out[:, 1:])
    else:  # equal-shape tiles of all chunks batched together
        per_chunk = [tiles_of(s, e) for s, e in chunks]
        flat = run_tiles([tl for tiles in per_chunk for tl in tiles], max_tile_batch)
        k = len(rows) * len(cols)
        for ci in range(len(chunks)):
            out = assemble(flat[ci * k : (ci + 1) * k])
            parts.append(out if ci == 0 else out[:, 1:])
    return parts


def decode_nthwc(vae: CausalVAE, z: jax.Array, *, tiling: TilingConfig | None = None) -> jax.Array:
    """Raw latent (N, t, h, w, C) -> video (N, T, H, W, 3) in the compute dtype, tiled as the release when
    ``tiling`` is given and the latent exceeds its tile sizes."""
    return join_time(decode_nthwc_parts(vae, z, tiling=tiling))


def decode_nthwc_parts(vae: CausalVAE, z: jax.Array, *, tiling: TilingConfig | None = None) -> list[jax.Array]:
    """:func:`decode_nthwc` as its time chunks' frames (N, T_i, H, W, 3), in order, all dispatched: joined along
    axis 1 they are the video. One part when the latent is decoded in one piece."""
    _check_nonempty("latent", z, "(N, t, h, w, C)")
    _, t, h, w, _ = z.shape
    if tiling is None or not tiling.decode_needs_tiling(t, h, w):
        return [_run_batched("decode", vae, [z], 1)[0]]
    size = tiling.tile_latent_min_size
    longest = max(e - s for s, e in time_chunks(t, tiling.tile_latent_min_size_t))
    uniform = (longest, min(size, h), min(size, w)) if tiling.uniform_tiles else None  # the grid's largest tile
    return tiled_apply_parts(
        tile_runner(vae, "decode", uniform_size=uniform),
        z,
        in_size=tiling.tile_latent_min_size,
        in_t=tiling.tile_latent_min_size_t,
        out_size=tiling.tile_sample_min_size,
        overlap=tiling.tile_overlap_factor,
        max_tile_batch=tiling.max_tile_batch,
    )


def encode_moments_nthwc(vae: CausalVAE, x: jax.Array, *, tiling: TilingConfig | None = None) -> jax.Array:
    """Video (N, T, H, W, 3) in [-1, 1] -> float32 moments (N, t, h, w, 2C), tiled as the release if asked.
    Raises :class:`~jax_vdit.vae.model.VAEEncoderMissingError` for a decoder-only VAE."""
    vae.require_encoder()
    _check_nonempty("video", x, "(N, T, H, W, 3)")
    _, t, h, w, _ = x.shape
    if tiling is None or not tiling.encode_needs_tiling(t, h, w):
        return _run_batched("encode", vae, [x], 1)[0]
    return tiled_apply(
        tile_runner(vae, "encode"),
        x,
        in_size=tiling.tile_sample_min_size,
        in_t=tiling.tile_sample_min_size_t,
        out_size=tiling.tile_latent_min_size,
        overlap=tiling.tile_overlap_factor,
        max_tile_batch=tiling.max_tile_batch,
    )


def _check_nonempty(name: str, x, layout: str) -> None:
    """Raise a ValueError naming the empty axis (e.g. 0 latent frames) before anything is compiled."""
    if x.ndim != 5:
        raise ValueError(f"{name} must have rank 5 {layout}; got shape {tuple(x.shape)}")
    empty = [axis for axis, n in zip(layout.strip("()").split(", "), x.shape) if n == 0]
    if empty:
        raise ValueError(f"{name} of shape {tuple(x.shape)} {layout} is empty along {', '.join(empty)}")


def _check_5d(name: str, x, channels: int) -> None:
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"{name} must have shape (B, {channels}, T, H, W); got {tuple(x.shape)}")


def decode(vae: CausalVAE, z: jax.Array, *, tiling: TilingConfig | None = None) -> jax.Array:
    """Raw latent (B, C, t, h, w) (already divided by 0.18215) -> video (B, 3, 4t-3, 8h, 8w), compute dtype,
    no clamp. ``tiling=None`` decodes in one piece; a :class:`TilingConfig` reproduces the release's tiles."""
    _check_5d("latent", z, vae.config.embed_dim)
    out = decode_nthwc(vae, jnp.transpose(jnp.asarray(z), (0, 2, 3, 4, 1)), tiling=tiling)
    return jnp.transpose(out, (0, 4, 1, 2, 3))


def encode(vae: CausalVAE, video: jax.Array, *, tiling: TilingConfig | None = None) -> DiagonalGaussian:
    """Video (B, 3, T, H, W) in [-1, 1] -> posterior over latents (B, C, ceil(T/4), H/8, W/8)."""
    _check_5d("video", video, 3)
    moments = encode_moments_nthwc(vae, jnp.transpose(jnp.asarray(video), (0, 2, 3, 4, 1)), tiling=tiling)
    return DiagonalGaussian.from_moments(moments)


@partial(jax.jit, static_argnums=0)
def _debug_pure(graphdef, state, video, latent):
    vae = nnx.merge(graphdef, state)
    out: dict = {}
    if video is not None:
        taps: dict = {}
        moments = vae.encode_moments(video, taps=taps)
        c = moments.shape[-1] // 2
        out.update(taps)
        out["posterior_mean"] = moments[..., :c]
        out["posterior_logvar"] = jnp.clip(moments[..., c:], LOGVAR_MIN, LOGVAR_MAX)
    if latent is not None:
        taps = {}
        out["decoded"] = vae.decode_latent(latent, taps=taps)
        out.update(taps)
    return out


def debug_taps(vae: CausalVAE, *, video: jax.Array | None = None, latent: jax.Array | None = None) -> dict:
    """Untiled outputs and intermediate taps, (B, C, T, H, W), in one jitted call -- for debugging against the
    reference: from ``video``: ``posterior_mean``, ``posterior_logvar``, ``enc_out_pre_quant`` (encoder output
    before quant_conv); from ``latent`` (raw): ``decoded``, ``dec_conv_in_out`` (decoder.conv_in output, after
    post_quant_conv) and ``dec_mid_out`` (decoder mid block output)."""
    graphdef, state = nnx.split(vae)
    to_cl = lambda a: None if a is None else jnp.transpose(jnp.asarray(a), (0, 2, 3, 4, 1))  # noqa: E731
    out = _debug_pure(graphdef, state, to_cl(video), to_cl(latent))
    return {k: jnp.transpose(v, (0, 4, 1, 2, 3)) for k, v in out.items()}
