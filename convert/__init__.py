"""Convert Open-Sora-Plan release checkpoints (PyTorch / safetensors) to jax-vdit's orbax format."""

from convert.transformer import ConversionReport, convert_transformer

__all__ = ["ConversionReport", "convert_transformer"]
