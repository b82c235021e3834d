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


def _count_builds(monkeypatch) -> list:
    from jax_vdit import abstract_init

    builds = []
    real = abstract_init.abstract

    def counted(build):
        builds.append(1)
        return real(build)

    monkeypatch.setattr(abstract_init, "abstract", counted)
    monkeypatch.setattr(abstract_init, "_pickled", {})
    return builds


def test_abstract_models_are_built_once_per_config_and_each_call_gets_its_own(monkeypatch):
    """The second abstract model of a config is unpickled, not traced; each call returns a new module, so filling
    one with arrays (as loading does) leaves the next one abstract; another config is built anew."""
    from jax_vdit import executable_store

    monkeypatch.setattr(executable_store, "store_directory", lambda: None)
    builds = _count_builds(monkeypatch)
    cfg = get_preset("tiny").replace(num_layers=2)
    first, second = abstract_model(cfg), abstract_model(cfg)
    assert len(builds) == 1 and first is not second
    assert nnx.graphdef(first) == nnx.graphdef(second) and _shapes(first) == _shapes(second)
    state = nnx.state(first)
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), nnx.to_pure_dict(state)))
    nnx.update(first, state)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(first)))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(abstract_model(cfg))))
    deeper = abstract_model(cfg.replace(num_layers=3))
    assert len(builds) == 2 and len(nnx.state(deeper)["blocks"]) == 3
    abstract_vae(VAEConfig(), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    abstract_vae(VAEConfig(), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    abstract_vae(VAEConfig(), dtype=jnp.float32, param_dtype=jnp.float32)  # other dtypes: another module
    assert len(builds) == 4


def test_a_later_process_reads_the_abstract_model_from_the_store_and_a_damaged_file_is_rebuilt(
        monkeypatch, tmp_path):
    from jax_vdit import executable_store

    monkeypatch.setattr(executable_store, "store_directory", lambda: tmp_path)
    monkeypatch.setattr(executable_store, "_warned", set())  # this process may have warned before
    builds = _count_builds(monkeypatch)
    cfg = get_preset("tiny").replace(num_layers=2)
    built = abstract_model(cfg)
    (stored,) = tmp_path.glob("*.obj")
    monkeypatch.setattr("jax_vdit.abstract_init._pickled", {})  # as in a new process
    read = abstract_model(cfg)
    assert len(builds) == 1 and nnx.graphdef(read) == nnx.graphdef(built) and _shapes(read) == _shapes(built)
    stored.write_bytes(stored.read_bytes()[:-10])  # truncated
    monkeypatch.setattr("jax_vdit.abstract_init._pickled", {})
    with pytest.warns(RuntimeWarning, match="ignored unusable file"):
        again = abstract_model(cfg)
    assert len(builds) == 2 and _shapes(again) == _shapes(built)
    assert any("ignored unusable file" in p for p in executable_store.problems())
    assert stored.is_file()  # written anew by the rebuild
    executable_store.save_object(stored.stem, b"not a pickle")  # intact file, unusable contents
    monkeypatch.setattr("jax_vdit.abstract_init._pickled", {})
    assert _shapes(abstract_model(cfg)) == _shapes(built) and len(builds) == 3
    assert any("ignored unusable object" in p for p in executable_store.problems())
