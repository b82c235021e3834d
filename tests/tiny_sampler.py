"""The tiny random transformer the sampling tests share: the ``tiny`` preset with a non-zero output projection
(so samples depend on the model), and its latent shape (C, T, H, W)."""

from __future__ import annotations

import jax

from jax_vdit.config import get_preset
from jax_vdit.model import init_model

CFG = get_preset("tiny")
SHAPE = (4, 2, 8, 8)


def sampling_model():
    """A fresh tiny model (seed 3) whose output projection is N(0, 0.05^2) instead of the DiT zero init."""
    m = init_model(CFG, seed=3)
    m.proj_out.kernel[...] = jax.random.normal(jax.random.key(7), m.proj_out.kernel[...].shape) * 0.05
    return m
