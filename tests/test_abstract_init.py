"""Shape-only construction (jax_vdit.abstract_init): the same module tree as a traced ``nnx.Rngs`` construction,
without drawing from ``nnx.Rngs`` (whose counter updates made the trace's cost grow with the square of the depth)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jax_vdit.abstract_init import ShapeOnlyRngs, abstract
from jax_vdit.config import get_preset
from jax_vdit.model.transformer import OpenSoraT2V, abstract_model
from jax_vdit.vae.config import ComputeConfig, VAEConfig
from jax_vdit.vae.model import CausalVAE, abstract_vae


def _shapes(module) -> list:
    return [(jax.tree_util.keystr(p), x.shape, x.dtype) for p, x in
            jax.tree_util.tree_leaves_with_path(nnx.state(module))]


def _no_rngs_streams(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("an nnx.Rngs stream was drawn from during shape-only construction")
    monkeypatch.setattr(nnx.Rngs, "__call__", refuse)
    monkeypatch.setattr(nnx.RngStream, "__call__", refuse)


def test_abstract_transformer_matches_a_traced_rngs_construction_and_draws_no_rngs(monkeypatch):
    cfg = get_preset("tiny").replace(num_layers=3)
    reference = nnx.eval_shape(lambda: OpenSoraT2V(cfg, rngs=nnx.Rngs(0)))
    _no_rngs_streams(monkeypatch)
    model = abstract_model(cfg)
    assert nnx.graphdef(model) == nnx.graphdef(reference)
    assert _shapes(model) == _shapes(reference)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(model)))


def test_abstract_vae_matches_a_traced_rngs_construction_and_draws_no_rngs(monkeypatch):
    config = VAEConfig.micro()
    reference = nnx.eval_shape(lambda: CausalVAE(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                                                 compute=ComputeConfig(), rngs=nnx.Rngs(0)))
    _no_rngs_streams(monkeypatch)
    vae = abstract_vae(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    assert nnx.graphdef(vae) == nnx.graphdef(reference)
    assert _shapes(vae) == _shapes(reference)


def test_shape_only_rngs_gives_one_constant_key_per_stream_and_is_not_a_copy_protocol():
    rngs = ShapeOnlyRngs()
    keys = [rngs.params(), rngs.dropout(), rngs()]
    assert all(bool(jnp.all(jax.random.key_data(k) == jax.random.key_data(keys[0]))) for k in keys)
    with pytest.raises(AttributeError):
        rngs.__deepcopy__


def test_abstract_passes_the_rngs_to_the_builder():
    seen = []
    out = abstract(lambda rngs: seen.append(type(rngs)) or nnx.Linear(2, 3, rngs=rngs))
    assert seen == [ShapeOnlyRngs] and out.kernel.shape == (2, 3)
