"""The jitted sampling loop equals a step-by-step Python loop; CFG semantics; plan validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit import sampling, schedules

from tiny_sampler import CFG, SHAPE, sampling_model  # tests/tiny_sampler.py


@pytest.fixture(scope="module")
def model():
    return sampling_model()


@pytest.fixture(scope="module")
def text():
    k1, k2 = jax.random.split(jax.random.key(11))
    pos = jax.random.normal(k1, (2, 5, CFG.caption_channels))
    neg = jax.random.normal(k2, (1, 5, CFG.caption_channels))
    mask = jnp.ones((2, 5), jnp.int32).at[1, 3:].set(0)
    return pos, mask, neg, jnp.ones((1, 5), jnp.int32)


def _python_loop_euler(model, key, pos, mask, neg, neg_mask, n, g):
    plan = schedules.euler_ancestral_plan(n)
    init_key, noise_key = jax.random.split(key)
    x = (jax.random.normal(init_key, (2, *SHAPE)) * plan.init_noise_sigma).astype(jnp.float32)
    negb, negm = jnp.broadcast_to(neg, pos.shape), jnp.broadcast_to(neg_mask, mask.shape)
    for i in range(n):
        x_in = schedules.scale_model_input(x, plan.sigmas[i])
        eps = model(jnp.concatenate([x_in, x_in]), jnp.full((4,), plan.timesteps[i]),
                    jnp.concatenate([negb, pos]), jnp.concatenate([negm, mask]))
        eps = eps[:2] + g * (eps[2:] - eps[:2])
        z = jax.random.normal(jax.random.fold_in(noise_key, i), x.shape)
        x = schedules.euler_ancestral_step(x, eps, plan.sigmas[i], plan.sigmas[i + 1], z)
    return x


def test_jitted_euler_loop_equals_python_loop(model, text):
    pos, mask, neg, neg_mask = text
    key = jax.random.key(0)
    ref = _python_loop_euler(model, key, pos, mask, neg, neg_mask, n=4, g=3.0)
    out = sampling.sample(model, pos, mask, key=key, latent_shape=SHAPE, plan=sampling.euler_ancestral(4),
                          negative_text=neg, negative_mask=neg_mask, guidance_scale=3.0, latent_dtype=jnp.float32)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3 * float(jnp.abs(ref).max()))


def test_jump_loop_equals_python_loop_without_cfg(model, text):
    pos, mask, _, _ = text
    key = jax.random.key(1)
    plan = sampling.consistency((0, 250, 500, 750))
    np.testing.assert_array_equal(plan.t_model[:4], [999, 750, 500, 250])
    np.testing.assert_array_equal(plan.t_to[:4], [750, 500, 250, 0])
    x = jax.random.normal(jax.random.split(key)[0], (2, *SHAPE))
    for t, t_to in [(999, 750), (750, 500), (500, 250), (250, 0)]:
        eps = model(x, jnp.full((2,), float(t)), pos, mask)
        x = schedules.jump(x, eps, jnp.float32(t), jnp.float32(t_to))
    out = sampling.sample(model, pos, mask, key=key, latent_shape=SHAPE, plan=plan, latent_dtype=jnp.float32)
    np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5 * float(jnp.abs(x).max()))


def test_guidance_one_equals_conditional_prediction(model, text):
    pos, mask, neg, neg_mask = text
    key = jax.random.key(2)
    plan = sampling.ddim(3)
    cond = sampling.sample(model, pos, mask, key=key, latent_shape=SHAPE, plan=plan, latent_dtype=jnp.float32)
    g1 = sampling.sample(model, pos, mask, key=key, latent_shape=SHAPE, plan=plan, negative_text=neg,
                         negative_mask=neg_mask, guidance_scale=1.0, latent_dtype=jnp.float32)
    # fp32 rounding only: the CFG batch is twice as large, so attention sums in another order (a wrong
    # guidance formula differs by O(1))
    np.testing.assert_allclose(g1, cond, rtol=1e-4, atol=1e-4)
    g5 = sampling.sample(model, pos, mask, key=key, latent_shape=SHAPE, plan=plan, negative_text=neg,
                         negative_mask=neg_mask, guidance_scale=5.0, latent_dtype=jnp.float32)
    assert float(jnp.abs(g5 - cond).max()) > 1e-3


def test_step_count_and_guidance_do_not_recompile(model, text):
    pos, mask, neg, neg_mask = text
    before = sampling._sample_jit._cache_size()
    for n, g in [(2, 2.0), (3, 4.5)]:
        sampling.sample(model, pos, mask, key=jax.random.key(0), latent_shape=SHAPE, plan=sampling.euler_ancestral(n),
                        negative_text=neg, negative_mask=neg_mask, guidance_scale=g)
    assert sampling._sample_jit._cache_size() - before <= 1


@pytest.mark.parametrize("latent_dtype", [jnp.float32, jnp.bfloat16])
def test_segmented_sampling_equals_one_run(model, text, latent_dtype):
    """Steps 0-1, then 2-3, then 4-5 (resumed from the returned latents) give the uninterrupted 6-step result."""
    pos, mask, neg, neg_mask = text
    kw = dict(key=jax.random.key(5), latent_shape=SHAPE, negative_text=neg, negative_mask=neg_mask,
              guidance_scale=3.0, latent_dtype=latent_dtype)
    plan = sampling.euler_ancestral(6)
    whole = sampling.sample(model, pos, mask, plan=plan, **kw)
    x = sampling.sample(model, pos, mask, plan=plan.truncated(2), **kw)
    x = sampling.sample(model, pos, mask, plan=plan.truncated(4), start_step=2, latents=x, **kw)
    x = sampling.sample(model, pos, mask, plan=plan, start_step=4, latents=x, **kw)
    np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(whole, np.float32))
    with pytest.raises(ValueError, match="latents exactly when resuming"):
        sampling.sample(model, pos, mask, plan=plan, start_step=2, **kw)
    with pytest.raises(ValueError, match="start_step must be in"):
        sampling.sample(model, pos, mask, plan=plan, start_step=7, latents=x, **kw)
    with pytest.raises(ValueError, match="do not match"):
        sampling.sample(model, pos, mask, plan=plan, start_step=1, latents=x[:1], **kw)


def test_bf16_latents_between_steps(model, text):
    pos, mask, _, _ = text
    out = sampling.sample(model, pos, mask, key=jax.random.key(0), latent_shape=SHAPE, plan=sampling.ddim(2))
    assert out.dtype == jnp.bfloat16 and out.shape == (2, *SHAPE)


def test_progress_callback_sees_every_step(model, text):
    pos, mask, _, _ = text
    seen = []
    out = sampling.sample(model, pos, mask, key=jax.random.key(0), latent_shape=SHAPE, plan=sampling.ddim(3),
                          progress=seen.append)
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert sorted(seen) == [0, 1, 2]


def test_invalid_plans_and_shapes(model, text):
    pos, mask, neg, _ = text
    with pytest.raises(ValueError, match="num_steps"):
        sampling.euler_ancestral(0)
    with pytest.raises(ValueError, match="decrease strictly"):
        sampling.jump_plan([500, 700])
    with pytest.raises(ValueError, match="edges must start at 0"):
        sampling.consistency((100, 500))
    with pytest.raises(ValueError, match="latent_shape"):
        sampling.sample(model, pos, mask, key=jax.random.key(0), latent_shape=(4, 8, 8), plan=sampling.ddim(2))
    with pytest.raises(ValueError, match="masks for both"):
        sampling.sample(model, pos, mask, key=jax.random.key(0), latent_shape=SHAPE, plan=sampling.ddim(2),
                        negative_text=neg)


def test_the_initial_latents_program_draws_what_the_eager_calls_drew():
    """``_initial_latents`` (one program) returns the noise key and the scaled noise that the eager
    split -> normal -> scale -> cast sequence gave, bit for bit; ``_noise_key`` is the same key (resumed runs)."""
    from jax_vdit.sampling import _initial_latents, _noise_key

    key = jax.random.key(1234)
    init_key, noise_key = jax.random.split(key)
    expected = (jax.random.normal(init_key, (1, 4, 3, 8, 10), jnp.float32) * np.float32(14.6)).astype(jnp.bfloat16)
    got_key, got = _initial_latents(key, jnp.float32(14.6), shape=(1, 4, 3, 8, 10),
                                    latent_dtype=jnp.dtype(jnp.bfloat16))
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(jax.random.key_data(got_key), jax.random.key_data(noise_key))
    np.testing.assert_array_equal(jax.random.key_data(_noise_key(key)), jax.random.key_data(noise_key))
