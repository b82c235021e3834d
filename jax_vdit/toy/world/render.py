"""View toy-world latents: latents -> RGB frames (inverting the channel encoding), and animated GIF grids.

The objectness channel (3) is not shown; channels 0-2 (luma, red-green, yellow-blue) are inverted exactly to
linear RGB and clipped to [0, 1] (no gamma), so a ground-truth object shows its spec colour.
"""

from __future__ import annotations

import math
import os
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import ToyWorldConfig, get_config
from .encoding import latent_to_raw, opponent_to_rgb


def latents_to_rgb(latents: np.ndarray, config: ToyWorldConfig | None = None, scale: int = 1) -> np.ndarray:
    """(B, 4, T, H, W) (or (4, T, H, W)) float latents -> (B, T, H*scale, W*scale, 3) (or (T, ...)) uint8 RGB,
    nearest-neighbour upscaled by ``scale``. ``config`` defaults to the default preset."""
    config = config or get_config()
    x = np.asarray(latents)
    single = x.ndim == 4
    if single:
        x = x[None]
    if x.ndim != 5 or x.shape[1] != 4:
        raise ValueError(f"latents must be (B, 4, T, H, W) or (4, T, H, W), got {np.shape(latents)}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    raw = latent_to_raw(x, config)  # (B, 4, T, H, W)
    rgb = opponent_to_rgb(np.moveaxis(raw[:, :3], 1, -1))  # (B, T, H, W, 3)
    out = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    if scale > 1:
        out = out.repeat(scale, axis=2).repeat(scale, axis=3)
    return out[0] if single else out


def _caption_strip(text: str, width: int, lines: int) -> np.ndarray:
    """(h, width, 3) uint8 white text on dark grey, wrapped to ``lines`` lines."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=11)  # scalable font when Pillow has FreeType
    except (TypeError, OSError, ImportError):  # pragma: no cover - bitmap fallback
        font = ImageFont.load_default()
    line_h = 13
    img = Image.new("RGB", (width, lines * line_h + 4), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    char_w = max(1.0, draw.textlength("abcdefghij", font=font) / 10)
    wrapped = textwrap.wrap(text, width=max(4, int((width - 4) / char_w)), break_on_hyphens=False) or [""]
    for i, line in enumerate(wrapped[:lines]):
        draw.text((2, 2 + i * line_h), line, fill=(235, 235, 235), font=font)
    return np.asarray(img)


def video_grid(
    videos: np.ndarray,
    captions: Sequence[str] | None = None,
    *,
    config: ToyWorldConfig | None = None,
    scale: int = 6,
    ncols: int | None = None,
    pad: int = 2,
    caption_lines: int = 4,
) -> np.ndarray:
    """Tile videos into one (T, H_grid, W_grid, 3) uint8 animation.

    ``videos``: (B, 4, T, H, W) float latents, or already-rendered (B, T, h, w, 3) uint8 frames. ``captions``: B
    strings drawn under the tiles (wrapped).
    """
    v = np.asarray(videos)
    if v.ndim == 5 and v.shape[-1] == 3 and v.dtype == np.uint8:
        frames = v
    else:
        frames = latents_to_rgb(v, config, scale)
    b, t, h, w, _ = frames.shape
    if captions is not None and len(captions) != b:
        raise ValueError(f"got {b} videos but {len(captions)} captions")
    ncols = ncols or min(b, max(1, math.ceil(math.sqrt(b))))
    nrows = math.ceil(b / ncols)
    cap_h = _caption_strip("", w, caption_lines).shape[0] if captions is not None else 0
    tile_h = h + cap_h
    grid = np.full((t, nrows * (tile_h + pad) + pad, ncols * (w + pad) + pad, 3), 48, dtype=np.uint8)
    for i in range(b):
        r, c = divmod(i, ncols)
        y0, x0 = pad + r * (tile_h + pad), pad + c * (w + pad)
        grid[:, y0 : y0 + h, x0 : x0 + w] = frames[i]
        if captions is not None:
            grid[:, y0 + h : y0 + tile_h, x0 : x0 + w] = _caption_strip(captions[i], w, caption_lines)[None]
    return grid


def save_grid_gif(
    videos: np.ndarray,
    path: str | os.PathLike,
    captions: Sequence[str] | None = None,
    fps: float = 4.0,
    *,
    config: ToyWorldConfig | None = None,
    scale: int = 6,
    ncols: int | None = None,
) -> Path:
    """Write an animated, looping GIF grid of ``videos`` (see :func:`video_grid`) to ``path`` atomically (temporary
    file in the same folder, then rename). Returns the path."""
    import imageio.v3 as iio

    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"save_grid_gif writes GIFs; the path must end in .gif, got {path}")
    grid = video_grid(videos, captions, config=config, scale=scale, ncols=ncols)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".gif", prefix=f".{path.stem}.", dir=path.parent)
    os.close(fd)
    try:
        iio.imwrite(tmp, list(grid), extension=".gif", duration=1000.0 / fps, loop=0)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
