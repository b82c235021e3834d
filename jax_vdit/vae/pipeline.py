"""Pipeline helpers: DiT latents -> uint8 frames -> mp4, and video -> DiT latents (release conventions)."""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit.host_arrays import to_device
from jax_vdit.mp4_presets import DEFAULT_MP4_PRESET, MP4_PRESETS, check_mp4_preset  # noqa: F401 (re-exported)
from jax_vdit.vae.model import CausalVAE
from jax_vdit.vae.runtime import DiagonalGaussian, decode_nthwc_parts, encode_moments_nthwc
from jax_vdit.vae.tiling import TilingConfig

F32 = jnp.float32
RELEASE_TILING = TilingConfig.sample_script()


@jax.jit
def _to_uint8(x: jax.Array) -> jax.Array:
    """Release pixel mapping: clamp(x/2 + 0.5, 0, 1) * 255, truncated to uint8 (as ``tensor.to(torch.uint8)``)."""
    return (jnp.clip(x.astype(F32) / 2.0 + 0.5, 0.0, 1.0) * 255.0).astype(jnp.uint8)


@jax.jit
def _scaled_channels_last(latents: jax.Array, scale: jax.Array) -> jax.Array:
    """DiT latents (B, C, t, h, w) -> float32 (B, t, h, w, C) divided by ``scale``, in one program."""
    return jnp.transpose(latents.astype(F32) / scale, (0, 2, 3, 4, 1))


def decode_latents_to_video(
    vae: CausalVAE,
    latents: jax.Array,
    *,
    tiling: TilingConfig | None = RELEASE_TILING,
    scaling_factor: float | None = None,
) -> np.ndarray:
    """DiT latents (B, C, t, h, w) -> uint8 frames (B, 4t-3, 8h, 8w, 3) on the host.

    Computes ``decode(latents / 0.18215)`` (tiled with the release's sample-script tiles by default; pass
    ``tiling=None`` to decode in one piece) and maps pixels with ``clamp(x/2 + 0.5, 0, 1) * 255 -> uint8``.
    """
    return frames_on_host(decode_latents_to_video_parts(vae, latents, tiling=tiling, scaling_factor=scaling_factor))


def frames_on_host(parts: list[jax.Array]) -> np.ndarray:
    """Time-ordered uint8 parts (B, T_i, H, W, 3) of :func:`decode_latents_to_video_parts` -> (B, T, H, W, 3) on
    the host."""
    return np.concatenate([np.asarray(part) for part in parts], axis=1)


def decode_latents_to_video_parts(
    vae: CausalVAE,
    latents: jax.Array,
    *,
    tiling: TilingConfig | None = RELEASE_TILING,
    scaling_factor: float | None = None,
) -> list[jax.Array]:
    """:func:`decode_latents_to_video` as uint8 frames on the device, one array (B, T_i, 8h, 8w, 3) per time
    chunk of the tiling, in order (joined along axis 1 they are the video). Everything is dispatched when this
    returns, so reading the first part (``np.asarray``) waits for that chunk only: a writer can encode it while
    the device decodes the rest (:func:`write_video_parts`)."""
    latents = to_device(latents)
    if latents.ndim != 5 or latents.shape[1] != vae.config.embed_dim:
        raise ValueError(f"latents must have shape (B, {vae.config.embed_dim}, t, h, w); got {tuple(latents.shape)}")
    scale = vae.config.scaling_factor if scaling_factor is None else scaling_factor
    z = _scaled_channels_last(latents, to_device(scale, np.float32))
    # (B, T_i, H, W, 3) each: already frame-major, channels-last
    return [_to_uint8(part) for part in decode_nthwc_parts(vae, z, tiling=tiling)]


def video_to_model_input(video) -> jax.Array:
    """uint8 frames (B, T, H, W, 3) -> float32 (B, T, H, W, 3) in [-1, 1]; float (B, 3, T, H, W) in [-1, 1]
    -> channels-last float32. Anything else raises."""
    video = jnp.asarray(video)
    if video.dtype == jnp.uint8:
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"uint8 video must be frames (B, T, H, W, 3); got {tuple(video.shape)}")
        return video.astype(F32) / 127.5 - 1.0
    if not jnp.issubdtype(video.dtype, jnp.floating):
        raise ValueError(f"video must be uint8 frames or floats in [-1, 1]; got dtype {video.dtype}")
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(
            f"float video must have shape (B, 3, T, H, W) with values in [-1, 1]; got {tuple(video.shape)}"
        )
    return jnp.transpose(video.astype(F32), (0, 2, 3, 4, 1))


def encode_video_to_latents(
    vae: CausalVAE,
    video,
    key: jax.Array | None,
    *,
    mean: bool = False,
    tiling: TilingConfig | None = RELEASE_TILING,
    scaling_factor: float | None = None,
) -> jax.Array:
    """Video -> DiT latents (B, C, ceil(T/4), H/8, W/8): ``posterior.sample(key) * 0.18215`` as the release
    pipeline does (``mean=True``: the posterior mean instead; ``key`` may then be None).

    ``video``: uint8 frames (B, T, H, W, 3), or float (B, 3, T, H, W) in [-1, 1]. T should be 4k+1.
    """
    if not mean and key is None:
        raise ValueError("encode_video_to_latents needs a PRNG key to sample the posterior (or mean=True)")
    x = video_to_model_input(video)
    posterior = DiagonalGaussian.from_moments(encode_moments_nthwc(vae, x, tiling=tiling))
    scale = vae.config.scaling_factor if scaling_factor is None else scaling_factor
    z = posterior.mode() if mean else posterior.sample(key)
    return z * scale


