"""tile_attention: the triton (interpret mode) and gather backends against the dense masked reference, outputs and
gradients, on random tiny shapes and masks; full mask == dense attention; clear errors for bad input."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import pallas_kernels as pk
from pallas_kernels import TileMask, tile_attention
from pallas_kernels.reference import framewise_attention, reference_attention
from pallas_kernels.triton import TritonConfig

# small power-of-two blocks so that tiny sequences still have several blocks, frame boundaries inside blocks,
# blocks spanning several frames (F < block) and padding (N not a multiple of the block)
SMALL_BLOCKS = TritonConfig(block_q=16, block_kv=8, block_q_bwd=8, block_kv_bwd=16)


@st.composite
def problems(draw):
    t = draw(st.integers(1, 9))
    kind = draw(st.sampled_from(["k_m", "k_m", "window", "random"]))
    if kind == "k_m":
        mask = TileMask.k_m(draw(st.integers(0, t)), t)
    elif kind == "window":
        mask = TileMask.window(draw(st.integers(0, 2)), t, num_global=draw(st.integers(0, min(1, t))))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        mat = rng.random((t, t)) < 0.35
        mat[np.arange(t), rng.integers(0, t, t)] = True
        mask = TileMask.from_array(mat)
    f = draw(st.sampled_from([3, 5, 8, 13, 16]))  # 8 and 16 divide the blocks, the others do not
    b = draw(st.integers(1, 2))
    h = draw(st.integers(1, 2))
    d = draw(st.sampled_from([8, 12]))  # 12: not a power of two (padded inside the Triton kernel)
    seed = draw(st.integers(0, 2**31 - 1))
    return mask, f, b, h, d, seed


def _inputs(b, n, h, d, seed, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(seed), 4)
    q, k, v, do = (jax.random.normal(x, (b, n, h, d), jnp.float32) for x in ks)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), do


def _value_and_grads(fn, q, k, v, do):
    """Output and (dq, dk, dv) for cotangent ``do``, in one jitted computation (one compile instead of many)."""
    def run(q, k, v, do):
        out, pull = jax.vjp(fn, q, k, v)
        return out, pull(do.astype(out.dtype))
    return jax.jit(run)(q, k, v, do)


def _check_against_reference(backend, mask, f, b, h, d, seed, config=None, atol=2e-5):
    q, k, v, do = _inputs(b, mask.num_frames * f, h, d, seed)
    ref = _value_and_grads(lambda q, k, v: reference_attention(q, k, v, mask, tokens_per_frame=f), q, k, v, do)
    got = _value_and_grads(
        lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend=backend, interpret=True,
                                       config=config), q, k, v, do)
    for name, g, r in zip(("out", "dq", "dk", "dv"), (got[0], *got[1]), (ref[0], *ref[1])):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=atol, rtol=1e-4, err_msg=f"{backend} {name}")


@settings(max_examples=4, deadline=None)
@given(problems())
@example((TileMask.full(1), 5, 1, 1, 8, 0))  # one frame, N smaller than a block
@example((TileMask.k_m(1, 9), 13, 1, 2, 12, 1))  # T = 9, F does not divide the blocks, head dim 12
def test_triton_interpret_matches_reference(problem):
    mask, f, b, h, d, seed = problem
    _check_against_reference("triton", mask, f, b, h, d, seed, config=SMALL_BLOCKS)


@settings(max_examples=5, deadline=None)
@given(problems())
@example((TileMask.window(1, 7, num_global=1), 8, 2, 2, 8, 2))
def test_gather_matches_reference(problem):
    mask, f, b, h, d, seed = problem
    _check_against_reference("gather", mask, f, b, h, d, seed)


@settings(max_examples=5, deadline=None)
@given(problems())
@example((TileMask.k_m(1, 9), 13, 2, 2, 12, 3))  # T = 9, several (batch, head) chunks
def test_cpu_backend_matches_reference(problem):
    mask, f, b, h, d, seed = problem
    _check_against_reference("cpu", mask, f, b, h, d, seed)


def test_cpu_backend_in_small_chunks_matches_reference():
    """One (batch, head) pair per lax.map step gives the same values as one chunk."""
    from pallas_kernels.cpu import chunked_attention
    from pallas_kernels.reference import token_mask

    mask, f = TileMask.window(1, 5), 6
    q, k, v, _ = _inputs(2, 5 * f, 3, 8, 4)
    out = chunked_attention(q, k, v, token_mask=token_mask(mask, f), max_score_bytes=1)
    np.testing.assert_allclose(np.asarray(out), np.asarray(reference_attention(q, k, v, mask, tokens_per_frame=f)),
                               atol=2e-5)


def test_triton_default_blocks_bf16_toy_world_like():
    """Default (GPU) block sizes, bf16 inputs, F much smaller than the block, a 1:8-style mask on T=9."""
    mask, f = TileMask.from_string("1:8"), 16
    q, k, v, do = _inputs(1, 9 * f, 2, 16, 0, jnp.bfloat16)
    ref_fn = lambda q, k, v: reference_attention(q.astype(jnp.float32), k.astype(jnp.float32),  # noqa: E731
                                                 v.astype(jnp.float32), mask, tokens_per_frame=f)
    ref = _value_and_grads(ref_fn, q, k, v, do)
    got = _value_and_grads(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="triton",
                                                          interpret=True), q, k, v, do)
    assert got[0].dtype == jnp.bfloat16 and got[1][0].dtype == jnp.bfloat16
    for g, r in zip((got[0], *got[1]), (ref[0], *ref[1])):
        err = np.linalg.norm(np.asarray(g, np.float32) - np.asarray(r)) / np.linalg.norm(np.asarray(r))
        assert err < 2e-2


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_gather_low_precision(dtype):
    mask, f = TileMask.k_m(2, 5), 7
    q, k, v, _ = _inputs(2, 5 * f, 3, 16, 3, dtype)
    out = jax.jit(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="gather"))(q, k, v)
    ref = jax.jit(lambda q, k, v: reference_attention(q, k, v, mask, tokens_per_frame=f))(
        *(x.astype(jnp.float32) for x in (q, k, v)))
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=2e-2)


@pytest.mark.parametrize("backend", ["reference", "gather", "triton", "cpu"])
def test_full_mask_equals_dense_attention(backend):
    t, f = 3, 10
    q, k, v, _ = _inputs(2, t * f, 2, 16, 1)
    dense = jax.nn.dot_product_attention(q, k, v, implementation="xla")
    out = jax.jit(lambda q, k, v: tile_attention(q, k, v, TileMask.full(t), tokens_per_frame=f, backend=backend,
                                                 interpret=True,
                                                 config=SMALL_BLOCKS if backend == "triton" else None))(q, k, v)
    np.testing.assert_allclose(np.asarray(out), np.asarray(dense), atol=2e-5)


def test_custom_scale_and_bool_matrix_input():
    mat = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=bool)
    q, k, v, _ = _inputs(1, 3 * 4, 1, 8, 5)
    a = jax.jit(lambda q, k, v: tile_attention(q, k, v, mat, tokens_per_frame=4, backend="gather", scale=0.3))(
        q, k, v)
    b = jax.jit(lambda q, k, v: tile_attention(q, k, v, TileMask.from_array(mat), tokens_per_frame=4,
                                               backend="triton", interpret=True, scale=0.3,
                                               config=SMALL_BLOCKS))(q, k, v)
    r = jax.jit(lambda q, k, v: reference_attention(q, k, v, TileMask.from_array(mat), tokens_per_frame=4,
                                                    scale=0.3))(q, k, v)
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=2e-5)
    np.testing.assert_allclose(np.asarray(b), np.asarray(r), atol=2e-5)


def test_framewise_reference_equals_dense_reference():
    mask, f = TileMask.window(1, 6, num_global=1), 5
    q, k, v, _ = _inputs(2, 6 * f, 2, 8, 7)
    fw = jax.jit(lambda q, k, v: framewise_attention(q, k, v, mask, tokens_per_frame=f))(q, k, v)
    ref = jax.jit(lambda q, k, v: reference_attention(q, k, v, mask, tokens_per_frame=f))(q, k, v)
    np.testing.assert_allclose(np.asarray(fw), np.asarray(ref), atol=2e-5)


def test_masked_keys_have_no_influence():
    """Changing keys/values of dropped tiles leaves the output unchanged (and their gradients are zero)."""
    mask, f = TileMask.k_m(1, 3), 4  # frame 1 never sees frame 2
    q, k, v, _ = _inputs(1, 12, 1, 8, 9)
    fn = jax.jit(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="triton",
                                                interpret=True, config=SMALL_BLOCKS))
    out = fn(q, k, v)
    k2, v2 = k.at[:, 8:].add(3.0), v.at[:, 8:].add(3.0)
    np.testing.assert_allclose(np.asarray(fn(q, k2, v2)[:, 4:8]), np.asarray(out[:, 4:8]), atol=1e-6)
    dk = jax.grad(lambda k: fn(q, k, v)[:, 4:8].sum())(k)
    assert float(jnp.abs(dk[:, 8:]).max()) == 0.0


def test_inside_jit_and_auto_backend_on_cpu():
    mask, f = TileMask.k_m(1, 4), 3
    q, k, v, _ = _inputs(1, 12, 2, 8, 11)
    if jax.default_backend() == "cpu":
        assert pk.resolve_backend("auto") == "cpu"
    f_jit = jax.jit(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="reference"))
    np.testing.assert_allclose(np.asarray(f_jit(q, k, v)),
                               np.asarray(reference_attention(q, k, v, mask, tokens_per_frame=f)), atol=1e-6)
    g = jax.jit(jax.grad(lambda q: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="gather").sum()))(q)
    assert g.shape == q.shape and bool(jnp.isfinite(g).all())


# ------------------------------------------------------------------------------------------------ errors
def _qkv(shape=(1, 12, 2, 8), dtype=jnp.float32):
    x = jnp.zeros(shape, dtype)
    return x, x, x


@pytest.mark.parametrize("args,kwargs,match", [
    ((jnp.zeros((12, 2, 8)),) * 3, {}, r"q must have rank 4 \(batch, tokens, heads, head_dim\)"),
    ((jnp.zeros((1, 12, 2, 8)), jnp.zeros((1, 12, 2, 8)), jnp.zeros((1, 12, 3, 8))), {},
     "q, k and v must have the same shape"),
    ((jnp.zeros((1, 12, 2, 8)), jnp.zeros((1, 10, 2, 8)), jnp.zeros((1, 10, 2, 8))), {},
     "q, k and v must have the same shape"),
    ((jnp.zeros((1, 12, 2, 8)), jnp.zeros((1, 12, 2, 8), jnp.bfloat16), jnp.zeros((1, 12, 2, 8))), {},
     "same dtype"),
    (_qkv(dtype=jnp.int32), {}, "bfloat16, float16 or float32"),
    (_qkv(), {"tokens_per_frame": 5}, r"N=12 must equal T \* tokens_per_frame = 4 \* 5 = 20"),
    (_qkv(), {"tokens_per_frame": 0}, "tokens_per_frame must be a positive int"),
    (_qkv(), {"backend": "cuda"}, "unknown tile attention backend 'cuda'"),
])
def test_bad_inputs_raise_clear_errors(args, kwargs, match):
    kw = {"tokens_per_frame": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        tile_attention(*args, TileMask.k_m(1, 4), **kw)


@pytest.mark.parametrize("mask,match", [
    (np.ones((4, 3), bool), "square"),
    (np.ones((4, 4), np.float32), "boolean"),
    (np.eye(4, dtype=bool) & ~np.eye(4, k=0, dtype=bool), "empty rows"),
    (np.ones((2, 2, 2), bool), "2-D"),
])
def test_bad_masks_raise_clear_errors(mask, match):
    with pytest.raises(ValueError, match=match):
        tile_attention(*_qkv(), mask, tokens_per_frame=3, backend="reference")


def test_mosaic_gpu_limits_are_reported():
    q = jnp.zeros((1, 12, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="tokens_per_frame >= block_kv=128"):
        tile_attention(q, q, q, TileMask.k_m(1, 4), tokens_per_frame=3, backend="mosaic_gpu")
    q = jnp.zeros((1, 4 * 128, 1, 64), jnp.float32)
    with pytest.raises(ValueError, match="bfloat16 and float16"):
        tile_attention(q, q, q, TileMask.k_m(1, 4), tokens_per_frame=128, backend="mosaic_gpu")
    q = q.astype(jnp.bfloat16)
    with pytest.raises(ValueError, match="no interpret mode"):
        tile_attention(q, q, q, TileMask.k_m(1, 4), tokens_per_frame=128, backend="mosaic_gpu", interpret=True)


def test_default_scale_is_inverse_sqrt_head_dim():
    mask, f = TileMask.full(2), 3
    q, k, v, _ = _inputs(1, 6, 1, 16, 2)
    a = jax.jit(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="gather"))(q, k, v)
    b = jax.jit(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="gather",
                                               scale=1 / math.sqrt(16)))(q, k, v)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
