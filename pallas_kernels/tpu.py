"""TPU backend of tile attention: JAX's splash attention fed with a computable frame-level mask.

:class:`FrameTileSplashMask` is a splash-attention mask object whose ``mask_function(q_ids, kv_ids)`` computes
``allowed(q, k)`` from frame indices (``q // F``, ``k // F``) with compares only, so splash attention's own block
classification (empty / partial / full, computed in NumPy when the kernel is built) skips the dropped tiles and
evaluates the function element-wise inside the kernel for partial blocks only. The tile matrix is compiled to a
band ``|qf - kf| <= w`` (the diagonal of k:m masks, the window of window masks) plus a few frame rectangles (global
rows and columns); the decomposition is checked against the matrix when the object is built.

Splash attention takes (heads, tokens, head_dim) per example; this module vmaps it over the batch, pre-scales q
(splash applies no softmax scale), pads tokens to a multiple of the block sizes (padded keys are masked, padded
query rows act as the last frame and are dropped), and differentiates through splash's own custom VJP.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from .layout import padded_length
from .tile_mask import TileMask

__all__ = ["FrameTileSplashMask", "frame_mask_terms", "splash_attention", "make_splash_kernel"]


@functools.lru_cache(maxsize=128)
def frame_mask_terms(mask: TileMask) -> tuple[int, tuple[tuple[int, int, int, int], ...]]:
    """Decompose the tile matrix: (w, rects) with allowed = (|qf - kf| <= w if w >= 0) or any rect
    (q0 <= qf <= q1 and k0 <= kf <= k1), rect = (q0, q1, k0, k1), all inclusive."""
    m = mask.matrix
    t = mask.num_frames
    i = np.arange(t)
    dist = np.abs(i[:, None] - i[None, :])
    w = -1
    while w + 1 < t and m[dist <= w + 1].all():
        w += 1
    must = m & ~(dist <= w) if w >= 0 else m.copy()
    rects = min((_rectangles(m, must, trim) for trim in (False, True)), key=len)
    terms = (w, tuple(rects))
    rebuilt = _eval_terms(terms, i[:, None], i[None, :])
    if not np.array_equal(np.broadcast_to(rebuilt, m.shape), m):
        raise AssertionError("internal error: frame mask decomposition does not reproduce the tile matrix")
    return terms


def _rectangles(m: np.ndarray, must: np.ndarray, trim: bool) -> list[tuple[int, int, int, int]]:
    """Cover the ``must`` cells with rectangles of kept cells: per row, the runs of kept cells that hold a must cell
    (optionally trimmed to the must cells), rows with identical runs merged."""
    t = m.shape[0]
    row_ivs = []
    for r in range(t):
        ivs, j = [], 0
        while j < t:
            if m[r, j]:
                a = j
                while j + 1 < t and m[r, j + 1]:
                    j += 1
                hits = np.flatnonzero(must[r, a:j + 1])
                if hits.size:
                    ivs.append((a + int(hits[0]), a + int(hits[-1])) if trim else (a, j))
            j += 1
        row_ivs.append(tuple(ivs))
    rects, r = [], 0
    while r < t:
        r1 = r
        while r1 + 1 < t and row_ivs[r1 + 1] == row_ivs[r]:
            r1 += 1
        rects += [(r, r1, a, b) for a, b in row_ivs[r]]
        r = r1 + 1
    return rects


def _eval_terms(terms, qf, kf):
    w, rects = terms
    out = None
    if w >= 0:
        out = (qf - kf <= w) & (kf - qf <= w)
    for q0, q1, k0, k1 in rects:
        term = (qf >= q0) & (qf <= q1) & (kf >= k0) & (kf <= k1)
        out = term if out is None else (out | term)
    return out


def _splash_mask_module():
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib
    return mask_lib


class FrameTileSplashMask(_splash_mask_module()._ComputableMask):  # type: ignore[misc]
    """Splash-attention mask for a frame-level tile mask on a (padded_len, padded_len) token grid.

    allowed(q, k) = (k < N) and M[min(q // F, T - 1), k // F], computed from frame indices on the fly.
    """

    def __init__(self, tile_mask: TileMask, tokens_per_frame: int, padded_len: int, shard_count: int = 1):
        self.tile_mask = tile_mask
        self.tokens_per_frame = int(tokens_per_frame)
        self.seq_len = tile_mask.num_frames * self.tokens_per_frame
        terms = frame_mask_terms(tile_mask)
        f, t, n = self.tokens_per_frame, tile_mask.num_frames, self.seq_len

        def mask_function(q_ids, kv_ids):
            qf = jnp.minimum(q_ids // f, t - 1) if isinstance(q_ids, jax.Array) else np.minimum(q_ids // f, t - 1)
            kf = kv_ids // f
            return _eval_terms(terms, qf, kf) & (kv_ids < n)

        super().__init__(shape=(padded_len, padded_len), mask_function=mask_function, shard_count=shard_count)

    def __eq__(self, other: object):
        if not isinstance(other, FrameTileSplashMask):
            return NotImplemented
        return (self.shape == other.shape and self.tile_mask == other.tile_mask
                and self.tokens_per_frame == other.tokens_per_frame)

    def __hash__(self):
        return hash((type(self), self.shape, self.tile_mask, self.tokens_per_frame))


@functools.lru_cache(maxsize=64)
def make_splash_kernel(tile_mask: TileMask, tokens_per_frame: int, padded_len: int, num_heads: int,
                       block: int, interpret: bool):
    """Build (and cache) a splash-attention kernel for this mask; block sizes ``block`` for every pass."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    mask = FrameTileSplashMask(tile_mask, tokens_per_frame, padded_len)
    multi = splash.MultiHeadMask([mask] * num_heads)
    sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                              block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return splash.make_splash_mha(multi, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, mask: TileMask, *, tokens_per_frame: int, scale: float | None = None,
                     interpret: bool = False, block: int = 512) -> jax.Array:
    """Tile attention through splash attention. q, k, v: (B, N, H, D) -> (B, N, H, D)."""
    b, n, h, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    block = min(block, padded_length(n, 128))
    np_ = padded_length(n, block)
    kernel = make_splash_kernel(mask, int(tokens_per_frame), np_, h, block, bool(interpret))
    if np_ != n:
        pad = ((0, 0), (0, np_ - n), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    qs = (q.astype(jnp.float32) * scale).astype(q.dtype)
    to_hnd = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731  (B, N, H, D) -> (B, H, N, D)
    out = jax.vmap(kernel)(to_hnd(qs), to_hnd(k), to_hnd(v))
    out = jnp.swapaxes(out, 1, 2)
    return out[:, :n] if np_ != n else out
