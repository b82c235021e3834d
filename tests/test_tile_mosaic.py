"""Mosaic GPU backend: the host-side pieces on CPU, the kernel's control flow in jax's Mosaic GPU interpret mode
(slow), and the real kernel on a Hopper GPU (skipped elsewhere)."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pallas_kernels import TileMask, block_layout, dense_token_mask, padded_length, tile_attention
from pallas_kernels.mosaic_gpu import MosaicConfig, is_hopper, launch_order, mosaic_forward, pair_coefficients
from pallas_kernels.reference import reference_attention


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_pair_coefficients_reproduce_the_tile_matrix(t, seed):
    """The in-kernel bilinear rule b0 + c1 ks + c2 qs + c3 qs ks picks M at the four frame pairs around a boundary."""
    rng = np.random.default_rng(seed)
    mat = rng.random((t, t)) < 0.5
    mat[np.arange(t), rng.integers(0, t, t)] = True
    mask = TileMask.from_array(mat)
    coef = pair_coefficients(mask).reshape(t, t, 4)
    ext = np.zeros((t, t + 1), bool)
    ext[:, :t] = mat  # key frame T = padding, never kept
    for a in range(t):
        for c in range(t):
            for qs in (0, 1):
                for ks in (0, 1):
                    c0, c1, c2, c3 = coef[a, c]
                    val = c0 + c1 * ks + c2 * qs + c3 * qs * ks
                    assert (val > 0) == ext[min(a + qs, t - 1), c + ks]


def test_launch_order_is_a_heavy_first_permutation():
    mask = TileMask.from_string("1:7")
    lay = block_layout(mask, 3600, 128, 128)
    qb, hh = launch_order(lay.forward.counts, 24, lpt=True)
    pairs = set(zip(qb.tolist(), hh.tolist()))
    assert len(pairs) == lay.num_q_blocks * 24 == qb.size
    work = lay.forward.counts[qb]
    assert (np.diff(work) <= 0).all()  # non-increasing work
    plain_q, plain_h = launch_order(lay.forward.counts, 24, lpt=False)
    assert (np.diff(plain_h) >= 0).all() and plain_q[:3].tolist() == [0, 1, 2]


def test_config_validation():
    with pytest.raises(ValueError, match="block_q must be 64"):
        MosaicConfig(block_q=128)
    with pytest.raises(ValueError, match="block_kv must be a multiple of 64"):
        MosaicConfig(block_kv=96)
    with pytest.raises(ValueError, match="backward must be"):
        MosaicConfig(backward="cudnn")


def _interpret_available() -> bool:
    return importlib.util.find_spec("jax._src.pallas.mosaic_gpu.interpret") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _interpret_available(), reason="this jax has no Mosaic GPU interpret mode")
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="a CPU test (the interpreter is slow on GPU hosts)")
def test_kernel_control_flow_in_mosaic_gpu_interpret_mode():
    """Runs the real kernel body (TMA ring, barriers, block lists, partial-block masking, padding) on CPU through
    jax's Mosaic GPU interpreter; only the two matrix products are plain dots there. A frame boundary falls inside
    query and key blocks, a query warpgroup's first key block is fully masked, and N is padded."""
    t, f, d = 3, 160, 32
    mask = TileMask.from_string("0:3")
    cfg = MosaicConfig(block_kv=128)
    n = t * f
    ks = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(x, (1, n, 1, d), jnp.float32).astype(jnp.bfloat16) for x in ks)
    np_ = padded_length(n, 128)
    lay = block_layout(mask, f, 128, 128, np_)
    assert lay.padded_len > n and (lay.status == 2).any()
    pad = ((0, 0), (0, np_ - n), (0, 0), (0, 0))
    out, lse = mosaic_forward(*(jnp.pad(x, pad) for x in (q, k, v)), lay, scale=d**-0.5, cfg=cfg, interpret=True)
    ref = reference_attention(q, k, v, mask, tokens_per_frame=f)
    np.testing.assert_allclose(np.asarray(out[:, :n], np.float32), np.asarray(ref, np.float32), atol=2e-2)
    assert bool(jnp.isfinite(lse).all())
    assert dense_token_mask(mask, f, np_)[:n].any(1).all()


def _on_hopper() -> bool:
    return jax.default_backend() == "gpu" and is_hopper()


@pytest.mark.gpu
@pytest.mark.skipif(not _on_hopper(), reason="needs a Hopper GPU (H100/H200)")
@pytest.mark.parametrize("spec,t,f,backward", [("1:3", 4, 256, "gather"), ("window:1", 5, 200, "triton"),
                                               ("full", 3, 128, "triton")])
def test_mosaic_gpu_matches_reference_on_hopper(spec, t, f, backward):
    mask = TileMask.from_string(spec, t)
    n = t * f
    ks = jax.random.split(jax.random.key(1), 4)
    q, k, v, do = (jax.random.normal(x, (2, n, 4, 96), jnp.float32).astype(jnp.bfloat16) for x in ks)
    cfg = MosaicConfig(backward=backward)

    def run(fn):
        def go(q, k, v, do):
            out, pull = jax.vjp(fn, q, k, v)
            return out, pull(do)
        return jax.jit(go)(q, k, v, do)

    got = run(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="mosaic_gpu", config=cfg))
    ref = run(lambda q, k, v: reference_attention(q.astype(jnp.float32), k.astype(jnp.float32),
                                                  v.astype(jnp.float32), mask, tokens_per_frame=f))
    fwd_only = jax.jit(lambda q, k, v: tile_attention(q, k, v, mask, tokens_per_frame=f, backend="mosaic_gpu"))
    for g, r in zip((fwd_only(q, k, v), got[0], *got[1]), (ref[0], ref[0], *ref[1])):
        err = float(jnp.linalg.norm((g.astype(jnp.float32) - r.astype(jnp.float32)).ravel())
                    / jnp.linalg.norm(r.astype(jnp.float32).ravel()))
        assert err < 2e-2
