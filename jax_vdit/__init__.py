"""jax-vdit: Open-Sora-Plan v1.2 video DiT in JAX/Flax NNX with Attention Tile sparse attention and
multi-step consistency distillation."""

from jax_vdit.config import PRESETS, ModelConfig, get_preset
from jax_vdit.model import AttentionConfig, OpenSoraT2V, init_model
from jax_vdit.io import load_model, load_vae

__version__ = "0.1.0"



def __getattr__(name: str):
    if name == "OpenSoraPipeline":  # imported on first use: ``import jax_vdit`` stays light
        from jax_vdit.pipeline import OpenSoraPipeline

        return OpenSoraPipeline
    raise AttributeError(f"module 'jax_vdit' has no attribute {name!r}")


__all__ = ["OpenSoraPipeline", "PRESETS", "AttentionConfig", "ModelConfig", "OpenSoraT2V", "get_preset", "init_model", "load_model", "load_vae"]
