"""One load_vae, in this fresh process, of a random bf16 release-architecture VAE folder (478 MB; written to
/tmp/vae_full if missing), with the finite check counted in chunks (``chunks``: now) or in one pass (``one-pass``:
before, patched in): the load's wall seconds and the check's cumulative seconds under cProfile.
Run: python experiments/results/vae/finite_check_cpu_2026-12-07/load_profile.py chunks|one-pass"""
import cProfile
import pstats
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit.io import integrity, key_map
from jax_vdit.io.vae_weights import load_vae, write_vae_folder
from jax_vdit.vae import VAEConfig, random_vae

FOLDER = Path("/tmp/vae_full")
if not (FOLDER / "diffusion_pytorch_model.safetensors").is_file():
    write_vae_folder(random_vae(VAEConfig(), seed=0, dtype=jnp.bfloat16), FOLDER, dtype="bfloat16")
chunked = integrity.count_non_finite_numpy


def one_pass(a):  # the code before the change
    a = np.asarray(a)
    if not integrity._is_float(a.dtype):
        return 0
    mask = integrity._EXPONENT_MASKS.get(np.dtype(a.dtype).name)
    if mask is not None:
        bits = np.ascontiguousarray(a).reshape(-1).view(np.uint16)
        return int(np.count_nonzero((bits & np.uint16(mask)) == mask))
    values = a if a.dtype.itemsize >= 4 else a.astype(np.float32)
    return int(values.size - np.count_nonzero(np.isfinite(values)))


jax.devices()
name = sys.argv[1]
key_map.count_non_finite_numpy = {"chunks": chunked, "one-pass": one_pass}[name]  # what check_finite calls
profile = cProfile.Profile()
t = time.perf_counter()
profile.enable()
load_vae(FOLDER, dtype=jnp.bfloat16)
profile.disable()
wall = time.perf_counter() - t
stats = pstats.Stats(profile).stats
check = sum(v[3] for k, v in stats.items() if k[2] in ("count_non_finite_numpy", "one_pass"))
print(f"{name}: load_vae {wall:.2f} s (under cProfile), the finite check {check:.2f} s")
