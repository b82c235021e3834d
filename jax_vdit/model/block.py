"""The PixArt-style transformer block of OpenSoraT2V (spec section 2.5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jax_vdit.config import ModelConfig
from jax_vdit.model.attention import AttentionConfig, cross_attention, self_attention
from jax_vdit.model.embeddings import linear
from jax_vdit.model.rope import apply_rope


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Affine-free LayerNorm over the last axis; statistics in fp32, output in x's dtype."""
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    return ((xf - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """x (B, N, D) * (1 + scale) + shift, with shift/scale (B, D)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def _logical(lin: nnx.Linear, kernel_axes: tuple[str, str]) -> nnx.Linear:
    """Record the logical axes (``jax_vdit.parallel.LOGICAL_AXES``) of a Linear's kernel and bias as Param
    metadata ``logical_axes``; ``parallel.ShardingRules.for_model`` reads them to place (e.g. FSDP-shard) weights."""
    lin.kernel.set_metadata(logical_axes=kernel_axes)
    lin.bias.set_metadata(logical_axes=kernel_axes[1:])
    return lin


class AttentionProjections(nnx.Module):
    """to_q, to_k, to_v and to_out.0 of a diffusers Attention (all biased, D -> D)."""

    def __init__(self, dim: int, kv_dim: int, dtype, param_dtype, rngs: nnx.Rngs):
        self.to_q = _logical(linear(rngs, dim, dim, dtype, param_dtype), ("embed", "heads"))
        self.to_k = _logical(linear(rngs, kv_dim, dim, dtype, param_dtype), ("embed", "heads"))
        self.to_v = _logical(linear(rngs, kv_dim, dim, dtype, param_dtype), ("embed", "heads"))
        self.to_out = _logical(linear(rngs, dim, dim, dtype, param_dtype), ("heads", "embed"))


class FeedForward(nnx.Module):
    """Linear(D -> 4D), GELU(tanh), Linear(4D -> D)."""

    def __init__(self, dim: int, dtype, param_dtype, rngs: nnx.Rngs):
        self.proj_in = _logical(linear(rngs, dim, 4 * dim, dtype, param_dtype), ("embed", "mlp"))
        self.proj_out = _logical(linear(rngs, 4 * dim, dim, dtype, param_dtype), ("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj_out(jax.nn.gelu(self.proj_in(x), approximate=True))


class TransformerBlock(nnx.Module):
    """Self-attention with 3D RoPE (gated, modulated), ungated cross-attention, gated modulated MLP."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.inner_dim
        dtype, pdtype = cfg.compute_jnp_dtype, cfg.param_jnp_dtype
        self.heads = cfg.num_attention_heads
        self.eps = cfg.norm_eps
        self.scale_shift_table = nnx.Param(
            (jax.random.normal(rngs.params(), (6, d), jnp.float32) / d**0.5).astype(pdtype)
        )
        self.attn1 = AttentionProjections(d, d, dtype, pdtype, rngs)
        self.attn2 = AttentionProjections(d, d, dtype, pdtype, rngs)
        self.ff = FeedForward(d, dtype, pdtype, rngs)

    def _split_heads(self, x: jax.Array) -> jax.Array:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads)

    def __call__(
        self,
        x: jax.Array,
        text: jax.Array,
        text_mask: jax.Array | None,
        t6: jax.Array,
        rope_cos: jax.Array,
        rope_sin: jax.Array,
        *,
        tile_mask,
        tokens_per_frame: int,
        attention: AttentionConfig,
    ) -> jax.Array:
        """x: (B, N, D); text: (B, L, D) projected captions; text_mask: (B, L) bool or None;
        t6: (B, 6D); rope tables (N, head_dim). Returns (B, N, D)."""
        b, n, d = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(t6)
        q, k, v = self.self_attention_inputs(x, shift_msa, scale_msa, rope_cos, rope_sin)
        a = self_attention(q, k, v, tile_mask=tile_mask, tokens_per_frame=tokens_per_frame, config=attention)
        x = x + gate_msa[:, None, :] * self.attn1.to_out(a.reshape(b, n, d))

        q = self._split_heads(self.attn2.to_q(x))
        k = self._split_heads(self.attn2.to_k(text))
        v = self._split_heads(self.attn2.to_v(text))
        a = cross_attention(q, k, v, key_mask=text_mask, config=attention)
        x = x + self.attn2.to_out(a.reshape(b, n, d))

        h = modulate(layer_norm(x, self.eps), shift_mlp, scale_mlp)
        return x + gate_mlp[:, None, :] * self.ff(h)

    def modulation(self, t6: jax.Array) -> tuple[jax.Array, ...]:
        """(B, 6D) -> shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, each (B, D)."""
        b = t6.shape[0]
        mod = t6.reshape(b, 6, -1) + self.scale_shift_table[...].astype(t6.dtype)[None]
        return tuple(mod[:, i] for i in range(6))

    def self_attention_inputs(self, x, shift_msa, scale_msa, rope_cos, rope_sin):
        """q, k (with RoPE) and v of the self-attention, each (B, N, heads, head_dim)."""
        h = modulate(layer_norm(x, self.eps), shift_msa, scale_msa)
        q = apply_rope(self._split_heads(self.attn1.to_q(h)), rope_cos, rope_sin)
        k = apply_rope(self._split_heads(self.attn1.to_k(h)), rope_cos, rope_sin)
        return q, k, self._split_heads(self.attn1.to_v(h))
