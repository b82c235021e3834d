"""jax-vdit: Open-Sora-Plan v1.2 video DiT in JAX/Flax NNX with Attention Tile sparse attention and
multi-step consistency distillation."""

import importlib

__version__ = "0.1.0"

# name -> the module that defines it, imported on first use: ``import jax_vdit.cli`` (the console entry) does not
# import JAX, so `vdit sample` can start its helper processes before JAX's import and start-up
_EXPORTS = {
    **dict.fromkeys(("PRESETS", "ModelConfig", "get_preset"), "jax_vdit.config"),
    **dict.fromkeys(("AttentionConfig", "OpenSoraT2V", "init_model"), "jax_vdit.model"),
    **dict.fromkeys(("load_model", "load_vae"), "jax_vdit.io"),
    "OpenSoraPipeline": "jax_vdit.pipeline",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule (``jax_vdit.sampling``) not imported yet
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["OpenSoraPipeline", "PRESETS", "AttentionConfig", "ModelConfig", "OpenSoraT2V", "get_preset", "init_model", "load_model", "load_vae"]
