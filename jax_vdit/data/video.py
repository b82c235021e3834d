"""Read one training clip from a video file: frame sampling at a target fps, resize + centre crop, uint8 frames.

Decoding is PyAV's (FFmpeg). A clip is ``frames`` frames taken every ``stride`` source frames, where
``stride = max(1, round(source_fps / fps))`` (``fps=None``: every frame); the window of
``(frames - 1) * stride + 1`` source frames sits at the centre of the video (``start="center"``) or at its start
(``start="begin"``). Each frame is resized with PIL's bicubic filter (antialiased when shrinking) so that it covers
``height x width`` (short side to fit, aspect kept), then centre-cropped. Upscaling is refused unless allowed.

Clips that cannot be used raise a :class:`ClipError` subclass whose ``reason`` is a short code
(``missing``, ``unreadable``, ``too_short``, ``too_small``) and whose message says why.
"""

from __future__ import annotations

import collections
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLIP_STARTS = ("center", "begin")


class ClipError(Exception):
    """A clip that cannot be used; ``reason`` is a short code, ``detail`` a sentence, ``path`` the file."""

    reason = "unusable"

    def __init__(self, path: str | os.PathLike, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class MissingClipError(ClipError):
    reason = "missing"


class UnreadableClipError(ClipError):
    reason = "unreadable"


class ClipTooShortError(ClipError):
    reason = "too_short"


class ClipTooSmallError(ClipError):
    reason = "too_small"


@dataclass(frozen=True)
class ClipSpec:
    """What to cut from each video.

    frames: frames per clip, 4k+1 (the VAE's causal 4x time compression: 1, 5, 9, ..., 29, ..., 93).
    height, width: output size in pixels.
    fps: target frame rate; the source is sampled every ``round(source_fps / fps)`` frames (>= 1). None: every
      frame.
    start: "center" (window in the middle of the video) or "begin".
    allow_upscale: resize sources smaller than height x width up instead of refusing them.
    """

    frames: int
    height: int
    width: int
    fps: float | None = 24.0
    start: str = "center"
    allow_upscale: bool = False

    def __post_init__(self) -> None:
        if self.frames < 1 or (self.frames - 1) % 4:
            raise ValueError(f"frames must be 4k+1 (1, 5, 9, ..., 29, ..., 93) for the causal VAE, got {self.frames}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"height and width must be positive, got {self.height} x {self.width}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number or None (every source frame), got {self.fps}")
        if self.start not in CLIP_STARTS:
            raise ValueError(f"start must be one of {CLIP_STARTS}, got {self.start!r}")


@dataclass(frozen=True)
class Clip:
    """A decoded clip: ``frames`` uint8 (F, H, W, 3) and where it came from (source frame indices
    ``start_frame + k * stride``)."""

    frames: np.ndarray
    start_frame: int
    stride: int
    source_fps: float
    source_size: tuple[int, int]  # (height, width) of the source video


def frame_stride(source_fps: float | None, fps: float | None) -> int:
    """Source frames per clip frame: ``max(1, round(source_fps / fps))``; 1 when ``fps`` is None."""
    if fps is None:
        return 1
    if not source_fps or not math.isfinite(source_fps) or source_fps <= 0:
        raise ValueError(f"source frame rate {source_fps} is unknown")
    return max(1, round(source_fps / fps))


def resized_size(src_h: int, src_w: int, height: int, width: int) -> tuple[int, int, float]:
    """(h, w, scale) of the resize that makes a src_h x src_w frame cover height x width, aspect kept."""
    scale = max(height / src_h, width / src_w)
    return max(height, round(src_h * scale)), max(width, round(src_w * scale)), scale


def resize_and_crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (height, width, 3): bicubic resize to cover, then a centre crop."""
    src_h, src_w = frame.shape[:2]
    new_h, new_w, _ = resized_size(src_h, src_w, height, width)
    if (new_h, new_w) != (src_h, src_w):
        from PIL import Image

        frame = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC))
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(frame[top : top + height, left : left + width])


def _count_frames(path: Path, stream) -> int:
    """Frame count from the container, or by counting the stream's packets (no decoding) when it has none."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    import av

    with av.open(str(path)) as container:
        return sum(1 for packet in container.demux(video=0) if packet.size)


def read_clip(path: str | os.PathLike, spec: ClipSpec) -> Clip:
    """Decode the clip ``spec`` asks for from the video at ``path``.

    Returns a :class:`Clip` with uint8 frames (spec.frames, spec.height, spec.width, 3). Raises
    :class:`MissingClipError`, :class:`UnreadableClipError`, :class:`ClipTooShortError` or
    :class:`ClipTooSmallError`.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise MissingClipError(path, "file not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise UnreadableClipError(path, f"cannot open: {err}") from err
    with container:
        if not container.streams.video:
            raise UnreadableClipError(path, "no video stream")
        stream = container.streams.video[0]
        src_w, src_h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if src_w <= 0 or src_h <= 0:
            raise UnreadableClipError(path, "video stream has no frame size")
        _, _, scale = resized_size(src_h, src_w, spec.height, spec.width)
        if scale > 1 and not spec.allow_upscale:
            raise ClipTooSmallError(path, f"{src_w}x{src_h} is smaller than {spec.width}x{spec.height} "
                                          "(upscaling not allowed)")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        source_fps = float(rate) if rate else float("nan")
        try:
            stride = frame_stride(source_fps, spec.fps)
        except ValueError as err:
            raise UnreadableClipError(path, str(err)) from err
        needed = (spec.frames - 1) * stride + 1
        try:
            total = _count_frames(path, stream) if spec.start == "center" else needed
            first = max(0, (total - needed) // 2)
            # keep the last `needed` decoded frames (PyAV frames, converted at the end): if the video turns out
            # shorter than its frame count said, the window still ends at the last frame
            window: collections.deque = collections.deque(maxlen=needed)
            index = -1
            for index, frame in enumerate(container.decode(stream)):
                window.append(frame)
                if index >= first + needed - 1:
                    break
            picked = [frame.to_ndarray(format="rgb24") for frame in list(window)[::stride]]
        except (av.error.FFmpegError, OSError, ValueError) as err:
            raise UnreadableClipError(path, f"decoding failed: {err}") from err
    if index < 0:
        raise UnreadableClipError(path, "no frame could be decoded")
    if len(window) < needed:
        raise ClipTooShortError(path, f"{index + 1} frames, needs {needed} ({spec.frames} frames at stride {stride}"
                                      f" from {source_fps:g} fps)")
    frames = np.stack([resize_and_crop(f, spec.height, spec.width) for f in picked])
    start = index + 1 - needed
    return Clip(frames=frames, start_frame=start, stride=stride, source_fps=source_fps, source_size=(src_h, src_w))
