"""The attention-logit monitor: matches the explicit per-head matrices and grows with the q/k weights."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jax_vdit.config import get_preset
from jax_vdit.diagnostics import self_attention_qk_gain
from jax_vdit.model import init_model


def test_qk_gain_matches_explicit_matrices():
    cfg = get_preset("tiny")
    model = init_model(cfg, seed=3)
    gains = np.asarray(self_attention_qk_gain(model))
    assert gains.shape == (cfg.num_layers, cfg.num_attention_heads)
    hd = cfg.attention_head_dim
    for i, block in enumerate(model.blocks):
        wq = np.asarray(block.attn1.to_q.kernel[...], np.float64)
        wk = np.asarray(block.attn1.to_k.kernel[...], np.float64)
        for h in range(cfg.num_attention_heads):
            a = wq[:, h * hd:(h + 1) * hd] @ wk[:, h * hd:(h + 1) * hd].T / np.sqrt(hd)
            np.testing.assert_allclose(gains[i, h], np.linalg.norm(a), rtol=1e-4)


def test_qk_gain_scales_with_weights():
    model = init_model(get_preset("tiny"), seed=0)
    before = np.asarray(self_attention_qk_gain(model))
    block = model.blocks[0]
    block.attn1.to_q.kernel[...] = block.attn1.to_q.kernel[...] * 3.0
    after = np.asarray(self_attention_qk_gain(model))
    np.testing.assert_allclose(after[0], 3.0 * before[0], rtol=1e-5)
    np.testing.assert_allclose(after[1:], before[1:], rtol=1e-6)
    assert jnp.all(jnp.isfinite(jnp.asarray(after)))
