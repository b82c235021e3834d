"""Pipeline helpers: DiT latents -> uint8 frames -> mp4, and video -> DiT latents (release conventions)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit.host_arrays import to_device
from jax_vdit.vae.model import CausalVAE
from jax_vdit.vae.runtime import DiagonalGaussian, decode_nthwc, encode_moments_nthwc
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
    latents = to_device(latents)
    if latents.ndim != 5 or latents.shape[1] != vae.config.embed_dim:
        raise ValueError(f"latents must have shape (B, {vae.config.embed_dim}, t, h, w); got {tuple(latents.shape)}")
    scale = vae.config.scaling_factor if scaling_factor is None else scaling_factor
    z = _scaled_channels_last(latents, to_device(scale, np.float32))
    frames = decode_nthwc(vae, z, tiling=tiling)  # (B, T, H, W, 3): already frame-major, channels-last
    return np.asarray(_to_uint8(frames))


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


def _write_mp4_imageio(frames: np.ndarray, path: Path, fps: int) -> None:
    import imageio.v2 as imageio

    with imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=2
    ) as writer:
        for frame in frames:
            writer.append_data(frame)


def _write_mp4_pyav(frames: np.ndarray, path: Path, fps: int) -> None:
    """H.264 (libx264, yuv420p) through PyAV; odd sizes are padded by one edge pixel as yuv420p needs."""
    import av

    t, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w + pad_w, h + pad_h, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(frames, path: str | os.PathLike, fps: int = 24) -> Path:
    """Write uint8 frames (T, H, W, 3) (or (1, T, H, W, 3)) to ``path`` and return the path written.

    mp4 (H.264, yuv420p) through imageio's ffmpeg plugin, or through PyAV where imageio-ffmpeg is missing; if
    neither can encode H.264, a GIF next to it (``path`` with suffix ``.gif``) with a warning. The file is
    written to a temporary name and renamed.
    """
    frames = np.asarray(frames)
    if frames.ndim == 5:
        if frames.shape[0] != 1:
            raise ValueError(f"write_video takes one video; got a batch of {frames.shape[0]} (write each one)")
        frames = frames[0]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3); got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8; got {frames.dtype}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = _write_mp4_imageio if _ffmpeg_available() else _write_mp4_pyav if _pyav_h264_available() else None
    if writer is not None:
        final = path if path.suffix else path.with_suffix(".mp4")
        tmp = final.with_name(f".{final.stem}.tmp{final.suffix}")
        writer(frames, tmp, fps)
    else:
        final = path.with_suffix(".gif")
        warnings.warn(f"no H.264 encoder (imageio-ffmpeg or PyAV) is available; writing a GIF instead: {final}",
                      stacklevel=2)
        tmp = final.with_name(f".{final.stem}.tmp.gif")
        import imageio.v3 as iio

        iio.imwrite(tmp, frames, extension=".gif", plugin="pillow", duration=1000.0 / fps, loop=0)  # ms/frame
    os.replace(tmp, final)
    return final
