"""Scan over layers (``AttentionConfig.scan_layers``): the scanned forward and gradients equal the unrolled loop,
on the golden release weights with mixed per-layer tile masks, and the traced program does not grow with depth."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

import jax_vdit
import pallas_kernels
from jax_vdit.config import get_preset
from jax_vdit.model import AttentionConfig, init_model
from jax_vdit.objectives import DiffusionObjective

# latent frames of the golden inputs (hidden_states (2, 4, 3, 8, 10))
A = pallas_kernels.TileMask.from_string("1:2", 3)


def _close(a, b, rel: float = 1e-6) -> None:
    """max |a - b| <= rel * max |b| (fp32 rounding of another summation order only)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    err, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
    assert err <= rel * max(scale, 1.0), (err, scale)


def _att(masks, scan: bool) -> AttentionConfig:
    return AttentionConfig(dense_backend="reference", tile_backend="reference", masks=masks, scan_layers=scan)


@pytest.fixture(scope="module")
def golden(golden_dir):
    folder = golden_dir / "opensora_v12" / "tiny_a"
    model = jax_vdit.load_model(folder, compute_dtype="float32")
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    args = (inputs["hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"],
            inputs["encoder_attention_mask"])
    return model, args, expected


@pytest.fixture(scope="module")
def golden4(golden):
    """The golden weights as a 4-layer model: blocks (0, 1, 0, 1) of the 2-layer release module."""
    model2, args, _ = golden
    model4 = init_model(model2.cfg.replace(num_layers=4), seed=0)
    nnx.update(model4, nnx.state(model2))
    for i in (2, 3):
        nnx.update(model4.blocks[i], nnx.state(model2.blocks[i - 2]))
    return model4, args


def test_layer_runs():
    b = pallas_kernels.TileMask.from_string("2:1", 3)
    assert _att((None, A, A, None), True).layer_runs(4) == ((0, 1), (1, 3), (3, 4))
    assert _att((A, A, b, b, b, A), True).layer_runs(6) == ((0, 2), (2, 5), (5, 6))
    assert _att(None, True).layer_runs(32) == ((0, 32),)
    with pytest.raises(ValueError, match="mask schedule has 2 entries, the model has 3 layers"):
        _att((A, A), True).layer_runs(3)
    with pytest.raises(ValueError, match="scan_layers must be a bool"):
        AttentionConfig(scan_layers="yes")


@pytest.mark.parametrize("masks", [None, (A, A)], ids=["dense", "tile"])
def test_scanned_golden_matches_reference_and_unrolled(golden, masks):
    model, args, expected = golden
    scanned = model(*args, attention=_att(masks, True))
    _close(scanned, model(*args, attention=_att(masks, False)))
    if masks is None:
        assert np.abs(np.asarray(scanned) - expected).max() <= 1e-4


def test_mixed_masks_scanned_equals_unrolled_on_golden_weights(golden4):
    model, args = golden4
    masks = (None, A, A, None)
    scanned = model(*args, attention=_att(masks, True))
    unrolled = model(*args, attention=_att(masks, False))
    _close(scanned, unrolled)
    # the masks matter (the scan really runs layers 1-2 with the tile mask)
    assert float(jnp.abs(scanned - model(*args, attention=_att(None, True))).max()) > 1e-3


def _tiny3(remat: bool):
    model = init_model(get_preset("tiny", num_layers=3, remat=remat), seed=2)
    model.proj_out.kernel[...] = jax.random.normal(jax.random.key(5), model.proj_out.kernel[...].shape) * 0.1
    return model


def test_training_gradients_scanned_equal_unrolled():
    """The release objective's loss and parameter gradients with layer masks (None, A, A) on a tiny random model:
    scanned with remat (checkpoint per block inside the scan) against the unrolled loop without remat (XLA:CPU
    compiles each gradient program in 10-20 s here, so both differences share one comparison)."""
    k = jax.random.split(jax.random.key(4), 2)
    batch = {"latents": jax.random.normal(k[0], (1, 4, 3, 8, 8)), "text_mask": jnp.ones((1, 5), jnp.int32),
             "text": jax.random.normal(k[1], (1, 5, get_preset("tiny").caption_channels))}

    def loss_and_grads(scan: bool):
        graphdef, params = nnx.split(_tiny3(remat=scan))
        objective = DiffusionObjective(caption_dropout=0.0, attention=_att((None, A, A), scan))

        def loss(p):
            return objective(nnx.merge(graphdef, p), batch, jax.random.key(3), {})[0]

        return jax.jit(jax.value_and_grad(loss))(params)

    (loss_s, grads_s), (loss_u, grads_u) = loss_and_grads(True), loss_and_grads(False)
    _close(loss_s, loss_u)
    flat_s, flat_u = jax.tree.leaves(grads_s), jax.tree.leaves(grads_u)
    assert len(flat_s) == len(flat_u)
    assert sum(float(jnp.abs(g).max()) > 0 for g in flat_s) >= len(flat_s) // 2  # gradients reach the blocks
    for gs, gu in zip(flat_s, flat_u):
        _close(gs, gu, rel=1e-5)


