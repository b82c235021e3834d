"""jax-vdit: Open-Sora-Plan v1.2 video DiT in JAX/Flax NNX with Attention Tile sparse attention and
multi-step consistency distillation."""

from jax_vdit.lazy_exports import lazy_exports

__version__ = "0.1.0"

# name -> the module that defines it, imported on first use: ``import jax_vdit.cli`` (the console entry) does not
# import JAX, so `vdit sample` can start its helper processes before JAX's import and start-up
_EXPORTS = {
    **dict.fromkeys(("PRESETS", "ModelConfig", "get_preset"), "jax_vdit.config"),
    **dict.fromkeys(("AttentionConfig", "OpenSoraT2V", "init_model"), "jax_vdit.model"),
    **dict.fromkeys(("load_model", "load_vae"), "jax_vdit.io"),
    "OpenSoraPipeline": "jax_vdit.pipeline",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = ["OpenSoraPipeline", "PRESETS", "AttentionConfig", "ModelConfig", "OpenSoraT2V", "get_preset", "init_model", "load_model", "load_vae"]
