"""The loading wing: every file a model or VAE is read from or written to.

* ``tensors``: tensor sources (safetensors files and sharded indexes, PyTorch pickles), opened lazily.
* ``key_map``: explicit release-name -> parameter-path maps and the checks run before any tensor is read.
* ``release``: the transformer's release format (key map, streaming reads, writing release folders).
* ``checkpoints``: our orbax model checkpoints (split by block, written atomically) and ``atomic_directory``.
* ``params``: model <-> nested pure parameter dicts.
* ``vae_weights``: the CausalVAE's release checkpoint.
* ``load``: :func:`load_model`, the one entry for any transformer file.
"""

from jax_vdit.io.load import load_model
from jax_vdit.io.vae_weights import load_vae

__all__ = ["load_model", "load_vae"]
