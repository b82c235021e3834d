"""QK-clip: caps each self-attention head's q/k gain, leaves everything else alone, and works inside training."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jax_vdit.config import get_preset
from jax_vdit.diagnostics import self_attention_qk_gain
from jax_vdit.model import init_model
from jax_vdit.qk_clip import clip_qk_params
from jax_vdit.training import ModelParts, TrainConfig

CFG = get_preset("tiny")


def _gains(parts: ModelParts, params: dict) -> np.ndarray:
    return np.asarray(self_attention_qk_gain(parts.merge(params)))


def test_clip_caps_large_heads_only():
    model = init_model(CFG, seed=1)
    model.blocks[0].attn1.to_q.kernel[...] = model.blocks[0].attn1.to_q.kernel[...] * 10.0  # every head of block 0
    model.blocks[0].attn1.to_q.bias[...] = model.blocks[0].attn1.to_q.bias[...] + 1.0
    parts = ModelParts(model)
    params = parts.params()
    before = _gains(parts, params)
    cap = float(np.sort(before.ravel())[-2]) * 0.5  # below block 0's heads, above (some of) the rest
    clipped = clip_qk_params(params, cap, CFG.attention_head_dim)
    after = _gains(parts, clipped)
    np.testing.assert_allclose(after, np.minimum(before, cap), rtol=1e-5)
    # q and k of a clipped head shrink by the same factor (logit cross terms scale with the product)
    hd = CFG.attention_head_dim
    q0, q1 = params["blocks"][0]["attn1"]["to_q"], clipped["blocks"][0]["attn1"]["to_q"]
    k0, k1 = params["blocks"][0]["attn1"]["to_k"], clipped["blocks"][0]["attn1"]["to_k"]
    sq = np.asarray(q1["kernel"][:, :hd] / q0["kernel"][:, :hd])
    sk = np.asarray(k1["kernel"][:, :hd] / k0["kernel"][:, :hd])
    np.testing.assert_allclose(sq, sq.flat[0], rtol=1e-5)
    np.testing.assert_allclose(sk, sq.flat[0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(q1["bias"][:hd]), np.asarray(q0["bias"][:hd]) * sq.flat[0], rtol=1e-5)
    assert sq.flat[0] < 1.0
    # nothing else changes
    flat_a = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    flat_b = dict(jax.tree_util.tree_flatten_with_path(clipped)[0])
    for path, leaf in flat_a.items():
        name = jax.tree_util.keystr(path)
        if "attn1" in name and ("to_q" in name or "to_k" in name):
            continue
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_b[path]), err_msg=name)


def test_clip_errors():
    params = ModelParts(init_model(CFG, seed=0)).params()
    with pytest.raises(ValueError, match="max_gain"):
        clip_qk_params(params, 0.0, CFG.attention_head_dim)
    with pytest.raises(ValueError, match="head_dim"):
        clip_qk_params(params, 1.0, CFG.attention_head_dim + 1)
    with pytest.raises(ValueError, match="blocks"):
        clip_qk_params({"other": 1}, 1.0, 4)
    with pytest.raises(ValueError, match="qk_clip_max_gain"):
        TrainConfig(qk_clip_max_gain=-1.0)


def test_optimizer_lands_on_clipped_params():
    from jax_vdit.training import init_state, make_optimizer

    model = init_model(CFG, seed=2)
    parts = ModelParts(model)
    cfg = TrainConfig(learning_rate=1e-2, qk_clip_max_gain=0.5)
    with pytest.raises(ValueError, match="head_dim"):
        make_optimizer(cfg)
    tx = make_optimizer(cfg, head_dim=CFG.attention_head_dim)
    state = init_state(parts.params(), cfg, tx)
    grads = jax.tree.map(lambda p: np.ones_like(p), state.params)
    updates, _ = tx.update(grads, state.opt_state, state.params)
    new = jax.tree.map(lambda p, u: p + u, state.params, updates)
    assert _gains(parts, new).max() <= 0.5 * (1 + 1e-4)
    assert nnx.state(parts.merge(new)) is not None


def test_training_run_respects_the_cap(tmp_path):
    import jax.numpy as jnp

    from jax_vdit.objectives import DiffusionObjective
    from jax_vdit.training import train

    cfg = CFG.replace(num_layers=1)
    rng = np.random.default_rng(0)
    batch = {"latents": rng.standard_normal((2, 4, 2, 8, 8)).astype(np.float32),
             "text": rng.standard_normal((2, 5, cfg.caption_channels)).astype(np.float32),
             "text_mask": np.ones((2, 5), np.int32)}
    frozen = {"uncond_text": jnp.zeros((5, cfg.caption_channels)), "uncond_mask": jnp.ones((5,), jnp.int32)}
    result = train(init_model(cfg, seed=0), DiffusionObjective(), lambda s: batch,
                   TrainConfig(steps=3, learning_rate=1e-2, qk_clip_max_gain=0.3, log_every=1), tmp_path,
                   frozen=frozen, show_progress=False)
    gains = np.asarray(self_attention_qk_gain(result.model()))
    assert gains.max() <= 0.3 * (1 + 1e-4)
    assert all("qk_gain_max" in row for row in result.history)
    assert all(0.0 < row["rope_odd_t"] < 1.0 for row in result.history)
