"""Sampling held-out toy prompts and scoring them with ToyBench."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit import sampling
from jax_vdit.model import DENSE, AttentionConfig
from jax_vdit.toy.world import ToyWorldConfig, encode_captions, evaluate, heldout_specs


def encode_specs(specs, world: ToyWorldConfig) -> tuple[np.ndarray, np.ndarray]:
    return encode_captions([s.caption for s in specs], world)


def sample_specs(
    model,
    specs,
    world: ToyWorldConfig,
    *,
    plan: sampling.SamplingPlan,
    guidance_scale: float | None,
    key: jax.Array,
    attention: AttentionConfig = DENSE,
    batch_size: int = 32,
    latent_dtype=jnp.float32,
) -> np.ndarray:
    """Latents (N, 4, T, H, W) float32 for the captions of ``specs``. ``guidance_scale=None``: no CFG (one
    forward per step, as consistency students sample); otherwise CFG against the empty caption."""
    text, mask = encode_specs(specs, world)
    neg_text, neg_mask = encode_captions([""], world)
    out = []
    for i in range(0, len(specs), batch_size):
        kw = {}
        if guidance_scale is not None:
            kw = dict(negative_text=jnp.asarray(neg_text), negative_mask=jnp.asarray(neg_mask),
                      guidance_scale=guidance_scale)
        lat = sampling.sample(model, jnp.asarray(text[i:i + batch_size]), jnp.asarray(mask[i:i + batch_size]),
                              key=jax.random.fold_in(key, i), latent_shape=world.latent_shape, plan=plan,
                              attention=attention, latent_dtype=latent_dtype, **kw)
        out.append(np.asarray(jax.device_get(lat), np.float32))
    return np.concatenate(out)


def toybench(videos: np.ndarray, specs, world: ToyWorldConfig, reference: np.ndarray | None = None) -> dict:
    """ToyBench means (plus ``teacher_rel_err`` against ``reference`` videos from the same noise)."""
    from jax_vdit.toy.world import teacher_error

    scores = {k: float(v) for k, v in evaluate(videos, list(specs), world)["mean"].items()}
    if reference is not None:
        scores.update(teacher_error(videos, reference)["mean"])
    return scores


def heldout(world: ToyWorldConfig, count: int | None = None):
    specs = heldout_specs(world)
    return specs if count is None else specs[:count]


