"""OpenSoraT2V in Flax NNX and its attention interface."""

from jax_vdit.model.attention import DENSE, AttentionConfig, dense_attention, reference_attention, self_attention
from jax_vdit.model.transformer import InputShapeError, OpenSoraT2V, abstract_model, init_model, random_model

__all__ = [
    "DENSE", "AttentionConfig", "InputShapeError", "OpenSoraT2V", "abstract_model", "dense_attention", "init_model",
    "random_model", "reference_attention", "self_attention",
]
