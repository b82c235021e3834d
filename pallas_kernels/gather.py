"""The "gather" backend: tile attention as a few dense attention calls over gathered key frames.

Tiles are whole frames, so a frame-level mask is exact when every query frame attends, densely, to the
concatenation of its kept key frames (softmax does not care about key order). Query frames with the same key-frame
set are merged into one query sequence (e.g. the k global frames of a k:m mask, which attend to every frame: no
gather at all); the resulting (query frames, key frames) pairs are grouped by their sizes and each group is one
batched ``jax.nn.dot_product_attention`` call (cuDNN on GPU for bf16/fp16, XLA otherwise). The backward pass comes
from autodiff (the gathers transpose to scatter-adds).

Extra memory traffic: the gathered K/V copies, sum over groups of (key frames x query sequences) frames.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np

from .tile_mask import TileMask

__all__ = ["gather_attention", "gather_plan"]


@functools.lru_cache(maxsize=256)
def gather_plan(mask: TileMask) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Groups of the mask: each group is (q_frames (G, a), k_frames (G, c)) int32 arrays.

    Group members are query-frame sets of equal size a whose (identical within the set) key-frame sets have equal
    size c. Every query frame appears in exactly one group.
    """
    sets: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i in range(mask.num_frames):
        sets[mask.key_frames(i)].append(i)
    groups: dict[tuple[int, int], list[tuple[list[int], tuple[int, ...]]]] = defaultdict(list)
    for kset, qs in sets.items():
        groups[(len(qs), len(kset))].append((qs, kset))
    plan = []
    for (_, _), members in sorted(groups.items()):
        qa = np.array([m[0] for m in members], dtype=np.int32)
        ka = np.array([m[1] for m in members], dtype=np.int32)
        qa.setflags(write=False)
        ka.setflags(write=False)
        plan.append((qa, ka))
    return tuple(plan)


def _take_frames(x5: jax.Array, frames: np.ndarray) -> jax.Array:
    """x5: (B, T, F, H, D); frames: (G, c) static -> (B, G, c, F, H, D). Contiguous ranges become slices."""
    g, c = frames.shape
    if g == 1 and np.all(np.diff(frames[0]) == 1):
        start = int(frames[0, 0])
        return jax.lax.slice_in_dim(x5, start, start + c, axis=1)[:, None]
    return x5[:, frames]


def gather_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: TileMask, *, tokens_per_frame: int,
                     scale: float | None = None, implementation: str | None = "auto") -> jax.Array:
    """Exact tile attention through dense attention calls on gathered frames.

    q, k, v: (B, N, H, D), N = T * tokens_per_frame. ``implementation``: "auto" (cuDNN on GPU for bf16/fp16, XLA
    otherwise), "cudnn", "xla" or None (jax's choice). Returns (B, N, H, D) in q's dtype.
    """
    b, n, h, d = q.shape
    f = tokens_per_frame
    t = mask.num_frames
    if implementation == "auto":
        on_gpu = jax.default_backend() == "gpu"
        low = jnp.dtype(q.dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
        implementation = "cudnn" if (on_gpu and low) else "xla"
    out_dtype = q.dtype
    if implementation != "cudnn" and jax.default_backend() == "cpu" and jnp.dtype(q.dtype) == jnp.float16:
        # XLA:CPU has no fp16 x fp16 -> fp32 dot; compute in fp32 there
        q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    q5, k5, v5 = (x.reshape(b, t, f, h, d) for x in (q, k, v))
    outs, order = [], []
    for q_frames, k_frames in gather_plan(mask):
        g, a = q_frames.shape
        c = k_frames.shape[1]
        qg = _take_frames(q5, q_frames).reshape(b * g, a * f, h, d)
        kg = _take_frames(k5, k_frames).reshape(b * g, c * f, h, d)
        vg = _take_frames(v5, k_frames).reshape(b * g, c * f, h, d)
        og = jax.nn.dot_product_attention(qg, kg, vg, scale=scale, implementation=implementation)
        outs.append(og.reshape(b, g * a, f, h, d))
        order.extend(q_frames.reshape(-1).tolist())
    out = jnp.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]
    if order != list(range(t)):
        inv = np.argsort(np.array(order))
        out = out[:, inv]
    return out.reshape(b, n, h, d).astype(out_dtype)
