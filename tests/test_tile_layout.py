"""Block layout against a dense NumPy reference of the token mask (small shapes)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pallas_kernels import TileMask, block_layout, dense_token_mask, padded_length, row_key_bits
from pallas_kernels.layout import EMPTY, FULL, PARTIAL


@st.composite
def masks(draw, max_frames: int = 9):
    t = draw(st.integers(1, max_frames))
    kind = draw(st.sampled_from(["k_m", "window", "random", "full"]))
    if kind == "k_m":
        return TileMask.k_m(draw(st.integers(0, t)), t)
    if kind == "window":
        return TileMask.window(draw(st.integers(0, 3)), t, num_global=draw(st.integers(0, min(2, t))))
    if kind == "full":
        return TileMask.full(t)
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    mat = rng.random((t, t)) < draw(st.floats(0.05, 0.9))
    mat[np.arange(t), rng.integers(0, t, t)] = True
    return TileMask.from_array(mat)


def _reference_status(token_mask: np.ndarray, bq: int, bk: int) -> np.ndarray:
    p = token_mask.shape[0]
    blocks = token_mask.reshape(p // bq, bq, p // bk, bk).transpose(0, 2, 1, 3)
    kept = blocks.sum((2, 3))
    status = np.full(kept.shape, EMPTY)
    status[kept > 0] = PARTIAL
    status[kept == bq * bk] = FULL
    return status


@settings(max_examples=60, deadline=None)
@given(mask=masks(), f=st.integers(1, 40), bq=st.sampled_from([4, 8, 16, 32]), bk=st.sampled_from([4, 8, 16, 32]))
def test_layout_matches_dense_token_mask(mask, f, bq, bk):
    lay = block_layout(mask, f, bq, bk)
    n = mask.num_frames * f
    assert lay.seq_len == n and lay.padded_len == padded_length(n, bq, bk) >= n
    dense = dense_token_mask(mask, f, lay.padded_len)
    # the semantics: real rows/keys follow the tile mask; padded keys never; padded rows act as the last frame
    frames = np.arange(n) // f
    assert np.array_equal(dense[:n, :n], mask.matrix[frames[:, None], frames[None, :]])
    assert not dense[:, n:].any()
    ref = _reference_status(dense, bq, bk)
    assert np.array_equal(lay.status, ref)
    # forward list: every non-empty key block exactly once, full blocks first, partial flags right
    for qb in range(lay.num_q_blocks):
        visited = lay.forward.visited(qb)
        cols = [c for c, _ in visited]
        assert sorted(cols) == list(np.flatnonzero(ref[qb] != EMPTY))
        flags = [p for _, p in visited]
        assert flags == sorted(flags)  # full (False) before partial (True)
        assert all(p == (ref[qb, c] == PARTIAL) for c, p in visited)
        assert lay.forward.num_full[qb] == (ref[qb] == FULL).sum()
    # transposed list: the same pairs seen from the key side
    for kb in range(lay.num_kv_blocks):
        visited = lay.transposed.visited(kb)
        assert sorted(c for c, _ in visited) == list(np.flatnonzero(ref[:, kb] != EMPTY))
        assert all(p == (ref[r, kb] == PARTIAL) for r, p in visited)
    # every query row keeps at least one key, so every query block visits something
    assert (lay.forward.counts > 0).all()
    assert lay.forward.num_visits == lay.transposed.num_visits


@settings(max_examples=40, deadline=None)
@given(mask=masks(max_frames=40), f=st.integers(1, 12))
def test_row_key_bits(mask, f):
    n = mask.num_frames * f
    p = padded_length(n, 16)
    bits = row_key_bits(mask, f, p).view(np.uint32)
    assert bits.shape == (p, -(-mask.num_frames // 32))
    dense = dense_token_mask(mask, f, p)
    kf = np.arange(n) // f
    for q in range(0, p, max(1, p // 17)):
        got = ((bits[q][kf // 32] >> (kf % 32).astype(np.uint32)) & 1).astype(bool)
        assert np.array_equal(got, dense[q, :n])


def test_layout_is_cached_and_read_only():
    m = TileMask.from_string("1:7")
    a = block_layout(m, 3600, 128, 128)
    assert block_layout(TileMask.k_m(1, 8), 3600, 128, 128) is a
    with pytest.raises(ValueError):
        a.forward.indices[0, 0] = 3
    # the 720p numbers: 28,800 tokens = 225 blocks of 128, no padding
    assert a.padded_len == 28_800 and a.num_q_blocks == 225
    assert a.block_density == pytest.approx(m.density, abs=0.03)
    assert "partial" in a.summary()


def test_layout_errors():
    m = TileMask.full(2)
    with pytest.raises(ValueError, match="tokens_per_frame must be >= 1"):
        block_layout(m, 0, 8, 8)
    with pytest.raises(ValueError, match="padded_len=10"):
        block_layout(m, 5, 8, 8, padded_len=10)
    with pytest.raises(ValueError, match="must be a TileMask"):
        block_layout(np.ones((2, 2), bool), 5, 8, 8)
