"""The distillation objectives and the mask search on a tiny model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pallas_kernels
from jax_vdit import schedules
from jax_vdit.config import get_preset
from jax_vdit.distill import MLCDObjective, SparseKDObjective, candidate_masks, search_masks, segment_edges, solver_grid
from jax_vdit.distill.mask_search import choose_masks
from jax_vdit.model import AttentionConfig, init_model
from jax_vdit.training import ModelParts, TrainConfig, train

CFG = get_preset("tiny")
T = 3


def _teacher():
    m = init_model(CFG, seed=4)
    m.proj_out.kernel[...] = jax.random.normal(jax.random.key(9), m.proj_out.kernel[...].shape) * 0.05
    return m


def _batch_at(step):
    rng = np.random.default_rng(step % 3)
    return {"latents": rng.standard_normal((2, 4, T, 8, 8)).astype(np.float32),
            "text": rng.standard_normal((2, 5, CFG.caption_channels)).astype(np.float32),
            "text_mask": np.ones((2, 5), np.int32)}


def _frozen(teacher):
    return {"teacher": ModelParts(teacher).params(),
            "uncond_text": jnp.zeros((5, CFG.caption_channels)), "uncond_mask": jnp.ones((5,), jnp.int32)}


def test_grid_and_edges():
    np.testing.assert_array_equal(solver_grid(50)[:3], [19, 39, 59])
    assert solver_grid(50)[-1] == 999
    assert segment_edges(4) == (0, 250, 500, 750)
    with pytest.raises(ValueError, match="must divide"):
        solver_grid(48)
    with pytest.raises(ValueError, match="edges must start at 0"):
        MLCDObjective(teacher=None, student=None, edges=(10, 500))


def test_mlcd_segment_edges_and_gradient_only_through_student():
    teacher = _teacher()
    parts = ModelParts(teacher)
    obj = MLCDObjective(teacher=parts, student=parts, edges=(0, 250, 500, 750), guidance=2.0, target_ema="target")
    edges = obj._segment_edge(jnp.array([19, 250, 259, 999, 500, 501]))
    np.testing.assert_array_equal(edges, [0, 0, 250, 750, 250, 500])
    params = parts.params()
    context = {"emas": {"target": params}, "frozen": _frozen(teacher)}
    batch = jax.tree.map(jnp.asarray, _batch_at(0))

    def loss_of(p, teacher_p):
        ctx = dict(context, frozen=dict(context["frozen"], teacher=teacher_p))
        return obj(parts.merge(p), batch, jax.random.key(0), ctx)[0]

    g_student, g_teacher = jax.grad(loss_of, argnums=(0, 1))(params, context["frozen"]["teacher"])
    assert sum(float(jnp.abs(x).sum()) for x in jax.tree.leaves(g_student)) > 0
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(g_teacher))


def test_mlcd_target_at_edge_is_the_teacher_ddim_step():
    """For t one solver step above an edge, the target is exactly the teacher's CFG DDIM step to the edge."""
    teacher = _teacher()
    parts = ModelParts(teacher)
    obj = MLCDObjective(teacher=parts, student=parts, edges=(0, 500), num_solver_points=2, guidance=3.0,
                        huber_c=1e-3, target_ema=None)
    # with 2 solver points (499, 999): t=999 -> t'=max(499, 500)=500 = the edge; the student that equals the
    # teacher's CFG prediction would have zero error only if eps_student == eps_teacher_cfg, so compare losses.
    batch = jax.tree.map(jnp.asarray, _batch_at(1))
    context = {"emas": {}, "frozen": _frozen(teacher)}
    loss, metrics = obj(teacher, batch, jax.random.key(3), context)
    assert np.isfinite(float(loss)) and float(metrics["mse_to_target"]) >= 0
    # reproduce by hand for the sampled t
    key_t, key_noise = jax.random.split(jax.random.key(3))
    n = jax.random.randint(key_t, (2,), 0, 2)
    t = jnp.asarray(solver_grid(2))[n]
    x_t = schedules.add_noise(batch["latents"], jax.random.normal(key_noise, batch["latents"].shape), t)
    if bool(jnp.all(t == 999)):
        eps = teacher(jnp.concatenate([x_t, x_t]), jnp.concatenate([t, t]).astype(jnp.float32),
                      jnp.concatenate([jnp.zeros_like(batch["text"]), batch["text"]]),
                      jnp.concatenate([jnp.ones_like(batch["text_mask"]), batch["text_mask"]]))
        cfg_eps = eps[:2] + 3.0 * (eps[2:] - eps[:2])
        target = schedules.jump(x_t, cfg_eps, t, jnp.full((2,), 500))
        y = schedules.jump(x_t, teacher(x_t, t.astype(jnp.float32), batch["text"], batch["text_mask"]), t,
                           jnp.full((2,), 500))
        np.testing.assert_allclose(float(metrics["mse_to_target"]), float(jnp.mean((y - target) ** 2)), rtol=1e-4)


