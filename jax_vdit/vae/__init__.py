"""Open-Sora-Plan v1.2 CausalVAE in Flax NNX: decode DiT latents to video and encode video to latents.

Public API::

    from jax_vdit.io import load_vae                                       # release weights
    from jax_vdit.vae import decode_latents_to_video, write_video, TilingConfig
    vae = load_vae("Open-Sora-Plan-v1.2.0/vae", dtype=jnp.bfloat16)      # config.json + checkpoint.ckpt
    frames = decode_latents_to_video(vae, latents)                         # (B, F, H, W, 3) uint8, release tiling
    write_video(frames[0], "out.mp4", fps=24)

Lower level: :func:`decode` / :func:`encode` on (B, C, T, H, W) arrays, with ``tiling=TilingConfig...``;
:class:`CausalVAE` works channels-last (N, T, H, W, C) internally.
"""

from jax_vdit.vae.config import SCALING_FACTOR, ComputeConfig, VAEConfig, VAEConfigError
from jax_vdit.vae.model import CausalVAE, abstract_vae, param_count, random_vae
from jax_vdit.vae.pipeline import (
    decode_latents_to_video,
    decode_latents_to_video_parts,
    encode_video_to_latents,
    DEFAULT_MP4_PRESET,
    MP4_PRESETS,
    write_video,
    write_video_parts,
)
from jax_vdit.vae.runtime import (
    DiagonalGaussian,
    clear_compile_cache,
    compile_log,
    debug_taps,
    decode,
    decode_nthwc,
    decode_nthwc_parts,
    encode,
    encode_moments_nthwc,
    tile_runner,
    tiled_apply,
    tiled_apply_parts,
)
from jax_vdit.vae.tiling import TilingConfig, TilingConfigError

__all__ = [
    "SCALING_FACTOR",
    "CausalVAE",
    "ComputeConfig",
    "DiagonalGaussian",
    "TilingConfig",
    "TilingConfigError",
    "VAEConfig",
    "VAEConfigError",
    "abstract_vae",
    "clear_compile_cache",
    "compile_log",
    "debug_taps",
    "decode",
    "decode_latents_to_video",
    "decode_latents_to_video_parts",
    "decode_nthwc",
    "decode_nthwc_parts",
    "encode",
    "encode_moments_nthwc",
    "encode_video_to_latents",
    "param_count",
    "random_vae",
    "tile_runner",
    "tiled_apply",
    "tiled_apply_parts",
    "write_video",
    "write_video_parts",
    "MP4_PRESETS",
    "DEFAULT_MP4_PRESET",
]
