"""Host values reach the device without a compiled program (``jnp.asarray`` stages one per shape and dtype)."""

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit.compile_meter import CompileMeter
from jax_vdit.host_arrays import to_device


def test_to_device_copies_values_exactly_and_compiles_nothing():
    rng = np.random.default_rng(0)
    values = [rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(2, 1, 7)).astype(jnp.bfloat16),
              rng.integers(0, 9, size=(4,), dtype=np.int32), np.float32(2.5)]
    with CompileMeter() as meter:
        out = [to_device(v) for v in values]
        seed = to_device(2**32 - 1, np.uint32)
        steps = to_device(3, np.int32)
        listed = to_device([1, 2, 3], np.int32)
        wide = to_device(np.ones(3, np.float64))  # canonicalised as JAX does without x64
    assert meter.report()["programs"] == 0, meter.report()
    for v, o in zip(values, out):
        assert isinstance(o, jax.Array) and o.dtype == v.dtype and o.shape == np.shape(v)
        np.testing.assert_array_equal(np.asarray(o), v)
    assert seed.dtype == np.uint32 and int(seed) == 2**32 - 1
    assert steps.dtype == np.int32 and steps.shape == () and int(steps) == 3
    assert listed.tolist() == [1, 2, 3]
    assert wide.dtype == jnp.float32


def test_to_device_keeps_device_arrays_and_casts_on_request():
    x = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    assert to_device(x) is x and to_device(x, np.float32) is x
    y = to_device(x, jnp.bfloat16)
    assert y.dtype == jnp.bfloat16 and np.array_equal(np.asarray(y, np.float32), np.asarray(x))


def test_loading_the_vae_compiles_no_program():
    """The VAE's weights are copied to the device one by one: through ``jnp.asarray`` each distinct weight shape
    compiled its own staging program (26 for the release VAE)."""
    from pathlib import Path

    from jax_vdit.io import load_vae

    golden = Path(__file__).parent / "data" / "golden" / "causalvae_v12" / "tiny_a"
    jax.clear_caches()  # programs compiled by earlier tests would otherwise be reused without an event
    with CompileMeter() as meter:
        vae = load_vae(golden)
    assert meter.report()["programs"] == 0, meter.report()
    assert vae.config.embed_dim > 0