def _ffmpeg_available() -> bool:
    try:
        import imageio_ffmpeg

        return bool(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # noqa: BLE001 - any failure means: no usable ffmpeg
        return False


def _pyav_h264_available() -> bool:
    try:
        import av

        av.codec.Codec("libx264", "w")
        return True
    except Exception:  # noqa: BLE001 - PyAV missing or built without an H.264 encoder
        return False


def _write_mp4_imageio(frames: Iterable[np.ndarray], path: Path, fps: int, preset: str) -> None:
    """H.264 (libx264, yuv420p, speed ``preset``) through imageio's ffmpeg plugin, frame by frame (each (H, W, 3)
    uint8)."""
    import imageio.v2 as imageio

    with imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2,
        output_params=["-preset", preset],
    ) as writer:
        for frame in frames:
            writer.append_data(frame)


def _write_mp4_pyav(frames: Iterable[np.ndarray], path: Path, fps: int, preset: str) -> None:
    """H.264 (libx264, yuv420p, speed ``preset``) through PyAV, frame by frame (each (H, W, 3) uint8; at least
    one); odd sizes are padded by one edge pixel as yuv420p needs."""
    import av

    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            h, w, _ = frame.shape
            pad_h, pad_w = h % 2, w % 2
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            if stream is None:
                stream = container.add_stream("libx264", rate=fps, options={"preset": preset})
                stream.width, stream.height, stream.pix_fmt = w + pad_w, h + pad_h, "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(frames, path: str | os.PathLike, fps: int = 24, *, preset: str = DEFAULT_MP4_PRESET) -> Path:
    """Write uint8 frames (T, H, W, 3) (or (1, T, H, W, 3)) to ``path`` and return the path written.

    mp4 (H.264, yuv420p, libx264's speed ``preset``: one of :data:`MP4_PRESETS`) through imageio's ffmpeg plugin,
    or through PyAV where imageio-ffmpeg is missing; if neither can encode H.264, a GIF next to it (``path`` with
    suffix ``.gif``) with a warning. The file is written to a temporary name and renamed.
    """
    return write_video_parts([frames], path, fps, preset=preset)


class _CheckedFrames:
    """The frames of ``parts`` one by one, each part read to the host (``np.asarray``: waits for that part only)
    and checked: uint8 (T, H, W, 3) or (1, T, H, W, 3), every part of the same frame size. A part that fails (or
    cannot be read) ends the frames early and is kept in ``error``: the encoder then closes normally (an
    interrupted ffmpeg would still write its file after the error reached the caller)."""

    def __init__(self, parts: Iterable, on_part: Callable[[int, np.ndarray], None] | None):
        self.parts, self.on_part = parts, on_part
        self.error: BaseException | None = None

    def _read(self, index: int, part, size) -> np.ndarray:
        frames = np.asarray(part)
        if frames.ndim == 5:
            if frames.shape[0] != 1:
                raise ValueError(f"write_video takes one video; got a batch of {frames.shape[0]} (write each one)")
            frames = frames[0]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must have shape (T, H, W, 3); got {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8; got {frames.dtype}")
        if size is not None and frames.shape[1:3] != size:
            raise ValueError(f"part {index} has frames of {frames.shape[1:3]}, the parts before it {size}")
        if self.on_part is not None:
            self.on_part(index, frames)
        return frames

    def __iter__(self) -> Iterator[np.ndarray]:
        size = None
        try:
            for index, part in enumerate(self.parts):
                frames = self._read(index, part, size)
                size = frames.shape[1:3]
                yield from frames
        except BaseException as err:  # noqa: BLE001 - kept and raised by write_video_parts once the file is closed
            self.error = err


def write_video_parts(parts: Iterable, path: str | os.PathLike, fps: int = 24, *,
                      on_part: Callable[[int, np.ndarray], None] | None = None,
                      preset: str = DEFAULT_MP4_PRESET) -> Path:
    """:func:`write_video` of a video given in time-ordered parts (uint8 (T_i, H, W, 3), host or device arrays,
    e.g. :func:`decode_latents_to_video_parts`), read one at a time: the encoder works on the first part while
    the device still computes the later ones. ``on_part(index, frames)`` is called with each part once it is on
    the host. A bad part raises ValueError and leaves no file."""
    check_mp4_preset(preset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checked = _CheckedFrames(parts, on_part)
    frames = iter(checked)
    first = next(frames, None)  # the first part is checked before a file is opened
    if checked.error is not None:
        raise checked.error
    if first is None:
        raise ValueError("no frames to write")
    writer = _write_mp4_imageio if _ffmpeg_available() else _write_mp4_pyav if _pyav_h264_available() else None
    if writer is not None:
        final = path if path.suffix else path.with_suffix(".mp4")
        tmp = final.with_name(f".{final.stem}.tmp{final.suffix}")
    else:
        final = path.with_suffix(".gif")
        warnings.warn(f"no H.264 encoder (imageio-ffmpeg or PyAV) is available; writing a GIF instead: {final}",
                      stacklevel=2)
        tmp = final.with_name(f".{final.stem}.tmp.gif")
    try:
        if writer is not None:
            writer(itertools.chain([first], frames), tmp, fps, preset)
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, np.stack([first, *frames]), extension=".gif", plugin="pillow", duration=1000.0 / fps,
                        loop=0)  # ms/frame
        if checked.error is not None:  # a later part failed: the encoder has closed the file; drop it
            raise checked.error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)
    return final
