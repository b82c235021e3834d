"""QK-clip: keep self-attention logits bounded during training without changing the architecture.

After each optimiser update, every self-attention head whose gain ``g_h = ||W_q,h W_k,h^T||_F / sqrt(head_dim)``
(:func:`jax_vdit.diagnostics.qk_gain_per_head`) exceeds ``max_gain`` gets its query and key projections (kernel
columns and biases of that head) multiplied by ``sqrt(max_gain / g_h)``, so the gain becomes ``max_gain`` and the
logits shrink by the same factor; heads below the cap are untouched. The model stays the release architecture (no
QK-norm), so a clipped checkpoint loads anywhere the release does. Same idea as the QK-clip of MuonClip, here on a
weight-only bound (no activation statistics needed).

Parameters are the training loop's pure dict: ``params["blocks"][i]["attn1"]["to_q"]["kernel"]`` (D_in, D) and
``["bias"]`` (D,).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jax_vdit.diagnostics import qk_gain_per_head


def _head_scale(wq: jax.Array, wk: jax.Array, head_dim: int, max_gain: float) -> jax.Array:
    """(D,) per-column factor: sqrt(min(1, max_gain / g_h)) repeated over each head's columns."""
    gain = qk_gain_per_head(wq, wk, head_dim)
    scale = jnp.sqrt(jnp.minimum(1.0, max_gain / jnp.maximum(gain, 1e-30)))
    return jnp.repeat(scale, head_dim)


def clip_qk_params(params: dict, max_gain: float, head_dim: int) -> dict:
    """``params`` with every self-attention head's gain capped at ``max_gain`` (a new dict; inputs untouched)."""
    if max_gain <= 0:
        raise ValueError(f"max_gain must be > 0, got {max_gain}")
    blocks = params.get("blocks") if isinstance(params, dict) else None
    if not blocks:
        raise ValueError("clip_qk_params expects the model's pure parameter dict with a 'blocks' entry")
    new_blocks = {}
    for name, block in blocks.items():
        attn = block["attn1"]
        q, k = attn["to_q"], attn["to_k"]
        if q["kernel"].shape[1] % head_dim:
            raise ValueError(f"block {name}: width {q['kernel'].shape[1]} is not a multiple of head_dim {head_dim}")
        s = _head_scale(q["kernel"], k["kernel"], head_dim, max_gain)
        new_q = {"kernel": (q["kernel"] * s).astype(q["kernel"].dtype), "bias": (q["bias"] * s).astype(q["bias"].dtype)}
        new_k = {"kernel": (k["kernel"] * s).astype(k["kernel"].dtype), "bias": (k["bias"] * s).astype(k["bias"].dtype)}
        new_blocks[name] = {**block, "attn1": {**attn, "to_q": {**q, **new_q}, "to_k": {**k, **new_k}}}
    return {**params, "blocks": new_blocks}


def qk_clip(max_gain: float, head_dim: int) -> optax.GradientTransformation:
    """An optax transformation to chain last: turns ``updates`` into ones that land on the clipped parameters."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("qk_clip needs the parameters (call tx.update(grads, state, params))")
        clipped = clip_qk_params(optax.apply_updates(params, updates), max_gain, head_dim)
        return jax.tree.map(lambda c, p: (c - p).astype(p.dtype), clipped, params), state

    return optax.GradientTransformation(init_fn, update_fn)
