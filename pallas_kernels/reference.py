"""Plain-JAX references for tile attention.

* :func:`reference_attention`: dense masked attention with fp32 scores over the N x N token mask. Tiny shapes only;
  the oracle every backend is tested against.
* :func:`framewise_attention`: the same function without any N x N array: a Python loop over query frames, each
  attending to the concatenation of its kept key frames. Usable at moderate sizes (e.g. a GPU cross-check).

q, k, v: (B, N, H, D) as in ``jax.nn.dot_product_attention``; N = T * tokens_per_frame, tokens frame-major.
Outputs: (B, N, H, D) in q's dtype. Softmax scale defaults to 1 / sqrt(D).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .tile_mask import TileMask

__all__ = ["reference_attention", "framewise_attention", "token_mask"]


def token_mask(mask: TileMask, tokens_per_frame: int) -> jax.Array:
    """(N, N) boolean token mask: token q attends token k iff M[q // F, k // F]."""
    frames = np.arange(mask.num_frames * tokens_per_frame) // tokens_per_frame
    m = jnp.asarray(mask.matrix)
    return m[frames[:, None], frames[None, :]]


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: TileMask, *, tokens_per_frame: int,
                        scale: float | None = None) -> jax.Array:
    """Dense masked attention in fp32 (materialises (B, H, N, N) scores). Differentiable by autodiff."""
    d = q.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    qf, kf, vf = (x.astype(jnp.float32) for x in (q, k, v))
    s = jnp.einsum("bqhd,bkhd->bhqk", qf, kf, precision=jax.lax.Precision.HIGHEST) * scale
    s = jnp.where(token_mask(mask, tokens_per_frame)[None, None], s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", p, vf, precision=jax.lax.Precision.HIGHEST)
    return out.astype(q.dtype)


def framewise_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: TileMask, *, tokens_per_frame: int,
                        scale: float | None = None) -> jax.Array:
    """Per-query-frame loop: frame i attends to the concatenated K/V of its kept key frames (fp32 softmax)."""
    b, n, h, d = q.shape
    f = tokens_per_frame
    t = mask.num_frames
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    k5 = k.reshape(b, t, f, h, d)
    v5 = v.reshape(b, t, f, h, d)
    outs = []
    for i in range(t):
        frames = list(mask.key_frames(i))
        kk = k5[:, frames].reshape(b, len(frames) * f, h, d)
        vv = v5[:, frames].reshape(b, len(frames) * f, h, d)
        qi = q[:, i * f:(i + 1) * f]
        s = jnp.einsum("bqhd,bkhd->bhqk", qi, kk, preferred_element_type=jnp.float32) * scale
        p = jax.nn.softmax(s, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", p, vv.astype(jnp.float32))
        outs.append(o.astype(q.dtype))
    return jnp.concatenate(outs, axis=1)
