"""Input and conditioning embeddings of OpenSoraT2V: patches, timesteps (adaLN-single), captions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx


def timestep_sinusoid(t: jax.Array, channels: int = 256, max_period: float = 10000.0) -> jax.Array:
    """[cos, sin] sinusoid of (possibly fractional) timesteps. t: (B,) -> (B, channels) fp32."""
    half = channels // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    arg = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)


def linear(rngs: nnx.Rngs, d_in: int, d_out: int, dtype, param_dtype) -> nnx.Linear:
    """A biased Linear with the model's dtype policy; Xavier-uniform kernel, zero bias (DiT-style init)."""
    return nnx.Linear(
        d_in, d_out, use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
        kernel_init=nnx.initializers.xavier_uniform(), bias_init=nnx.initializers.zeros_init(),
    )


class AdaLNSingle(nnx.Module):
    """Timestep embedding shared by all blocks: returns (t6 (B, 6D), embedded_timestep (B, D))."""

    def __init__(self, dim: int, dtype, param_dtype, rngs: nnx.Rngs):
        self.dtype = dtype
        self.linear_1 = linear(rngs, 256, dim, dtype, param_dtype)
        self.linear_2 = linear(rngs, dim, dim, dtype, param_dtype)
        self.linear = linear(rngs, dim, 6 * dim, dtype, param_dtype)

    def __call__(self, timestep: jax.Array) -> tuple[jax.Array, jax.Array]:
        emb = timestep_sinusoid(timestep).astype(self.dtype)
        embedded = self.linear_2(jax.nn.silu(self.linear_1(emb)))
        return self.linear(jax.nn.silu(embedded)), embedded


class CaptionProjection(nnx.Module):
    """Text features (B, L, caption_channels) -> (B, L, D): Linear, GELU(tanh), Linear."""

    def __init__(self, caption_channels: int, dim: int, dtype, param_dtype, rngs: nnx.Rngs):
        self.linear_1 = linear(rngs, caption_channels, dim, dtype, param_dtype)
        self.linear_2 = linear(rngs, dim, dim, dtype, param_dtype)

    def __call__(self, text: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.gelu(self.linear_1(text), approximate=True))


def patchify(latents: jax.Array, patch: int) -> jax.Array:
    """(B, C, T, H, W) -> (B, T*H'*W', C*patch*patch), tokens frame-major, features ordered (c, ph, pw)."""
    return rearrange(latents, "b c t (h ph) (w pw) -> b (t h w) (c ph pw)", ph=patch, pw=patch)


def unpatchify(tokens: jax.Array, grid: tuple[int, int, int], patch: int, channels: int) -> jax.Array:
    """(B, N, patch*patch*C) with features ordered (ph, pw, c) -> (B, C, T, H, W)."""
    t, h, w = grid
    return rearrange(
        tokens, "b (t h w) (ph pw c) -> b c t (h ph) (w pw)", t=t, h=h, w=w, ph=patch, pw=patch, c=channels
    )
