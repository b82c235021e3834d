"""Convert Open-Sora-Plan release checkpoints (PyTorch / safetensors) to jax-vdit's orbax format.

The exports are imported on first use: ``vdit``'s argument parser reads the converter's flags without importing
JAX (which ``convert.transformer`` needs)."""

from jax_vdit.lazy_exports import lazy_exports

_EXPORTS = {"ConversionReport": "convert.transformer", "convert_transformer": "convert.transformer"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
