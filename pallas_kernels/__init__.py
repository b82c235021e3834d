"""Attention Tile kernels (Efficient-vDiT) in JAX / Pallas. Standalone: imports only jax and numpy.

Public entry::

    tile_attention(q, k, v, tile_mask, *, tokens_per_frame, backend="auto", interpret=False, scale=None)

q, k, v: (batch, tokens, heads, head_dim) as in ``jax.nn.dot_product_attention``, tokens frame-major with
N = T * tokens_per_frame; ``tile_mask``: a :class:`TileMask` or a concrete T x T boolean matrix (query frame, key
frame). Differentiable. Backends (see each module's docstring):

* ``"mosaic_gpu"``: Pallas Mosaic GPU forward for Hopper (wgmma, TMA, block-sparse). Under differentiation it runs
  the gather path's forward and cuDNN backward by default (``MosaicConfig(backward="triton")``: this kernel's forward
  + the Triton backward kernels). Needs tokens_per_frame >= 128 and bf16/fp16.
* ``"triton"``: Pallas Triton forward and backward (any CUDA GPU; ``interpret=True`` on CPU).
* ``"tpu"``: JAX's splash attention with a computable frame mask.
* ``"gather"``: dense ``jax.nn.dot_product_attention`` (cuDNN on GPU) over gathered key frames, grouped.
* ``"reference"``: dense masked attention in plain JAX (materialises N x N; tiny shapes only).
* ``"cpu"``: masked attention in plain JAX shaped for XLA:CPU (chunks of (batch x head) pairs, normalisation after
  the value product; :mod:`pallas_kernels.cpu`). It computes every tile, so it is fast on a CPU but not sparse.
* ``"auto"``: mosaic_gpu on Hopper (gather if the problem is outside its limits, e.g. F < 128 or fp32), triton on
  other CUDA GPUs, tpu on TPU, cpu on CPU.

Measured on one H100 (bf16, 24 x 96 heads, 720p latents): ``experiments/results/tile_attention/``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .layout import BlockLayout, BlockList, block_layout, dense_token_mask, padded_length, row_key_bits
from .tile_mask import MaskSchedule, TileMask, as_tile_mask, kept_tiles_k_m

__all__ = [
    "BACKENDS",
    "BlockLayout",
    "BlockList",
    "MaskSchedule",
    "TileMask",
    "as_tile_mask",
    "block_layout",
    "check_scale",
    "dense_token_mask",
    "kept_tiles_k_m",
    "padded_length",
    "resolve_backend",
    "row_key_bits",
    "tile_attention",
]

BACKENDS = ("auto", "mosaic_gpu", "triton", "tpu", "gather", "reference", "cpu")
_FLOAT_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16), jnp.dtype(jnp.float32))


def resolve_backend(backend: str, *, tokens_per_frame: int | None = None, dtype: Any = None,
                    head_dim: int | None = None) -> str:
    """Map ``"auto"`` to a concrete backend for the default device (and the problem, when given)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown tile attention backend {backend!r}; expected one of {BACKENDS}")
    if backend != "auto":
        return backend
    platform = jax.default_backend()
    if platform == "gpu":
        from .mosaic_gpu import MosaicConfig, check_supported, is_hopper
        if is_hopper():
            if tokens_per_frame is None or dtype is None or head_dim is None:
                return "mosaic_gpu"
            try:
                check_supported(TileMask.full(1), tokens_per_frame, head_dim, dtype, MosaicConfig())
                return "mosaic_gpu"
            except ValueError:
                return "gather"
        return "triton"
    if platform == "tpu":
        return "tpu"
    return "cpu"


def check_scale(scale: Any) -> None:
    """``scale`` must be None (1/sqrt(D)) or a finite positive number: a negative one flips the softmax (and the
    masked-score trick of some backends then overflows to NaN), zero makes attention uniform."""
    if scale is None:
        return
    try:
        value = float(scale)
    except (TypeError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(f"scale must be None or a concrete positive float, got {scale!r}") from err
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"scale must be a finite positive number (or None for 1/sqrt(head_dim)), got {scale!r}")


