"""Model <-> nested pure parameter dicts (the form every loader and writer in this wing exchanges)."""

from __future__ import annotations

from flax import nnx

from jax_vdit.config import ModelConfig
from jax_vdit.io.key_map import check_tree_shapes
from jax_vdit.model.transformer import OpenSoraT2V, abstract_model


def model_from_pure_params(cfg: ModelConfig, params: dict) -> OpenSoraT2V:
    """Build the model and fill its parameters from a nested pure dict (shapes are checked)."""
    graphdef, abstract_state = nnx.split(abstract_model(cfg))
    check_tree_shapes(nnx.to_pure_dict(abstract_state), params, what="parameter tree")
    nnx.replace_by_pure_dict(abstract_state, params)  # fills the abstract state in place
    return nnx.merge(graphdef, abstract_state)


def pure_params(model: OpenSoraT2V) -> dict:
    """The model's parameters as a nested pure dict of arrays."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))
