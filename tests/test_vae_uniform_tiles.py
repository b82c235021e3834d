"""Uniform VAE tiles (``TilingConfig(uniform_tiles=True)``): every spatial tile decoded zero-padded to the full tile
size with its real part passed as data. Each op inside ``ops.valid_region`` must give, on the real part, what it
gives on the unpadded tile, whatever lies outside; the whole tiled decode must equal the exact-shape decode up to
float rounding while compiling one set of stage programs for all tile shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit.vae import TilingConfig, VAEConfig, clear_compile_cache, compile_log, random_vae
from jax_vdit.vae import ops
from jax_vdit.vae.runtime import TileRegion, decode_nthwc, in_region, tile_runner
from jax_vdit.vae.warmup import plan_decode, precompile

MICRO = VAEConfig.micro()  # every decoder stage kind: 3-D blocks, attention, a fused spatial and a space-time upsample
TILES = dict(tile_sample_min_size=16, tile_latent_min_size=4, tile_sample_min_size_t=5, tile_latent_min_size_t=2,
             tile_overlap_factor=0.25)
LATENT = (1, 3, 6, 7, 4)  # (N, t, h, w, C): edge tiles of 3 shapes beside the 4x4 interior tiles
BASE = (6, 8)  # padded size of the op tests
REAL = (4, 5)  # the real part
FRAMES = (5, 3)  # padded and real frames of the op tests that pad time too


@pytest.fixture
def vae(micro_vae):
    return micro_vae  # tests/conftest.py: shared by the VAE stage tests


pytestmark = pytest.mark.usefixtures("fresh_vae_stage_cache")


def _padded_with_garbage(x: jax.Array, frames: int | None = None) -> jax.Array:
    """``x`` (N, T, h, w, C) placed top-left in a BASE tile (of ``frames`` frames, if given) whose rest holds
    large random values."""
    n, t, h, w, c = x.shape
    big = 100.0 * jax.random.normal(jax.random.key(99), (n, frames or t, *BASE, c))
    return big.at[:, :t, :h, :w].set(x)


def _in_region(fn, *args, frames: bool = False):
    """``fn(*args)`` traced (jitted) inside a valid region of REAL in BASE (and FRAMES if ``frames``)."""
    time = dict(frames=FRAMES[1], base_frames=FRAMES[0]) if frames else {}
    with ops.valid_region(REAL[0], REAL[1], *BASE, **time):
        return jax.jit(fn)(*args)


def _real(y: jax.Array, scale: int = 1, frames: int | None = None) -> jax.Array:
    return y[:, :frames, : REAL[0] * scale, : REAL[1] * scale]


@pytest.mark.parametrize("per_frame, pad_time", [(False, False), (True, False), (False, True)])
def test_group_norm_statistics_of_the_real_part_only(per_frame, pad_time):
    x = jax.random.normal(jax.random.key(0), (2, FRAMES[1], *REAL, 64)) * 3 + 1
    mean, rstd = ops.group_norm_stats(x, 32, per_frame=per_frame)
    got_mean, got_rstd = _in_region(lambda a: ops.group_norm_stats(a, 32, per_frame=per_frame),
                                    _padded_with_garbage(x, FRAMES[0] if pad_time else None), frames=pad_time)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_rstd, rstd, rtol=1e-5)


@pytest.mark.parametrize("impl", ["conv3d", "stack", "taps"])
def test_conv_reads_zeros_outside_the_real_part(impl):
    k = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k[0], (1, 4, *REAL, 8))
    kernel = jax.random.normal(k[1], (3, 3, 3, 8, 16)) * 0.1
    bias = jax.random.normal(k[2], (16,))
    pre = ops.norm_silu_fn(jnp.full((1, 1, 1, 1, 8), 0.5), jnp.full((1, 1, 1, 1, 8), 0.1))  # non-zero on zeros
    want = ops.causal_conv(x, kernel, bias, pre=pre, impl=impl)
    got = _in_region(lambda a: ops.causal_conv(a, kernel, bias, pre=pre, impl=impl), _padded_with_garbage(x))
    np.testing.assert_allclose(_real(got), want, rtol=1e-5, atol=1e-5)


def test_strided_conv_in_a_region_is_refused():
    x = jnp.zeros((1, 3, *BASE, 8))
    kernel = jnp.zeros((3, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="stride-1"):
        _in_region(lambda a: ops.causal_conv(a, kernel, jnp.zeros(8), stride=(2, 2, 2)), x)


def test_nearest_upsample_conv_and_linear_upsample_clamp_at_the_real_edge():
    k = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(k[0], (1, 3, *REAL, 8))
    kernel = jax.random.normal(k[1], (1, 3, 3, 8, 8)) * 0.1
    bias = jax.random.normal(k[2], (8,))
    want = jax.jit(lambda a: ops.upsample_nearest_conv(a, kernel, bias))(x)
    got = _in_region(lambda a: ops.upsample_nearest_conv(a, kernel, bias), _padded_with_garbage(x))
    np.testing.assert_allclose(_real(got, 2), want, rtol=1e-5, atol=1e-5)

    # bilinear x2 in space and linear x2 in time: clamps at the last real row, column and frame
    want = jax.jit(lambda a: ops.upsample_first_frame_apart(a, jnp.float32))(x)
    got = _in_region(lambda a: ops.upsample_first_frame_apart(a, jnp.float32), _padded_with_garbage(x, FRAMES[0]),
                     frames=True)
    assert got.shape[1] == 2 * FRAMES[0] - 1
    np.testing.assert_allclose(_real(got, 2, frames=want.shape[1]), want, rtol=1e-6, atol=1e-6)


def test_frame_attention_ignores_keys_outside_the_real_part():
    q, k, v = (jax.random.normal(key, (1, 2, *REAL, 16)) for key in jax.random.split(jax.random.key(3), 3))
    want = ops.frame_attention(q, k, v)
    got = _in_region(lambda *a: ops.frame_attention(*a), *(_padded_with_garbage(a) for a in (q, k, v)))
    np.testing.assert_allclose(_real(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pad_time", [False, True])
def test_group_stats_and_map_moments_of_the_real_part_only(pad_time):
    x = jax.random.normal(jax.random.key(4), (1, FRAMES[1], *REAL, 32))
    up = lambda a: jnp.repeat(jnp.repeat(a, 2, axis=2), 2, axis=3)  # noqa: E731
    kwargs = dict(num_groups=32, eps=1e-6, chunk=2, up_hwc=None, map_c=32, out_dtype=jnp.float32)
    want_mean, want_rstd, _ = ops.group_stats_and_map(x, up, None, **(kwargs | {"up_hwc": (8, 10, 32)}))
    got_mean, got_rstd, _ = _in_region(  # with time padded, the last chunk (frames 4..5) holds no real frame
        lambda a: ops.group_stats_and_map(a, up, None, **(kwargs | {"up_hwc": (12, 16, 32)})),
        _padded_with_garbage(x, FRAMES[0] if pad_time else None), frames=pad_time)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_rstd, want_rstd, rtol=1e-5)


def test_uniform_tiles_decode_equals_exact_tiles_with_fewer_programs(vae):
    z = jax.random.normal(jax.random.key(5), LATENT)
    exact = decode_nthwc(vae, z, tiling=TilingConfig(**TILES))
    n_exact = len(compile_log())
    clear_compile_cache()
    uniform = decode_nthwc(vae, z, tiling=TilingConfig(**TILES, uniform_tiles=True))
    n_uniform = len(compile_log())
    assert uniform.shape == exact.shape == (1, 5, 24, 28, 3)
    scale = float(jnp.max(jnp.abs(exact)))
    assert float(jnp.max(jnp.abs(uniform - exact))) < 2e-5 * max(scale, 1.0)
    spatial_shapes = {e["shape"][2:4] for e in compile_log()}
    assert spatial_shapes <= {(4, 4), (8, 8), (16, 16)}, spatial_shapes  # the padded tile at each resolution
    assert n_uniform * 2 <= n_exact  # 4 tile shapes compiled before, 1 now
    assert all(e["stage"].endswith("_in_region") for e in compile_log())


SHORT_CHUNK = dict(TILES, tile_sample_min_size_t=9, tile_latent_min_size_t=3)  # chunks of 3 and 2 latent frames
SHORT_LATENT = (1, 4, 6, 7, 4)


@pytest.fixture(scope="module")
def short_chunk_reference(micro_vae):
    """The exact-shape decode of a latent whose last time chunk is shorter, and the chunk lengths it compiled."""
    clear_compile_cache()
    z = jax.random.normal(jax.random.key(7), SHORT_LATENT)
    exact = decode_nthwc(micro_vae, z, tiling=TilingConfig(**SHORT_CHUNK))
    frames = {e["shape"][1] for e in compile_log() if e["stage"] == "_dec_head"}
    clear_compile_cache()
    return z, exact, frames


@pytest.mark.parametrize("tile_batch, compute", [
    (3, {}),  # equal tiles batched, the default compute settings
    (1, dict(conv_impl="stack", chunk_bytes=1 << 12)),  # frame chunks in loops: traced chunk starts in the masks
    (1, dict(staged=False)),  # one program for the whole decoder
])
def test_uniform_tiles_pad_the_short_last_time_chunk_too(short_chunk_reference, tile_batch, compute):
    """The short chunk runs padded to 3 frames in the longest chunk's programs, under every compute setting (the
    weights depend on the seed only, so the reference decode is shared)."""
    from jax_vdit.vae.config import ComputeConfig

    z, exact, exact_frames = short_chunk_reference
    vae = random_vae(MICRO, seed=0, dtype=jnp.float32, compute=ComputeConfig(**compute))
    uniform = decode_nthwc(vae, z, tiling=TilingConfig(**SHORT_CHUNK, max_tile_batch=tile_batch, uniform_tiles=True))
    assert exact_frames == {2, 3}
    head = "_whole_decode_in_region" if compute.get("staged") is False else "_dec_head_in_region"
    assert {e["shape"][1] for e in compile_log() if e["stage"] == head} == {3}
    assert uniform.shape == exact.shape == (1, 7, 24, 28, 3)
    assert float(jnp.max(jnp.abs(uniform - exact))) < 2e-5 * max(float(jnp.max(jnp.abs(exact))), 1.0)


def test_uniform_tiles_plan_compiles_everything_the_decode_needs(vae):
    tiling = TilingConfig(**TILES, uniform_tiles=True)
    calls = plan_decode(vae, (1, 4, 3, 6, 7), tiling=tiling)
    assert precompile(calls, workers=1).compiled == len(calls)
    n = len(compile_log())
    decode_nthwc(vae, jax.random.normal(jax.random.key(6), LATENT), tiling=tiling)
    assert len(compile_log()) == n  # nothing left to compile


def test_uniform_tiles_are_for_decoding_only(vae):
    with pytest.raises(ValueError, match="decoding only"):
        tile_runner(vae, "encode", uniform_size=(2, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        TileRegion(2, 5, 4, (2, 4, 4))


def test_region_stage_is_one_function_per_stage():
    def stage(module, x):
        return x

    assert in_region(stage) is in_region(stage)
    assert in_region(stage).__qualname__.endswith("[in_region]")

