"""The loading wing: every file a model or VAE is read from or written to.

* ``tensors``: tensor sources (safetensors files and sharded indexes, PyTorch pickles), opened lazily.
* ``prefetch``: a checkpoint's tensors read into host memory in background threads before JAX is imported.
* ``key_map``: explicit release-name -> parameter-path maps and the checks run before any tensor is read.
* ``release``: the transformer's release format (key map, streaming reads, writing release folders).
* ``checkpoints``: our orbax model checkpoints (split by block, written atomically) and ``atomic_directory``.
* ``params``: model <-> nested pure parameter dicts.
* ``vae_weights``: the CausalVAE's release checkpoint.
* ``load``: :func:`load_model`, the one entry for any transformer file.

The exports are imported on first use, so that ``tensors`` and ``prefetch`` can be imported without JAX.
"""

from jax_vdit.lazy_exports import lazy_exports

_EXPORTS = {"load_model": "jax_vdit.io.load", "load_vae": "jax_vdit.io.vae_weights"}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
