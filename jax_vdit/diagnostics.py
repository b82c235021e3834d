"""Model-health numbers for training logs.

:func:`self_attention_qk_gain`: how large self-attention logits can get. For head ``h`` of a block, the logit
between tokens with (normalised) inputs ``x`` and ``y`` is ``x A_h y^T + (bias terms)`` with
``A_h = W_q[:, h] W_k[:, h]^T / sqrt(head_dim)``. The Frobenius norm of ``A_h`` (an upper bound on its spectral
norm) grows without bound when a run heads for attention-logit blow-up, the instability that diverged the toy
teacher's continued training (see experiments/results/toy_teacher/README.md): it rose from ~9 to ~45 in one
layer while the model was still improving, and to several hundred when the loss diverged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def qk_gain_per_head(wq: jax.Array, wk: jax.Array, head_dim: int) -> jax.Array:
    """(heads,) float32 ``||W_q,h W_k,h^T||_F / sqrt(head_dim)`` for kernels ``wq``, ``wk`` of shape
    (D_in, heads * head_dim) (flax layout: ``q = x @ wq``)."""
    wq = wq.astype(jnp.float32)
    wk = wk.astype(jnp.float32)
    d_in, d = wq.shape
    heads = d // head_dim
    wq = wq.reshape(d_in, heads, head_dim).transpose(1, 0, 2)  # (H, D_in, hd)
    wk = wk.reshape(d_in, heads, head_dim).transpose(1, 0, 2)
    # ||Wq Wk^T||_F^2 = trace((Wq^T Wq)(Wk^T Wk)): two (hd, hd) Gram matrices per head, no D_in x D_in product
    gq = jnp.einsum("hia,hib->hab", wq, wq)
    gk = jnp.einsum("hia,hib->hab", wk, wk)
    return jnp.sqrt(jnp.maximum(jnp.einsum("hab,hba->h", gq, gk), 0.0)) / jnp.sqrt(float(head_dim))


def self_attention_qk_gain(model) -> jax.Array:
    """(num_layers, heads) float32 Frobenius norms of ``W_q,h W_k,h^T / sqrt(head_dim)`` of every block's
    self-attention (no gradient flows through it)."""
    gains = []
    for block in model.blocks:
        wq = jax.lax.stop_gradient(block.attn1.to_q.kernel[...])
        wk = jax.lax.stop_gradient(block.attn1.to_k.kernel[...])
        gains.append(qk_gain_per_head(wq, wk, wq.shape[1] // block.heads))
    return jnp.stack(gains)


def has_self_attention_blocks(model) -> bool:
    """Whether :func:`self_attention_qk_gain` applies (an OpenSoraT2V-like ``model.blocks[i].attn1``)."""
    blocks = getattr(model, "blocks", None)
    return bool(blocks) and all(hasattr(b, "attn1") and hasattr(b, "heads") for b in blocks)
