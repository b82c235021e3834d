"""Attention for XLA:CPU: dense or tile-masked softmax attention in plain JAX, shaped for a CPU.

Two choices make it fast there:
- The softmax normalisation is applied to the (Nq, D) output instead of the (Nq, Nk) probabilities:
  ``(exp(s - max s) @ v) / sum exp(s - max s)``, one pass fewer over the scores.
- (batch x head) pairs are processed in chunks (``lax.map``) whose fp32 scores stay within ``max_score_bytes``
  (16 MiB). Buffers that size stay below glibc's mmap threshold, so they are reused. Whole-batch score buffers are
  mapped and page-faulted in afresh at every call, and that system time dominated.

At the toy teacher's shape (B=16, N=1296, 4 heads x 48, fp32, 2 cores) one call takes 0.35 s, against 1.2-1.3 s
for ``jax.nn.dot_product_attention(implementation="xla")``; unchunked it takes 0.86 s.

q: (B, Nq, H, D); k, v: (B, Nk, H, D), as in ``jax.nn.dot_product_attention``. Output (B, Nq, H, D) in q's dtype.
"""

from __future__ import annotations

import functools
import math
import operator

import jax
import jax.numpy as jnp

from .reference import token_mask as tile_token_mask
from .tile_mask import TileMask

__all__ = ["chunked_attention", "cpu_tile_attention", "SCORE_CHUNK_BYTES"]

SCORE_CHUNK_BYTES = 16 * 2**20


def heads_per_chunk(batch_heads: int, nq: int, nk: int, max_bytes: int) -> int:
    """The largest divisor g of ``batch_heads`` with g * nq * nk fp32 scores within ``max_bytes`` (at least 1)."""
    limit = max(1, max_bytes // (4 * nq * nk))
    return max(g for g in range(1, min(limit, batch_heads) + 1) if batch_heads % g == 0)


def chunked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, key_mask: jax.Array | None = None,
    token_mask: jax.Array | None = None, scale: float | None = None, max_score_bytes: int = SCORE_CHUNK_BYTES,
) -> jax.Array:
    """Softmax attention with fp32 scores, normalised after the value product, in chunks of (batch x head) pairs.

    ``key_mask``: optional bool (B, Nk), True = attend. ``token_mask``: optional bool (Nq, Nk) shared by every
    batch element and head. A query whose keys are all masked averages all values, as a large finite negative bias
    does; a tile mask never does that, because every row of a ``TileMask`` keeps a frame.
    """
    b, nq, h, d = q.shape
    nk = k.shape[1]
    if 0 in q.shape or 0 in k.shape:
        raise ValueError(f"attention inputs must not be empty, got q {q.shape}, k {k.shape}")
    if scale is not None and not (math.isfinite(float(scale)) and float(scale) > 0):
        raise ValueError(f"scale must be a finite positive number (or None for 1/sqrt(head_dim)), got {scale!r}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    g = heads_per_chunk(b * h, nq, nk, max_score_bytes)
    n_chunks = b * h // g

    def chunks(x):  # (B, N, H, D) -> (B*H/g, g, N, D)
        return x.transpose(0, 2, 1, 3).reshape(n_chunks, g, x.shape[1], x.shape[3])

    low = jnp.finfo(jnp.float32).min

    def attend(args):
        qc, kc, vc = args[:3]
        scores = jnp.einsum("gqd,gkd->gqk", qc, kc, preferred_element_type=jnp.float32)
        keeps = ([args[3][:, None, :]] if key_mask is not None else []) + \
            ([token_mask[None]] if token_mask is not None else [])
        if keeps:  # no masking pass over the scores when nothing is masked
            scores = jnp.where(functools.reduce(operator.and_, keeps), scores, low)
        row_max = jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
        weights = jnp.exp((scores - row_max) * scale)
        out = jnp.einsum("gqk,gkd->gqd", weights.astype(vc.dtype), vc, preferred_element_type=jnp.float32)
        return out / weights.sum(axis=-1)[..., None]

    args = (chunks(q), chunks(k), chunks(v))
    if key_mask is not None:
        args += (jnp.repeat(key_mask, h, axis=0).reshape(n_chunks, g, nk),)
    if n_chunks == 1:
        out = attend(jax.tree.map(lambda x: x[0], args))[None]
    else:
        out = jax.lax.map(attend, args)
    return out.reshape(b, h, nq, d).transpose(0, 2, 1, 3).astype(q.dtype)


def cpu_tile_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: TileMask, *, tokens_per_frame: int,
                       scale: float | None = None) -> jax.Array:
    """Tile-masked attention through :func:`chunked_attention` (the ``"cpu"`` backend of ``tile_attention``)."""
    return chunked_attention(q, k, v, token_mask=tile_token_mask(mask, tokens_per_frame), scale=scale)
