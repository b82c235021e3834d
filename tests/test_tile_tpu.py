"""TPU backend: the splash-attention mask object (NumPy), kernel construction, and splash attention run in
interpret mode on CPU (outputs and gradients against the reference)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pallas_kernels import TileMask, dense_token_mask, tile_attention
from pallas_kernels.reference import reference_attention
from pallas_kernels.tpu import FrameTileSplashMask, frame_mask_terms, make_splash_kernel


@st.composite
def masks(draw):
    t = draw(st.integers(1, 12))
    kind = draw(st.sampled_from(["k_m", "window", "random"]))
    if kind == "k_m":
        return TileMask.k_m(draw(st.integers(0, t)), t)
    if kind == "window":
        return TileMask.window(draw(st.integers(0, 3)), t, num_global=draw(st.integers(0, min(2, t))))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    mat = rng.random((t, t)) < 0.4
    mat[np.arange(t), rng.integers(0, t, t)] = True
    return TileMask.from_array(mat)


@settings(max_examples=50, deadline=None)
@given(mask=masks(), f=st.integers(1, 9), extra=st.integers(0, 20))
def test_splash_mask_object_equals_dense_token_mask(mask, f, extra):
    n = mask.num_frames * f
    p = n + extra
    m = FrameTileSplashMask(mask, f, p)
    assert m.shape == (p, p)
    dense = dense_token_mask(mask, f, p)
    assert np.array_equal(m[:, :], dense)
    assert np.array_equal(m[3:p:1, 0:p // 2], dense[3:, :p // 2])


def test_k_m_decomposes_into_a_band_and_few_rectangles():
    w, rects = frame_mask_terms(TileMask.from_string("3:21"))
    assert w == 0 and len(rects) <= 3  # the diagonal band, the global rows, the global columns
    w, rects = frame_mask_terms(TileMask.window(2, 10, num_global=1))
    assert w == 2 and len(rects) == 2
    assert frame_mask_terms(TileMask.full(5)) == (4, ())


def test_mask_object_hash_and_kernel_construction():
    a = FrameTileSplashMask(TileMask.k_m(1, 4), 64, 256)
    assert a == FrameTileSplashMask(TileMask.k_m(1, 4), 64, 256) and hash(a) == hash(
        FrameTileSplashMask(TileMask.k_m(1, 4), 64, 256))
    assert a != FrameTileSplashMask(TileMask.k_m(2, 4), 64, 256)
    kernel = make_splash_kernel(TileMask.k_m(1, 4), 64, 256, 2, 128, True)
    assert make_splash_kernel(TileMask.k_m(1, 4), 64, 256, 2, 128, True) is kernel


@pytest.mark.parametrize("spec,t,f", [("1:3", 4, 40), ("window:1:1", 3, 64)])
def test_splash_interpret_matches_reference(spec, t, f):
    mask = TileMask.from_string(spec, t)
    n = t * f
    ks = jax.random.split(jax.random.key(t), 4)
    q, k, v, do = (jax.random.normal(x, (2, n, 2, 32), jnp.float32) for x in ks)

    def run(fn):
        def go(q, k, v, do):
            out, pull = jax.vjp(fn, q, k, v)
            return out, pull(do)
        return jax.jit(go)(q, k, v, do)

    got = run(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="tpu", interpret=True))
    ref = run(lambda q, k, v: reference_attention(q, k, v, mask, tokens_per_frame=f))
    for g, r in zip((got[0], *got[1]), (ref[0], *ref[1])):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=1e-4, rtol=1e-4)
