"""Analytic FLOP counts (2 FLOPs per multiply-add) of the OpenSoraT2V forward pass."""

from __future__ import annotations

from jax_vdit.config import ModelConfig


def self_attention_flops(tokens: int, dim: int, kept_fraction: float = 1.0) -> float:
    """QK^T and PV of one layer for one sample: 4 N^2 D, times the fraction of tiles kept."""
    return 4.0 * tokens * tokens * dim * kept_fraction


def forward_flops(
    cfg: ModelConfig,
    latent_thw: tuple[int, int, int],
    batch: int = 1,
    text_len: int = 512,
    kept_fractions: list[float] | None = None,
) -> float:
    """FLOPs of one forward at latent size (T, H, W) for ``batch`` samples.

    ``kept_fractions``: per layer, the share of self-attention tiles computed (1.0 = dense).
    """
    t, h, w = latent_thw
    n = t * (h // cfg.patch_size) * (w // cfg.patch_size)
    d, c = cfg.inner_dim, cfg.caption_channels
    kept = kept_fractions or [1.0] * cfg.num_layers
    per_layer_dense = (
        2 * n * d * d * 4  # attn1 q, k, v, out
        + 2 * n * d * d * 2 + 2 * text_len * d * d * 2  # attn2 q, out; k, v over text
        + 4 * n * text_len * d  # cross-attention scores and values
        + 2 * n * d * 4 * d * 2  # MLP
    )
    layers = sum(per_layer_dense + self_attention_flops(n, d, f) for f in kept)
    other = (
        2 * n * cfg.patch_dim * d + 2 * n * d * cfg.out_patch_dim  # patch embed, proj_out
        + 2 * text_len * (c * d + d * d)  # caption projection
        + 2 * (256 * d + d * d + d * 6 * d)  # timestep embedding
    )
    return batch * (layers + other)
