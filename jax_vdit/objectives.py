"""The release's pre-training objective (spec section 5) as a training-loop :class:`~jax_vdit.training.Objective`.

epsilon prediction on the DDPM schedule; t ~ U{0..999}; noise = N(0, I) + offset * N(0, I) of shape (B, C, 1, 1, 1)
(the offset noise is part of the target); loss = mean(min(SNR_t, gamma) / SNR_t * (eps_hat - noise)^2);
captions replaced by the empty caption with probability ``caption_dropout`` (for classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jax_vdit import schedules
from jax_vdit.model.attention import DENSE, AttentionConfig


TIMESTEP_BANDS = 4


def timestep_band_mse(per_sample: jax.Array, t: jax.Array, num_train_timesteps: int,
                      bands: int = TIMESTEP_BANDS) -> dict[str, jax.Array]:
    """Unweighted mse per timestep band: ``{"mse_t0-249": ..., ...}`` for ``bands`` equal bands of the training
    timesteps (NaN for a band no sample of the batch drew). Shows where the error comes from (a Min-SNR-weighted
    loss hides the low-noise bands, whose weight is ~gamma / SNR). per_sample, t: (B,)."""
    width = num_train_timesteps // bands
    band = jnp.minimum(t // width, bands - 1)
    out = {}
    for i in range(bands):
        hit = (band == i).astype(per_sample.dtype)
        count = jnp.sum(hit)
        hi = num_train_timesteps - 1 if i == bands - 1 else (i + 1) * width - 1
        out[f"mse_t{i * width}-{hi}"] = jnp.where(count > 0, jnp.sum(per_sample * hit) / jnp.maximum(count, 1),
                                                  jnp.nan)
    return out


@dataclass(frozen=True)
class DiffusionObjective:
    """Batch keys: ``latents`` (B,C,T,H,W), ``text`` (B,L,Ct), ``text_mask`` (B,L).
    Frozen context: ``uncond_text`` (L,Ct) and ``uncond_mask`` (L,) — the encoding of the empty caption."""

    min_snr_gamma: float = 5.0
    noise_offset: float = 0.02
    caption_dropout: float = 0.1
    schedule: schedules.DDPMSchedule = schedules.RELEASE_SCHEDULE
    attention: AttentionConfig = DENSE

    def __call__(self, model, batch, key, context):
        x0 = batch["latents"].astype(jnp.float32)
        text, mask = batch["text"], batch["text_mask"]
        b = x0.shape[0]
        k_t, k_noise, k_offset, k_drop = jax.random.split(key, 4)
        t = jax.random.randint(k_t, (b,), 0, self.schedule.num_train_timesteps)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        if self.noise_offset:
            noise = noise + self.noise_offset * jax.random.normal(k_offset, x0.shape[:2] + (1, 1, 1), jnp.float32)
        if self.caption_dropout:
            frozen = context["frozen"]
            drop = jax.random.bernoulli(k_drop, self.caption_dropout, (b,))
            text = jnp.where(drop[:, None, None], frozen["uncond_text"][None].astype(text.dtype), text)
            mask = jnp.where(drop[:, None], frozen["uncond_mask"][None].astype(mask.dtype), mask)
        x_t = schedules.add_noise(x0, noise, t, self.schedule)
        eps = model(x_t, t.astype(jnp.float32), text, mask, attention=self.attention).astype(jnp.float32)
        weights = schedules.min_snr_weights(t, self.min_snr_gamma, self.schedule)
        per_sample = jnp.mean(jnp.square(eps - noise), axis=tuple(range(1, x0.ndim)))
        loss = jnp.mean(per_sample * weights)
        return loss, {"mse": jnp.mean(per_sample), **timestep_band_mse(per_sample, t, self.schedule.num_train_timesteps)}
