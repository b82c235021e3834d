"""``write_vae_folder``: a CausalVAE written in the release layout reads back exactly, with the release's tensor
names, shapes and values (checked against the golden release-code checkpoint)."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file

from jax_vdit.io import load_vae
from jax_vdit.io.vae_weights import write_vae_folder
from jax_vdit.vae import VAEConfig, random_vae

GOLDEN = Path(__file__).parent / "data" / "golden" / "causalvae_v12" / "tiny_a"


def _flat(vae) -> dict:
    return {tuple(k): np.asarray(v) for k, v in nnx.to_flat_state(nnx.split(vae)[1])}


def test_the_golden_checkpoint_is_written_back_with_its_own_names_shapes_and_values(tmp_path):
    original = load_file(str(GOLDEN / "diffusion_pytorch_model.safetensors"))
    folder = write_vae_folder(load_vae(GOLDEN), tmp_path / "vae")
    written = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    expected = {k: v for k, v in original.items() if "loss" not in k}  # training-only modules are not part of it
    assert set(written) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(written[name], value.astype(np.float32), err_msg=name)


def test_a_random_vae_with_2d_and_3d_blocks_round_trips(tmp_path):
    cfg = VAEConfig.micro()
    vae = random_vae(cfg, seed=5, dtype=jnp.float32)
    back = load_vae(write_vae_folder(vae, tmp_path / "vae"))
    assert back.config == cfg
    a, b = _flat(vae), _flat(back)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