def _validate(q, k, v, mask: TileMask, tokens_per_frame: Any) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(
                f"{name} must have rank 4 (batch, tokens, heads, head_dim), got shape {getattr(x, 'shape', None)}")
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k and v must have the same shape, got q {q.shape}, k {k.shape}, v {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if 0 in q.shape:
        raise ValueError(f"q, k, v must not be empty, got shape {q.shape} (batch, tokens, heads, head_dim)")
    if jnp.dtype(q.dtype) not in _FLOAT_DTYPES:
        raise ValueError(f"q, k, v must be bfloat16, float16 or float32, got {q.dtype}")
    if isinstance(tokens_per_frame, bool) or not isinstance(tokens_per_frame, int) or tokens_per_frame < 1:
        raise ValueError(f"tokens_per_frame must be a positive int, got {tokens_per_frame!r}")
    n = q.shape[1]
    t = mask.num_frames
    if n != t * tokens_per_frame:
        raise ValueError(
            f"sequence length N={n} must equal T * tokens_per_frame = {t} * {tokens_per_frame} = "
            f"{t * tokens_per_frame} (T from the {t} x {t} tile mask)")


def tile_attention(q: jax.Array, k: jax.Array, v: jax.Array, tile_mask: TileMask | Any, *, tokens_per_frame: int,
                   backend: str = "auto", interpret: bool = False, scale: float | None = None,
                   config: Any = None) -> jax.Array:
    """Frame-level block-sparse attention.

    Args:
      q, k, v: (B, N, H, D) bfloat16 / float16 / float32, N = T * tokens_per_frame, tokens frame-major.
      tile_mask: TileMask, or a concrete T x T boolean matrix (query frame, key frame); static.
      tokens_per_frame: F = H' * W' latent tokens per frame (e.g. 3,600 at 720p).
      backend: one of ``BACKENDS``.
      interpret: run Pallas kernels in interpret mode (CPU tests; triton and tpu backends).
      scale: softmax scale, default 1 / sqrt(D).
      config: optional backend config (``triton.TritonConfig`` / ``mosaic_gpu.MosaicConfig``).

    Returns:
      (B, N, H, D) in q's dtype; fp32 softmax and accumulation. Differentiable w.r.t. q, k, v.

    Raises:
      ValueError naming the problem: wrong ranks, shape or dtype mismatch, N != T * tokens_per_frame, a mask that is
      not square / not boolean / has an empty row, empty inputs, a ``scale`` that is not a finite positive number,
      an unknown backend, or a backend that cannot run this problem.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown tile attention backend {backend!r}; expected one of {BACKENDS}")
    mask = as_tile_mask(tile_mask)
    _validate(q, k, v, mask, tokens_per_frame)
    check_scale(scale)
    backend = resolve_backend(backend, tokens_per_frame=tokens_per_frame, dtype=q.dtype, head_dim=q.shape[-1])
    if backend == "reference":
        from .reference import reference_attention
        return reference_attention(q, k, v, mask, tokens_per_frame=tokens_per_frame, scale=scale)
    if backend == "cpu":
        from .cpu import cpu_tile_attention
        return cpu_tile_attention(q, k, v, mask, tokens_per_frame=tokens_per_frame, scale=scale)
    if backend == "gather":
        from .gather import gather_attention
        return gather_attention(q, k, v, mask, tokens_per_frame=tokens_per_frame, scale=scale)
    if backend == "triton":
        from .triton import triton_attention
        return triton_attention(q, k, v, mask, tokens_per_frame=tokens_per_frame, scale=scale, interpret=interpret,
                                config=config)
    if backend == "mosaic_gpu":
        from .mosaic_gpu import mosaic_attention
        if interpret:
            raise ValueError("the mosaic_gpu backend has no interpret mode in tile_attention; use backend='triton'")
        return mosaic_attention(q, k, v, mask, tokens_per_frame=tokens_per_frame, scale=scale, config=config)
    if backend == "tpu":
        from .tpu import splash_attention
        return splash_attention(q, k, v, mask, tokens_per_frame=tokens_per_frame, scale=scale, interpret=interpret)
    raise AssertionError(backend)
