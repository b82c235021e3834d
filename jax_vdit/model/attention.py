"""The one attention interface of the model, with swappable backends chosen by :class:`AttentionConfig`.

Self-attention of layer ``i`` is dense when ``config.layer_mask(i)`` is ``None`` and tile-sparse otherwise
(a frame-level :class:`pallas_kernels.TileMask`, run by ``pallas_kernels.tile_attention``). Dense backends:

* ``"reference"``: plain JAX, fp32 scores and softmax (the oracle; materialises N x N scores);
* ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``;
* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (GPU, bf16/fp16 only);
* ``"auto"``: cuDNN on a CUDA GPU for bf16/fp16 inputs, else XLA.

q, k, v are ``(batch, tokens, heads, head_dim)`` as in ``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

DENSE_BACKENDS = ("auto", "reference", "xla", "cudnn")


@dataclass(frozen=True)
class AttentionConfig:
    """How self-attention runs, per layer. Hashable: pass it as a static argument to ``jit``.

    ``masks``: one entry per layer, ``None`` for dense or a ``pallas_kernels.TileMask`` for that layer; ``None``
    for the whole field means every layer is dense. ``tile_backend`` is a ``pallas_kernels.tile_attention``
    backend name. ``interpret`` runs Pallas kernels in interpret mode (CPU tests).
    """

    dense_backend: str = "auto"
    tile_backend: str = "auto"
    masks: tuple | None = None
    interpret: bool = False

    def __post_init__(self) -> None:
        if self.dense_backend not in DENSE_BACKENDS:
            raise ValueError(f"dense_backend must be one of {DENSE_BACKENDS}, got {self.dense_backend!r}")
        if self.masks is not None and not isinstance(self.masks, tuple):
            object.__setattr__(self, "masks", tuple(self.masks))

    def layer_mask(self, layer: int):
        """The tile mask of ``layer`` (``None`` = dense)."""
        if self.masks is None:
            return None
        if layer >= len(self.masks):
            raise ValueError(f"mask schedule has {len(self.masks)} entries but layer {layer} was asked for")
        return self.masks[layer]

    def check_num_layers(self, num_layers: int) -> None:
        if self.masks is not None and len(self.masks) != num_layers:
            raise ValueError(f"mask schedule has {len(self.masks)} entries, the model has {num_layers} layers")

    @classmethod
    def with_masks(cls, masks: Sequence, **kwargs) -> AttentionConfig:
        return cls(masks=tuple(masks), **kwargs)


DENSE = AttentionConfig()


def _on_cuda_gpu() -> bool:
    return jax.default_backend() == "gpu"


def resolve_dense_backend(name: str, dtype) -> str:
    """Map ``"auto"`` to a concrete dense backend for the current platform and dtype."""
    if name != "auto":
        return name
    if _on_cuda_gpu() and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "cudnn"
    return "xla"


def reference_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None, scale: float | None = None
) -> jax.Array:
    """Softmax attention in plain JAX with fp32 scores.

    q: (B, Nq, H, D); k, v: (B, Nk, H, D); key_mask: optional bool (B, Nk), True = attend.
    Returns (B, Nq, H, D) in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if key_mask is not None:
        scores = jnp.where(key_mask[:, None, None, :], scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def dense_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, backend: str = "auto", key_mask: jax.Array | None = None
) -> jax.Array:
    """Dense attention through the chosen backend; ``key_mask`` (B, Nk) bool masks keys."""
    backend = resolve_dense_backend(backend, q.dtype)
    if backend == "reference":
        return reference_attention(q, k, v, key_mask)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if backend == "cudnn":
        # a general key mask goes to cuDNN as an additive bias (exp(-30000) == 0 in every float type)
        bias = None if key_mask is None else jnp.where(mask, 0.0, -30000.0).astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="cudnn")
    if backend == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    raise ValueError(f"unknown dense attention backend {backend!r}")


def self_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    tile_mask,
    tokens_per_frame: int,
    config: AttentionConfig,
) -> jax.Array:
    """Video self-attention: dense if ``tile_mask`` is None, else tile-sparse over frames.

    q, k, v: (B, N, H, D) with N = frames x tokens_per_frame, tokens frame-major.
    """
    if tile_mask is None:
        return dense_attention(q, k, v, backend=config.dense_backend)
    import pallas_kernels

    return pallas_kernels.tile_attention(
        q, k, v, tile_mask, tokens_per_frame=tokens_per_frame, backend=config.tile_backend,
        interpret=config.interpret,
    )
