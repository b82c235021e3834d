"""Clip frames -> DiT latents with the CausalVAE, one clip at a time, reproducibly.

Each clip's latents are ``encode_video_to_latents(vae, frames[None], key)`` (the release's ``posterior.sample()
* 0.18215``) with ``key = fold_in(PRNGKey(seed), clip_index)``, so a clip's latents depend only on its frames, the
seed and its index: a resumed or re-ordered run writes the same latents. ``posterior="mean"`` stores the
posterior mean instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jax_vdit.data.presets import POSTERIOR_CHOICES, TILING_CHOICES
from jax_vdit.vae import CausalVAE, TilingConfig, encode_video_to_latents

TILING_PRESETS: dict[str, TilingConfig | None] = {
    "sample-script": TilingConfig.sample_script(),  # 512/64/29/8: the release scripts' --enable_tiling
    "save-memory": TilingConfig.save_memory(),  # 256/32/29/8
    "class-default": TilingConfig.class_default(),  # 256/32/33/16
    "none": None,  # one piece (exact, most memory)
}
POSTERIORS = POSTERIOR_CHOICES
assert tuple(TILING_PRESETS) == TILING_CHOICES


def clip_key(seed: int, clip_index: int) -> jax.Array:
    """The PRNG key that samples clip ``clip_index``'s posterior: ``fold_in(PRNGKey(seed), clip_index)``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), clip_index)


@dataclass(frozen=True)
class LatentSettings:
    """How clips are encoded: posterior "sample" (release) or "mean"; seed of the per-clip keys; tiling preset."""

    posterior: str = "sample"
    seed: int = 0
    tiling: str = "sample-script"

    def __post_init__(self) -> None:
        if self.posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {self.posterior!r}")
        if self.tiling not in TILING_PRESETS:
            raise ValueError(f"tiling must be one of {sorted(TILING_PRESETS)}, got {self.tiling!r}")


class VAEEncoder:
    """``encoder(frames, clip_index)``: uint8 frames (F, H, W, 3) -> float32 latents (C, (F-1)/4+1, H/8, W/8)."""

    def __init__(self, vae: CausalVAE, settings: LatentSettings = LatentSettings()) -> None:
        self.vae = vae
        self.settings = settings
        self.tiling = TILING_PRESETS[settings.tiling]

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return tuple(int(x) for x in self.vae.config.latent_shape(frames, height, width))

    def __call__(self, frames: np.ndarray, clip_index: int) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (F, H, W, 3); got {frames.dtype} {frames.shape}")
        mean = self.settings.posterior == "mean"
        key = None if mean else clip_key(self.settings.seed, clip_index)
        z = encode_video_to_latents(self.vae, frames[None], key, mean=mean, tiling=self.tiling)
        return np.asarray(jax.device_get(z), dtype=np.float32)[0]

    def warm_up(self, frames: int, height: int, width: int) -> float:
        """Compile every encoder stage for clips of (frames, height, width) before the first clip arrives
        (:mod:`jax_vdit.vae.warmup`); returns the seconds it took."""
        from jax_vdit.vae.warmup import precompile_encode

        return precompile_encode(self.vae, (1, frames, height, width, 3), tiling=self.tiling).total_s

    def describe(self) -> dict[str, Any]:
        """What determines the latents (recorded in the manifest; a resumed run must match it)."""
        return {
            "config": self.vae.config.to_dict(),
            "dtype": str(np.dtype(self.vae.dtype)),
            "param_dtype": str(np.dtype(self.vae.param_dtype)),
            "posterior": self.settings.posterior,
            "seed": self.settings.seed,
            "tiling": self.settings.tiling,
            "scaling_factor": self.scaling_factor,
        }
