"""Tiled encoding/decoding geometry of the v1.2 release (``tiled_decode``/``tiled_encode`` and their 2-D parts).

Time: chunk starts every ``min_t - 1`` frames; chunk ``i`` covers starts ``s_i .. s_{i+1}`` inclusive (one
frame shared with the next chunk), plus a last chunk ``s_last .. end`` if needed; from every chunk but the first
the first output frame is dropped. No blending in time.

Space (inside every time chunk, always, even when one tile would do): tiles of ``in_size`` start every
``int(in_size * (1 - overlap))`` elements (edge tiles are smaller); each is run on its own; in raster order the
top ``e`` rows of a tile are cross-faded with the last ``e`` rows of the (already blended) tile above, then its
left ``e`` columns with the (already blended) tile to the left, ``e = min(int(out_size * overlap), sizes)``;
every tile is cropped to its top-left ``out_size - int(out_size * overlap)`` square and the crops concatenated.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32


class TilingConfigError(ValueError):
    """Tiling settings that the release geometry cannot use."""


@dataclass(frozen=True)
class TilingConfig:
    """Tile sizes of the release's tiled VAE (names as the release's attributes).

    tile_sample_min_size / tile_latent_min_size: spatial tile size in pixels / latents.
    tile_sample_min_size_t / tile_latent_min_size_t: time chunk length in frames / latent frames.
    tile_overlap_factor: overlap fraction (blend width = int(size * overlap)).
    max_tile_batch: execution only -- tiles of equal shape are decoded together in batches of up to this many
      (exact: GroupNorm statistics are per sample). 1 keeps peak memory lowest.
    uniform_tiles: execution only, decoding only: every tile runs zero-padded to the grid's largest tile (the
      full tile size, or the latent's size along an axis shorter than a tile) and every time chunk to the longest
      chunk, with its real size passed as data (convolutions see zeros outside it, GroupNorm, attention and the
      interpolations' edge clamps use only it; ``jax_vdit.vae.ops.valid_region``), so the smaller edge tiles and
      the short last chunk share the largest tile's compiled programs: 40 decode stage programs at 29x720p
      become 10, and 80 at 93x720p become 10. Same results up to float rounding; the padding costs compute
      (1.42x the decoder's work at 29x720p, 1.69x at 93x720p, 2.7x at 480p, whose edge tiles are 4 latent rows
      high).

    Presets: :meth:`sample_script` (the release scripts' ``--enable_tiling``: 512/64/29/8, overlap 0.125),
    :meth:`class_default` (256/32/33/16, 0.125), :meth:`save_memory` (``--save_memory``: 256/32/29/8, 0.125).
    """

    tile_sample_min_size: int = 512
    tile_latent_min_size: int = 64
    tile_sample_min_size_t: int = 29
    tile_latent_min_size_t: int = 8
    tile_overlap_factor: float = 0.125
    max_tile_batch: int = 1
    uniform_tiles: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.tile_overlap_factor < 1.0:
            raise TilingConfigError(f"tile_overlap_factor = {self.tile_overlap_factor} must be in [0, 1)")
        for name in ("tile_sample_min_size_t", "tile_latent_min_size_t"):
            if getattr(self, name) < 2:
                raise TilingConfigError(f"{name} = {getattr(self, name)} must be >= 2 (chunks share one frame)")
        for name in ("tile_sample_min_size", "tile_latent_min_size"):
            size = getattr(self, name)
            if size < 1 or int(size * (1 - self.tile_overlap_factor)) < 1:
                raise TilingConfigError(f"{name} = {size} with overlap {self.tile_overlap_factor} gives no tile stride")
        if self.max_tile_batch < 1:
            raise TilingConfigError("max_tile_batch must be >= 1")

    @classmethod
    def sample_script(cls, **kw) -> "TilingConfig":
        """``sample_t2v.py --enable_tiling`` (used by the release scripts): 512 / 64 / 29 / 8, overlap 0.125."""
        return cls(512, 64, 29, 8, 0.125, **kw)

    @classmethod
    def class_default(cls, **kw) -> "TilingConfig":
        """The v1.2.0 class defaults: 256 / 32 / 33 / 16, overlap 0.125."""
        return cls(256, 32, 33, 16, 0.125, **kw)

    @classmethod
    def save_memory(cls, **kw) -> "TilingConfig":
        """``sample_t2v.py --save_memory``: 256 / 32 / 29 / 8, overlap 0.125."""
        return cls(256, 32, 29, 8, 0.125, **kw)

    # geometry shortcuts
    def decode_needs_tiling(self, t: int, h: int, w: int) -> bool:
        """Release rule for latents (t, h, w): tile when w or h > tile_latent_min_size or t > ..._t."""
        return w > self.tile_latent_min_size or h > self.tile_latent_min_size or t > self.tile_latent_min_size_t

    def encode_needs_tiling(self, t: int, h: int, w: int) -> bool:
        return w > self.tile_sample_min_size or h > self.tile_sample_min_size or t > self.tile_sample_min_size_t


PRESETS = {
    "sample_script": TilingConfig.sample_script,
    "class_default": TilingConfig.class_default,
    "save_memory": TilingConfig.save_memory,
}


def time_chunks(t: int, min_t: int) -> list[tuple[int, int]]:
    """[start, end) of the release's time chunks for ``t`` frames and chunk length ``min_t``."""
    starts = list(range(0, t, min_t - 1))
    if len(starts) == 1:
        return [(0, t)]
    chunks = [(starts[i], starts[i + 1] + 1) for i in range(len(starts) - 1)]
    if chunks[-1][1] > t:  # pragma: no cover - cannot happen with these starts; kept for parity
        chunks[-1] = (chunks[-1][0], t)
    elif chunks[-1][1] < t:
        chunks.append((starts[-1], t))
    return chunks


def tile_starts(size: int, in_size: int, overlap: float) -> list[int]:
    """Start offsets of spatial tiles along one axis: every ``int(in_size * (1 - overlap))``."""
    return list(range(0, size, int(in_size * (1 - overlap))))


def blend_v(above: jax.Array, cur: jax.Array, extent: int) -> jax.Array:
    """Cross-fade the top rows of ``cur`` with the bottom rows of ``above`` (axis 2 of N,T,H,W,C)."""
    e = min(above.shape[2], cur.shape[2], extent)
    if e <= 0:
        return cur
    y = (np.arange(e, dtype=np.float64) / e).reshape(1, 1, e, 1, 1)
    top = above[:, :, -e:].astype(F32) * jnp.asarray(1.0 - y, F32) + cur[:, :, :e].astype(F32) * jnp.asarray(y, F32)
    return jnp.concatenate([top.astype(cur.dtype), cur[:, :, e:]], axis=2)


def blend_h(left: jax.Array, cur: jax.Array, extent: int) -> jax.Array:
    """Cross-fade the left columns of ``cur`` with the right columns of ``left`` (axis 3 of N,T,H,W,C)."""
    e = min(left.shape[3], cur.shape[3], extent)
    if e <= 0:
        return cur
    x = (np.arange(e, dtype=np.float64) / e).reshape(1, 1, 1, e, 1)
    side = left[:, :, :, -e:].astype(F32) * jnp.asarray(1.0 - x, F32)
    side = side + cur[:, :, :, :e].astype(F32) * jnp.asarray(x, F32)
    return jnp.concatenate([side.astype(cur.dtype), cur[:, :, :, e:]], axis=3)


def _assemble(grid: list[list[jax.Array]], extent: int, keep: int) -> jax.Array:
    grid = [list(row) for row in grid]
    rows = []
    for i, row in enumerate(grid):
        crops = []
        for j in range(len(row)):
            tile = row[j]
            if i > 0:
                tile = blend_v(grid[i - 1][j], tile, extent)
            if j > 0:
                tile = blend_h(row[j - 1], tile, extent)
            row[j] = tile  # later tiles blend with the blended version (the release modifies tiles in place)
            crops.append(tile[:, :, :keep, :keep])
        rows.append(jnp.concatenate(crops, axis=3))
    return jnp.concatenate(rows, axis=2)


assemble_tiles = jax.jit(_assemble, static_argnums=(1, 2))
"""Blend a raster grid of tile outputs (N, T, h_ij, w_ij, C) and concatenate the crops (jitted per geometry)."""