def test_remat_applies_per_block_inside_the_scan():
    x = jnp.zeros((1, 4, 3, 8, 8))
    text = jnp.zeros((1, 5, get_preset("tiny").caption_channels))
    for remat in (False, True):
        graphdef, state = nnx.split(_tiny3(remat))
        jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, jnp.zeros((1,)), text,
                                                                    attention=_att((None, A, A), True)))(state, x)
        (scan,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
        assert scan.params["length"] == 2
        body = [e.primitive.name for e in scan.params["jaxpr"].jaxpr.eqns]
        rematted = bool({"checkpoint", "remat", "remat2"} & set(body))  # the primitive's name differs by version
        assert rematted == remat, body


def _lowered(num_layers: int, scan: bool) -> str:
    cfg = get_preset("tiny", num_layers=num_layers)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: init_model(cfg)))
    x = jax.ShapeDtypeStruct((1, 4, 3, 8, 8), jnp.float32)
    text = jax.ShapeDtypeStruct((1, 5, cfg.caption_channels), jnp.float32)
    masks = (None,) + (A,) * (num_layers - 1)
    fwd = jax.jit(lambda s, x, text: nnx.merge(graphdef, s)(x, jnp.zeros((1,)), text, attention=_att(masks, scan)))
    return fwd.lower(state, x, text).as_text()


def test_traced_program_does_not_grow_with_depth():
    """Matrix products in the traced program: a constant for the scanned model (one dense block, one scanned tile
    block), proportional to depth for the unrolled one."""
    scan3, scan9 = _lowered(3, True), _lowered(9, True)
    unrolled3, unrolled9 = _lowered(3, False), _lowered(9, False)
    assert scan3.count("stablehlo.while") == 1 and scan9.count("stablehlo.while") == 1
    assert unrolled9.count("stablehlo.while") == 0
    dots = {name: text.count("stablehlo.dot_general") for name, text in
            [("scan3", scan3), ("scan9", scan9), ("unrolled3", unrolled3), ("unrolled9", unrolled9)]}
    assert dots["scan9"] == dots["scan3"], dots
    # one tile block's products: unrolled3 has two tile blocks where scan3 has one body; unrolled9 has eight
    per_block = dots["unrolled3"] - dots["scan3"]
    assert per_block > 0 and dots["unrolled9"] - dots["unrolled3"] == 6 * per_block, dots


def test_run_blocks_rejects_a_run_with_two_masks(golden4):
    model, args = golden4
    ctx = model.prepare(*args)
    with pytest.raises(ValueError, match="do not share one tile mask"):
        model.run_blocks(0, 2, ctx, ctx.x, _att((None, A, A, None), True))
    with pytest.raises(ValueError, match="is not inside"):
        model.run_blocks(3, 5, ctx, ctx.x, _att(None, True))


# --------------------------------------------------------------------------- mixed masks: one scan with a switch
def _switch(masks) -> AttentionConfig:
    return dataclasses.replace(_att(masks, True), mixed_masks="switch")


def test_distinct_masks_and_the_setting_is_checked():
    b = pallas_kernels.TileMask.from_string("2:1", 3)
    assert _att((A, b, A, None), True).distinct_masks(4) == ((A, b, None), (0, 1, 0, 2))
    assert _att(None, True).distinct_masks(3) == ((None,), (0, 0, 0))
    with pytest.raises(ValueError, match="mixed_masks must be 'runs' or 'switch'"):
        AttentionConfig(mixed_masks="unroll")


def test_switched_scan_equals_unrolled_on_golden_weights_with_alternating_masks(golden4):
    """Masks that change every layer (A, None, A, None): runs of one layer each, one switched scan instead."""
    model, args = golden4
    masks = (A, None, A, None)
    switched = model(*args, attention=_switch(masks))
    _close(switched, model(*args, attention=_att(masks, False)))
    assert float(jnp.abs(switched - model(*args, attention=_att(None, True))).max()) > 1e-3  # masks are used
    _close(model(*args, attention=_switch(None)), model(*args, attention=_att(None, False)))  # all dense


def test_switched_scan_gradients_equal_unrolled():
    k = jax.random.split(jax.random.key(6), 2)
    batch = {"latents": jax.random.normal(k[0], (1, 4, 3, 8, 8)), "text_mask": jnp.ones((1, 5), jnp.int32),
             "text": jax.random.normal(k[1], (1, 5, get_preset("tiny").caption_channels))}

    def loss_and_grads(attention, remat: bool):
        graphdef, params = nnx.split(_tiny3(remat=remat))
        objective = DiffusionObjective(caption_dropout=0.0, attention=attention)
        return jax.jit(jax.value_and_grad(lambda p: objective(nnx.merge(graphdef, p), batch, jax.random.key(3),
                                                              {})[0]))(params)

    masks = (A, None, A)
    (loss_s, grads_s), (loss_u, grads_u) = loss_and_grads(_switch(masks), True), loss_and_grads(_att(masks, False),
                                                                                                False)
    _close(loss_s, loss_u)
    for gs, gu in zip(jax.tree.leaves(grads_s), jax.tree.leaves(grads_u)):
        _close(gs, gu, rel=1e-5)


