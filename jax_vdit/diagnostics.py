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


# ----------------------------------------------------------------------------------------------------------------
# RoPE direction sensitivity
# ----------------------------------------------------------------------------------------------------------------
#
# With rotate-half RoPE, rotary pair j of an axis chunk (dims i1 = start + j, i2 = start + half + j) adds
#     x E_j y^T cos(w_j d) + x O_j y^T sin(w_j d)
# to the logit between inputs x (query) and y (key) at offset d along that axis, with
#     E_j = q1 k1^T + q2 k2^T,  O_j = q1 k2^T - q2 k1^T
# (q1, q2, k1, k2: the columns i1, i2 of W_q,h and W_k,h). E_j is the part of the head that cannot tell d from -d;
# O_j is the part that can. A head whose O_j vanish along the time axis attends identically forwards and backwards
# in time, so nothing it computes knows the direction of motion.


def rope_pair_norms(wq: jax.Array, wk: jax.Array, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """Squared Frobenius norms of ``E_j`` and ``O_j`` for every head, axis and rotary pair.

    ``wq``, ``wk``: (D_in, heads * head_dim) kernels (``q = x @ wq``). Returns two float32 arrays of shape
    (heads, 3, head_dim // 6): axis 0..2 = (t, y, x) chunks, pair j of frequency ``theta^(-2j / chunk)``.
    """
    wq = wq.astype(jnp.float32)
    wk = wk.astype(jnp.float32)
    d_in, d = wq.shape
    heads, half = d // head_dim, head_dim // 6
    gq = jnp.einsum("ihk,ihl->hkl", wq.reshape(d_in, heads, head_dim), wq.reshape(d_in, heads, head_dim))
    gk = jnp.einsum("ihk,ihl->hkl", wk.reshape(d_in, heads, head_dim), wk.reshape(d_in, heads, head_dim))
    start = (jnp.arange(3) * 2 * half)[:, None]
    i1 = start + jnp.arange(half)[None, :]  # (3, half)
    i2 = i1 + half

    def g(gram, a, b):
        return gram[:, a, b]  # (heads, 3, half)

    even = g(gq, i1, i1) * g(gk, i1, i1) + g(gq, i2, i2) * g(gk, i2, i2) + 2.0 * g(gq, i1, i2) * g(gk, i1, i2)
    odd = g(gq, i1, i1) * g(gk, i2, i2) + g(gq, i2, i2) * g(gk, i1, i1) - 2.0 * g(gq, i1, i2) * g(gk, i2, i1)
    return jnp.maximum(even, 0.0), jnp.maximum(odd, 0.0)


def active_rope_pairs(grid: tuple[int, int, int], scales: tuple[float, float, float], head_dim: int,
                      theta: float = 10000.0) -> jax.Array:
    """(3, head_dim // 6) bool: the pairs whose angle turns by at least 1 radian across the grid along their axis
    (``w_j * (L - 1) / scale >= 1``); the slower ones hardly rotate, so their odd part hardly acts."""
    half = head_dim // 6
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / (2 * half)))
    span = jnp.asarray([(n - 1) / s for n, s in zip(grid, scales)], jnp.float32)[:, None]
    return inv_freq[None, :] * span >= 1.0


def rope_odd_fraction(model, grid: tuple[int, int, int]) -> jax.Array:
    """(num_layers, heads, 3) float32: for each self-attention head and axis (t, y, x), the share of the head's
    rotary bilinear forms that is odd in the offset, ``sum_j |O_j|^2 / sum_j (|E_j|^2 + |O_j|^2)`` over the pairs
    that turn by >= 1 radian across ``grid`` (latent tokens T', H', W'). Random weights give ~0.5 on every axis;
    0 along t means the head cannot tell forwards from backwards in time."""
    cfg = model.cfg
    scales = (cfg.interpolation_scale_t, cfg.interpolation_scale_h, cfg.interpolation_scale_w)
    active = active_rope_pairs(grid, scales, cfg.attention_head_dim, cfg.rope_theta)
    out = []
    for block in model.blocks:
        wq = jax.lax.stop_gradient(block.attn1.to_q.kernel[...])
        wk = jax.lax.stop_gradient(block.attn1.to_k.kernel[...])
        even, odd = rope_pair_norms(wq, wk, cfg.attention_head_dim)
        odd_sum = jnp.sum(jnp.where(active, odd, 0.0), axis=-1)
        out.append(odd_sum / jnp.maximum(jnp.sum(jnp.where(active, even + odd, 0.0), axis=-1), 1e-30))
    return jnp.stack(out)
