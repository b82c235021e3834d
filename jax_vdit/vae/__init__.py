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

from jax_vdit.lazy_exports import lazy_exports

# name -> the module that defines it; imported on first use, so that the jax-free helpers of this package (the
# compile workers' launcher, jax_vdit.vae.compile_worker) load without JAX
_EXPORTS = {
    **dict.fromkeys(("SCALING_FACTOR", "ComputeConfig", "VAEConfig", "VAEConfigError"), "jax_vdit.vae.config"),
    **dict.fromkeys(("CausalVAE", "VAEEncoderMissingError", "abstract_vae", "param_count", "random_vae",
                     "without_encoder"), "jax_vdit.vae.model"),
    **dict.fromkeys(("decode_latents_to_video", "decode_latents_to_video_parts", "encode_video_to_latents",
                     "DEFAULT_MP4_PRESET", "MP4_PRESETS", "write_video", "write_video_parts"),
                    "jax_vdit.vae.pipeline"),
    **dict.fromkeys(("DiagonalGaussian", "clear_compile_cache", "compile_log", "debug_taps", "decode",
                     "decode_nthwc", "decode_nthwc_parts", "encode", "encode_moments_nthwc", "tile_runner",
                     "tiled_apply", "tiled_apply_parts"), "jax_vdit.vae.runtime"),
    **dict.fromkeys(("TilingConfig", "TilingConfigError"), "jax_vdit.vae.tiling"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = [
    "SCALING_FACTOR",
    "CausalVAE",
    "ComputeConfig",
    "DiagonalGaussian",
    "TilingConfig",
    "TilingConfigError",
    "VAEConfig",
    "VAEConfigError",
    "VAEEncoderMissingError",
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
    "without_encoder",
    "write_video",
    "write_video_parts",
    "MP4_PRESETS",
    "DEFAULT_MP4_PRESET",
]
