"""Model behaviour beyond the goldens: input validation, RoPE, remat, dtype policy, attention switch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit.config import ModelConfig, get_preset
from jax_vdit.model import AttentionConfig, InputShapeError, init_model
from jax_vdit.model.rope import apply_rope, rope_angles, rope_tables

CFG = get_preset("tiny")


def _inputs(b=2, t=3, h=8, w=8, length=5, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k[0], (b, 4, t, h, w))
    text = jax.random.normal(k[1], (b, 1, length, CFG.caption_channels))
    mask = jnp.ones((b, 1, length)).at[0, 0, 3:].set(0)
    return x, jnp.array([999.0, 10.5][:b]), text, mask


@pytest.fixture(scope="module")
def model():
    m = init_model(CFG, seed=1)
    # proj_out is zero-initialised for training; give it values so outputs are informative
    m.proj_out.kernel[...] = jax.random.normal(jax.random.key(5), m.proj_out.kernel[...].shape) * 0.1
    return m


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(x=np.zeros((2, 4, 3, 8))), "latents must be \\(B, C, T, H, W\\)"),
        (dict(x=np.zeros((2, 3, 3, 8, 8))), "3 channels, the model expects in_channels=4"),
        (dict(x=np.zeros((2, 4, 3, 7, 8))), "divisible by patch_size=2"),
        (dict(t=np.zeros((3,))), "timestep must be a scalar or shape \\(2,\\)"),
        (dict(text=np.zeros((2, 5, 8))), "text embeddings must be"),
        (dict(text=np.zeros((2, 2, 5, 16))), "size 1 on axis 1"),
        (dict(mask=np.zeros((2, 6))), "text mask must be"),
    ],
)
def test_bad_inputs_get_clear_errors(model, bad, match):
    x, t, text, mask = _inputs()
    args = dict(x=x, t=t, text=text, mask=mask) | bad
    with pytest.raises(InputShapeError, match=match):
        model(args["x"], args["t"], args["text"], args["mask"])


def test_text_layouts_and_scalar_timestep_are_equivalent(model):
    x, t, text, mask = _inputs()
    a = model(x, t, text, mask)
    b = model(x, t, text[:, 0], mask[:, 0])
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = model(x[:1], 999.0, text[:1], mask[:1])
    np.testing.assert_allclose(a[:1], c, atol=1e-5)


def test_text_padding_is_ignored(model):
    """Changing the embeddings of masked text tokens does not change the output."""
    x, t, text, mask = _inputs()
    noisy = text.at[0, 0, 3:].add(100.0)
    np.testing.assert_allclose(model(x, t, text, mask), model(x, t, noisy, mask), atol=1e-5)
    assert not np.allclose(model(x, t, text, None), model(x, t, noisy, None), atol=1e-3)


def test_single_frame_image_path(model):
    x, t, text, mask = _inputs(t=1)
    assert model(x, t, text, mask).shape == (2, 4, 1, 8, 8)


def test_remat_gives_identical_outputs_and_grads(model):
    from flax import nnx

    x, t, text, mask = _inputs()
    rematted = nnx.clone(model)
    rematted.cfg = CFG.replace(remat=True)

    def loss(m):
        return jnp.mean(m(x, t, text, mask) ** 2)

    g1 = nnx.grad(loss)(model)
    g2 = nnx.grad(loss)(rematted)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_dense_backends_agree(model):
    x, t, text, mask = _inputs()
    ref = model(x, t, text, mask, attention=AttentionConfig(dense_backend="reference"))
    xla = model(x, t, text, mask, attention=AttentionConfig(dense_backend="xla"))
    np.testing.assert_allclose(ref, xla, atol=2e-5)
    einsum = model(x, t, text, mask, attention=AttentionConfig(dense_backend="einsum"))
    np.testing.assert_allclose(ref, einsum, atol=2e-5)


def test_cpu_chunked_attention_matches_reference_with_key_masks_and_gradients():
    from pallas_kernels.cpu import chunked_attention, heads_per_chunk

    from jax_vdit.model.attention import reference_attention, resolve_dense_backend

    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(kq, (2, 7, 3, 8)) * 3.0  # large logits: the max subtraction matters
    k = jax.random.normal(kk, (2, 5, 3, 8)) * 3.0
    v = jax.random.normal(kv, (2, 5, 3, 8))
    key_mask = jnp.array([[True, True, False, True, False], [False, False, False, False, True]])
    for km in (None, key_mask):
        for chunk_bytes in (1, 3 * 7 * 5 * 4, 1 << 20):  # one (batch, head) pair per chunk, 3 per chunk, all
            np.testing.assert_allclose(chunked_attention(q, k, v, key_mask=km, max_score_bytes=chunk_bytes),
                                       reference_attention(q, k, v, km), rtol=1e-5, atol=1e-6)

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v) * v[:, :1, :, :1])

    for a, b in zip(jax.grad(loss(lambda q, k, v: chunked_attention(q, k, v, key_mask=key_mask)), (0, 1, 2))(q, k, v),
                    jax.grad(loss(lambda q, k, v: reference_attention(q, k, v, key_mask)), (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # a row with every key masked averages the values instead of producing NaN
    none = jnp.zeros((2, 5), bool)
    np.testing.assert_allclose(chunked_attention(q, k, v, key_mask=none),
                               jnp.broadcast_to(v.mean(axis=1, keepdims=True), q.shape), rtol=1e-5, atol=1e-6)
    assert resolve_dense_backend("auto", jnp.float32) == ("einsum" if jax.default_backend() == "cpu" else "xla")
    assert heads_per_chunk(64, 1296, 1296, 16 * 2**20) == 2 and heads_per_chunk(6, 10, 10, 3 * 400) == 3


def test_mask_schedule_length_is_checked(model):
    x, t, text, mask = _inputs()
    with pytest.raises(ValueError, match="mask schedule has 1 entries, the model has 2 layers"):
        model(x, t, text, mask, attention=AttentionConfig(masks=(None,)))
    with pytest.raises(ValueError, match="dense_backend"):
        AttentionConfig(dense_backend="flash")


def test_rope_angles_follow_spec():
    ang = rope_angles((2, 3, 4), 96, (1.0, 1.5, 2.0))
    assert ang.shape == (24, 48)
    token = (1 * 3 + 2) * 4 + 3  # t=1, y=2, x=3
    inv = 10000.0 ** (-np.arange(0, 32, 2) / 32)
    np.testing.assert_allclose(ang[token, :16], 1 / 1.0 * inv, rtol=1e-6)
    np.testing.assert_allclose(ang[token, 16:32], 2 / 1.5 * inv, rtol=1e-6)
    np.testing.assert_allclose(ang[token, 32:], 3 / 2.0 * inv, rtol=1e-6)


def test_rope_rotates_pairs_j_and_j_plus_half():
    ang = rope_angles((1, 1, 2), 12, (1.0, 1.0, 1.0))  # head_dim 12: chunks of 4, pairs (0,2), (1,3)
    cos, sin = rope_tables(jnp.asarray(ang), jnp.float32, round_angles=False)
    x = jnp.zeros((1, 2, 1, 12)).at[0, 1, 0, 8].set(1.0)  # x-axis chunk, element 0 of token with x=1
    out = apply_rope(x, cos, sin)[0, 1, 0]
    a = ang[1, 4]  # x chunk, frequency 0
    np.testing.assert_allclose(out[8], np.cos(a), atol=1e-6)
    np.testing.assert_allclose(out[10], np.sin(a), atol=1e-6)
    # norms are preserved by the rotation
    y = jax.random.normal(jax.random.key(0), (1, 2, 1, 12))
    np.testing.assert_allclose(jnp.linalg.norm(apply_rope(y, cos, sin)), jnp.linalg.norm(y), rtol=1e-6)


def test_rope_angle_rounding_reproduces_bf16_behaviour():
    """At 720p the release rounds angles to bf16 before cos/sin: up to ~0.06 rad at large positions."""
    ang = jnp.asarray(rope_angles((24, 45, 80), 96, (1.0, 1.5, 2.0)))
    cos_r, _ = rope_tables(ang, jnp.bfloat16, round_angles=True)
    cos_f, _ = rope_tables(ang, jnp.bfloat16, round_angles=False)
    expected = jnp.cos(ang.astype(jnp.bfloat16).astype(jnp.float32))
    assert float(jnp.abs(cos_r[:, :16].astype(jnp.float32) - expected[:, :16]).max()) <= 4e-3
    assert float(jnp.abs(cos_r.astype(jnp.float32) - cos_f.astype(jnp.float32)).max()) > 0.03


def test_config_validation_and_json_roundtrip():
    with pytest.raises(ValueError, match="compute_dtype"):
        ModelConfig(compute_dtype="int8")
    with pytest.raises(ValueError, match="divisible by 6"):
        ModelConfig(attention_head_dim=64)
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("osp-v9")
    cfg = get_preset("osp-v1.2-93x480p")
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.num_params() == 2_771_907_856
