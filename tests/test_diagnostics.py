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


def _rope_logits(x, y, wq, wk, head_dim, offsets):
    """Logits between query input x at time 0 and key input y at each time offset (one head, explicit RoPE)."""
    from jax_vdit.model.rope import apply_rope, rope_angles, rope_tables

    steps = max(abs(o) for o in offsets)
    angles = rope_angles((2 * steps + 1, 1, 1), head_dim, (1.0, 1.0, 1.0))
    cos, sin = rope_tables(jnp.asarray(angles), jnp.float32, round_angles=False)
    q = apply_rope(jnp.asarray(np.tile(x @ wq, (2 * steps + 1, 1)))[None, :, None, :], cos, sin)[0, :, 0]
    k = apply_rope(jnp.asarray(np.tile(y @ wk, (2 * steps + 1, 1)))[None, :, None, :], cos, sin)[0, :, 0]
    return np.array([float(q[steps] @ k[steps + o]) for o in offsets])


def test_rope_pair_norms_match_explicit_forms_and_the_odd_part_is_what_tells_forwards_from_backwards():
    from jax_vdit.diagnostics import rope_pair_norms

    rng = np.random.default_rng(0)
    hd, d_in = 12, 7
    half = hd // 6
    wq, wk = rng.standard_normal((d_in, hd)), rng.standard_normal((d_in, hd))
    even, odd = (np.asarray(a) for a in rope_pair_norms(jnp.asarray(wq), jnp.asarray(wk), hd))
    assert even.shape == odd.shape == (1, 3, half)
    for axis in range(3):
        for j in range(half):
            i1, i2 = axis * 2 * half + j, axis * 2 * half + half + j
            e = np.outer(wq[:, i1], wk[:, i1]) + np.outer(wq[:, i2], wk[:, i2])
            o = np.outer(wq[:, i1], wk[:, i2]) - np.outer(wq[:, i2], wk[:, i1])
            np.testing.assert_allclose(even[0, axis, j], np.sum(e ** 2), rtol=1e-4)
            np.testing.assert_allclose(odd[0, axis, j], np.sum(o ** 2), rtol=1e-4)
    x, y = rng.standard_normal(d_in), rng.standard_normal(d_in)
    offsets = [1, 2, 3, -1, -2, -3]
    logits = _rope_logits(x, y, wq, wk, hd, offsets)
    assert np.abs(logits[:3] - logits[3:]).max() > 1e-2  # random weights tell +dt from -dt
    # zero the odd forms of the time chunk (k's rotated halves mirror q's): the head is blind to the sign of dt
    sym_q, sym_k = wq.copy(), wk.copy()
    sym_q[:, half:2 * half] = 0.0
    sym_k[:, half:2 * half] = 0.0
    even, odd = rope_pair_norms(jnp.asarray(sym_q), jnp.asarray(sym_k), hd)
    assert float(jnp.max(odd[0, 0])) == 0.0 and float(jnp.min(even[0, 0])) > 0
    logits = _rope_logits(x, y, sym_q, sym_k, hd, offsets)
    np.testing.assert_allclose(logits[:3], logits[3:], rtol=1e-5, atol=1e-5)


def test_rope_odd_fraction_is_a_half_for_random_weights_and_one_or_zero_for_built_heads():
    from jax_vdit.diagnostics import active_rope_pairs, rope_odd_fraction

    cfg = get_preset("toy-teacher")
    active = np.asarray(active_rope_pairs((9, 12, 12), (1.0, 1.0, 1.0), cfg.attention_head_dim))
    assert active.sum(axis=1).tolist() == [2, 3, 3]  # w = 1, 0.32 turn > 1 rad over 8 frames; 0.1 over 11 patches
    model = init_model(cfg.replace(num_layers=2), seed=0)
    frac = np.asarray(rope_odd_fraction(model, (9, 12, 12)))
    assert frac.shape == (2, cfg.num_attention_heads, 3)
    assert 0.3 < frac.mean() < 0.7
    hd, half = cfg.attention_head_dim, cfg.attention_head_dim // 6
    block = model.blocks[0]
    wq = np.array(block.attn1.to_q.kernel[...]).reshape(-1, cfg.num_attention_heads, hd)
    wk = np.array(block.attn1.to_k.kernel[...]).reshape(-1, cfg.num_attention_heads, hd)
    wq[:, :, half:2 * half] = 0.0  # time chunk: q has only first halves, k only second halves -> E = 0, odd only
    wk[:, :, :half] = 0.0
    block.attn1.to_q.kernel[...] = jnp.asarray(wq.reshape(wq.shape[0], -1))
    block.attn1.to_k.kernel[...] = jnp.asarray(wk.reshape(wk.shape[0], -1))
    frac = np.asarray(rope_odd_fraction(model, (9, 12, 12)))
    np.testing.assert_allclose(frac[0, :, 0], 1.0)
    assert 0.2 < frac[0, :, 1:].mean() < 0.8
