"""3D rotary position embedding of Open-Sora-Plan v1.2 (spec section 2.6).

The head dimension is split into three equal chunks (t, y, x). Within a chunk of size c, pair (j, j + c/2)
rotates by angle ``(pos / scale_axis) * theta^(-2j/c)`` (rotate-half, non-interleaved). Positions are integer
grid coordinates 0..T'-1, 0..H'-1, 0..W'-1, tokens frame-major.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def rope_angles(
    grid: tuple[int, int, int],
    head_dim: int,
    scales: tuple[float, float, float],
    theta: float = 10000.0,
    position_offset: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """Rotation angles for every token, fp32 NumPy array of shape (T'*H'*W', head_dim // 2).

    Column layout: for each axis chunk (t, y, x), ``c/2`` frequencies. ``position_offset`` shifts the grid
    (used by sequence-parallel shards that own a slice of frames; positions stay global).
    """
    chunk = head_dim // 3
    if chunk * 3 != head_dim or chunk % 2:
        raise ValueError(f"head_dim={head_dim} must split into three chunks of even size")
    half = chunk // 2
    inv_freq = 1.0 / (theta ** (np.arange(0, chunk, 2, dtype=np.float64) / chunk))  # (half,)
    axes = []
    for length, scale, offset in zip(grid, scales, position_offset):
        pos = (np.arange(length, dtype=np.float64) + offset) / scale
        axes.append(np.outer(pos, inv_freq).astype(np.float32))  # (length, half)
    t, h, w = grid
    at = np.broadcast_to(axes[0][:, None, None, :], (t, h, w, half))
    ay = np.broadcast_to(axes[1][None, :, None, :], (t, h, w, half))
    ax = np.broadcast_to(axes[2][None, None, :, :], (t, h, w, half))
    return np.concatenate([at, ay, ax], axis=-1).reshape(t * h * w, 3 * half)


def rope_tables(angles: jax.Array, dtype, round_angles: bool) -> tuple[jax.Array, jax.Array]:
    """cos and sin tables (N, head_dim) in ``dtype``, each chunk's half-angles repeated twice.

    ``round_angles``: cast the fp32 angles to ``dtype`` before cos/sin, as the PyTorch release does.
    """
    n, half3 = angles.shape
    half = half3 // 3
    a = jnp.asarray(angles, jnp.float32)
    if round_angles:
        a = a.astype(dtype).astype(jnp.float32)
    a = a.reshape(n, 3, 1, half)
    a = jnp.concatenate([a, a], axis=2).reshape(n, 6 * half)  # [chunk: ang_0..half-1, ang_0..half-1] x 3
    return jnp.cos(a).astype(dtype), jnp.sin(a).astype(dtype)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate q or k. x: (B, N, H, D); cos, sin: (N, D). Returns x's shape and dtype."""
    b, n, h, d = x.shape
    half = d // 6
    xr = x.reshape(b, n, h, 3, 2, half)
    rotated = jnp.concatenate([-xr[..., 1:2, :], xr[..., 0:1, :]], axis=-2).reshape(b, n, h, d)
    return (x * cos[None, :, None, :] + rotated * sin[None, :, None, :]).astype(x.dtype)
