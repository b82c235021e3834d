"""The compile-only VAE memory plan walks every decoder stage of a tile without executing it."""

from __future__ import annotations

import jax.numpy as jnp

from experiments import vae_memory_plan as plan
from jax_vdit.vae import ComputeConfig, VAEConfig, random_vae


def test_plan_lists_every_stage_with_positive_sizes():
    vae = random_vae(VAEConfig.tiny(), seed=0, dtype=jnp.float32, compute=ComputeConfig())
    rows = plan.compile_only_stage_plan(vae, (2, 4, 4))
    assert len(rows) >= 3
    assert rows[0]["stage"].startswith("_dec_head") and rows[-1]["stage"] == "_norm_conv_tail"
    for r in rows:
        assert r["out_gib"] > 0 and r["live_gib"] >= r["out_gib"] - r["alias_gib"]
    # the last stage outputs the video tile: 4 t - 3 frames of 8x the latent size, 3 channels
    assert rows[-1]["input"][:3] == [5, 32, 32]