def _lowered_switch(num_layers: int) -> str:
    cfg = get_preset("tiny", num_layers=num_layers)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: init_model(cfg)))
    x = jax.ShapeDtypeStruct((1, 4, 3, 8, 8), jnp.float32)
    text = jax.ShapeDtypeStruct((1, 5, cfg.caption_channels), jnp.float32)
    b = pallas_kernels.TileMask.from_string("2:1", 3)
    masks = tuple((A, b, None)[i % 3] for i in range(num_layers))  # changes every layer
    fwd = jax.jit(lambda s, x, text: nnx.merge(graphdef, s)(x, jnp.zeros((1,)), text, attention=_switch(masks)))
    return fwd.lower(state, x, text).as_text()


def test_switched_program_does_not_grow_with_depth():
    """A schedule that changes every layer: one while loop and the same number of products at 3 and 9 layers
    (three branches, one per distinct mask), where runs of equal masks would need one block per layer."""
    three, nine = _lowered_switch(3), _lowered_switch(9)
    assert three.count("stablehlo.while") == 1 and nine.count("stablehlo.while") == 1
    assert three.count("stablehlo.dot_general") == nine.count("stablehlo.dot_general") > 0
    assert "stablehlo.case" in nine


@pytest.mark.parametrize("mixed", ["runs", "switch"])
def test_scan_unroll_is_the_same_function(golden4, mixed):
    """``scan_unroll=2`` (two blocks per loop iteration; 3 on a run of 2 is clipped) equals the unrolled model, for
    runs of equal masks and for the switched scan; the setting is checked."""
    model, args = golden4
    masks = (None, A, A, A) if mixed == "runs" else (None, A, None, A)
    unrolled = model(*args, attention=_att(masks, False))
    texts = {}
    for unroll in (1, 2, 3):
        att = dataclasses.replace(_att(masks, True), mixed_masks=mixed, scan_unroll=unroll)
        _close(model(*args, attention=att), unrolled)
        texts[unroll] = jax.jit(lambda *a, att=att: model(*a, attention=att)).lower(*args).as_text()
    assert texts[2] != texts[1]  # the setting reaches the scan
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="scan_unroll must be an int >= 1"):
            AttentionConfig(scan_unroll=bad)


# --------------------------------------------------------------------------- weights stacked once per program
@pytest.mark.parametrize("mixed", ["runs", "switch"])
def test_prestacked_runs_give_the_same_forward(golden4, mixed):
    """``model(..., stacked_runs=model.stack_block_runs(att))`` (what the sampler does once before its step loop)
    equals the forward that stacks the weights itself; nothing is stacked for the unrolled loop."""
    model, args = golden4
    masks = (None, A, A, None) if mixed == "runs" else (A, None, A, None)
    att = dataclasses.replace(_att(masks, True), mixed_masks=mixed)
    runs = model.stack_block_runs(att)
    assert sorted(runs) == ([(1, 3)] if mixed == "runs" else [(0, 4)])  # runs of one layer are not scanned
    assert all(leaf.shape[0] == b - a for (a, b), state in runs.items() for leaf in jax.tree.leaves(state))
    _close(model(*args, attention=att, stacked_runs=runs), model(*args, attention=att))
    _close(model(*args, attention=att, stacked_runs=runs), model(*args, attention=_att(masks, False)))
    assert model.stack_block_runs(_att(masks, False)) == {}


def _output_shapes(eqns) -> list[tuple]:
    """Output shapes of ``eqns`` and of every jaxpr nested in them (loop bodies, branches, calls)."""
    shapes = []
    for eqn in eqns:
        shapes += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    shapes += _output_shapes(inner.eqns)
    return shapes


def test_the_sampler_stacks_the_block_weights_once_outside_its_step_loop():
    """The scanned sampler's step loop must not copy every block's weights into a stacked array at each step: the
    stacked weights (leading axis = the 3 layers) are made before the loop, and the loop body makes none."""
    from jax_vdit import sampling

    model = init_model(get_preset("tiny", num_layers=3), seed=0)
    graphdef, state = nnx.split(model)
    ddim = sampling.ddim(2)
    text = jnp.zeros((1, 5, model.cfg.caption_channels))
    jaxpr = jax.make_jaxpr(lambda s, x, start, stop: sampling._sample_fn(  # traced start/stop, as the sampler runs
        graphdef, s, x, jax.random.key(0), text, jnp.ones((1, 5), bool), None, None, 1.0, ddim.arrays(), start, stop,
        method=ddim.method, attention=_att(None, True), latent_dtype=jnp.float32))(
        state, jnp.zeros((1, 4, 3, 8, 8)), jnp.int32(0), jnp.int32(2))
    stacked = {(3, *leaf.shape) for leaf in jax.tree.leaves(nnx.state(model.blocks[0]))}
    (loop,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "while"]
    outside = _output_shapes([e for e in jaxpr.jaxpr.eqns if e is not loop])
    assert stacked <= set(outside)  # every weight stacked before the loop
    body = _output_shapes(loop.params["body_jaxpr"].jaxpr.eqns)
    assert not stacked & set(body), stacked & set(body)