def test_mlcd_training_reduces_the_loss(tmp_path):
    teacher = _teacher()
    parts = ModelParts(teacher)
    obj = MLCDObjective(teacher=parts, student=parts, edges=(0, 500), num_solver_points=10, guidance=2.0)
    cfg = TrainConfig(steps=40, learning_rate=2e-3, emas=(("target", 0.9), ("ema", 0.99)), log_every=10,
                      checkpoint_every=1000)
    student = init_model(CFG, seed=4)
    student.proj_out.kernel[...] = teacher.proj_out.kernel[...]
    fixed = _batch_at(0)
    result = train(student, obj, lambda s: fixed, cfg, tmp_path, frozen=_frozen(teacher), show_progress=False)
    losses = [r["mse_to_target"] for r in result.history]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_mask_search_scan_over_layers_equals_layer_by_layer_errors():
    """The search measures all layers in one scan over stacked block weights; each row must equal that layer's
    error computed directly (dense activations in, the candidate's relative output error out)."""
    from jax_vdit.distill.mask_search import layer_errors
    from jax_vdit.model.attention import DENSE, dense_attention

    teacher = _teacher()
    rng = np.random.default_rng(1)
    batch = {"latents": jnp.asarray(rng.standard_normal((2, 4, T, 8, 8)), jnp.float32),
             "timestep": jnp.array([300.0, 800.0]),
             "text": jnp.asarray(rng.standard_normal((2, 5, CFG.caption_channels)), jnp.float32),
             "text_mask": jnp.ones((2, 5), jnp.int32)}
    cands = candidate_masks(T)
    errors = layer_errors(teacher, [batch], cands, tile_backend="reference")
    ctx = teacher.prepare(batch["latents"], batch["timestep"], batch["text"], batch["text_mask"])
    x = ctx.x
    for i, block in enumerate(teacher.blocks):
        shift, scale = block.modulation(ctx.t6)[:2]
        q, k, v = block.self_attention_inputs(x, shift, scale, ctx.rope_cos, ctx.rope_sin)
        dense = np.asarray(dense_attention(q, k, v, backend=DENSE.dense_backend), np.float64)
        for j, cand in enumerate(cands):
            out = np.asarray(pallas_kernels.tile_attention(q, k, v, cand, tokens_per_frame=ctx.tokens_per_frame,
                                                           backend="reference"), np.float64)
            expected = np.linalg.norm(out - dense) / np.linalg.norm(dense)
            np.testing.assert_allclose(errors[i, j], expected, rtol=1e-4, atol=1e-7)
        x = teacher.run_block(i, ctx, x, DENSE)
    assert errors.shape == (CFG.num_layers, len(cands)) and CFG.num_layers > 1


def test_kd_loss_is_zero_for_identical_dense_student_and_positive_when_sparse():
    teacher = _teacher()
    parts = ModelParts(teacher)
    batch = jax.tree.map(jnp.asarray, _batch_at(0))
    context = {"emas": {}, "frozen": {"teacher": parts.params()}}
    dense = SparseKDObjective(teacher=parts, student_attention=AttentionConfig(dense_backend="reference"))
    assert float(dense(teacher, batch, jax.random.key(0), context)[0]) < 1e-10
    mask = pallas_kernels.TileMask.k_m(1, T)
    sparse = SparseKDObjective(teacher=parts, student_attention=AttentionConfig(masks=(mask,) * CFG.num_layers,
                                                                                tile_backend="reference"))
    assert float(sparse(teacher, batch, jax.random.key(0), context)[0]) > 1e-8


def test_mask_search_full_mask_has_zero_error_and_threshold_picks_sparsest():
    teacher = _teacher()
    rng = np.random.default_rng(0)
    calib = [{"latents": jnp.asarray(rng.standard_normal((2, 4, T, 8, 8)), jnp.float32),
              "timestep": jnp.array([500.0, 900.0]),
              "text": jnp.asarray(rng.standard_normal((2, 5, CFG.caption_channels)), jnp.float32),
              "text_mask": jnp.ones((2, 5), jnp.int32)}]
    cands = candidate_masks(T)
    assert [m.kept_tiles for m in cands] == [7]  # 1:2 for T=3 (2:1 keeps every tile: same as dense)
    schedule, reports, errors = search_masks(teacher, calib, threshold=10.0, num_frames=T, tile_backend="reference")
    assert errors.shape == (CFG.num_layers, 1) and np.all(errors >= 0) and np.all(np.isfinite(errors))
    assert all(r.mask == cands[0] for r in reports)  # a huge threshold takes the sparsest mask everywhere
    schedule0, reports0, _ = search_masks(teacher, calib, threshold=0.0, num_frames=T, tile_backend="reference")
    assert all(m is None for m in schedule0)  # nothing is exact: every layer stays dense
    from jax_vdit.distill import search_masks_over_thresholds

    both, errors2 = search_masks_over_thresholds(teacher, calib, [10.0, 0.0], num_frames=T, tile_backend="reference")
    np.testing.assert_allclose(errors2, errors, rtol=1e-6)  # one error matrix serves every threshold
    assert tuple(both[10.0][0]) == tuple(schedule) and tuple(both[0.0][0]) == tuple(schedule0)
    with pytest.raises(ValueError, match="threshold r must be >= 0"):
        search_masks_over_thresholds(teacher, calib, [0.1, -1.0], num_frames=T, tile_backend="reference")
    two = candidate_masks(4)  # 1:3 (10 tiles), 2:2 (14 tiles)
    assert [m.kept_tiles for m in two] == [10, 14]
    picked = choose_masks(np.array([[0.3, 0.05], [0.01, 0.0], [0.5, 0.4]]), two, threshold=0.1)
    assert picked[0].mask == two[1] and picked[1].mask == two[0] and picked[2].mask is None
