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
        return loss, {"mse": jnp.mean(per_sample)}
