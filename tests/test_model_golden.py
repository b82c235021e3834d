"""The Flax OpenSoraT2V reproduces the real Open-Sora-Plan v1.2.0 module (golden files)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

import jax_vdit
from convert import convert_transformer


def _run(model, inputs):
    return np.asarray(
        model(inputs["hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"],
              inputs["encoder_attention_mask"]),
        dtype=np.float32,
    )


@pytest.mark.parametrize("case", ["tiny_a", "tiny_b"])
def test_release_folder_fp32_matches_reference(golden_dir, case):
    folder = golden_dir / "opensora_v12" / case
    model = jax_vdit.load_model(folder, compute_dtype="float32")
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    out = _run(model, inputs)
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1e-4


def test_tiny_a_bf16_matches_reference_bf16(golden_dir):
    """bf16 parity. Tolerance: the reference's own bf16 output differs from its fp32 output by up to 0.023
    (mean 0.0043) on this case, i.e. bf16 rounding through 2 layers; two independent bf16 computations can differ
    by about twice that. We require max <= 0.06 and mean <= 0.008 (output std 0.71), and that the bf16 result is
    as close to the bf16 reference as to the fp32 one (it is not a different function)."""
    folder = golden_dir / "opensora_v12" / "tiny_a"
    inputs = load_file(folder / "inputs.safetensors")
    outputs = load_file(folder / "outputs.safetensors")
    ref_bf16 = outputs["output_bf16"].astype(np.float32)
    model = jax_vdit.load_model(folder, param_dtype="bfloat16", compute_dtype="bfloat16")
    out = _run(model, inputs)
    err = np.abs(out - ref_bf16)
    assert err.max() <= 0.06 and err.mean() <= 0.008, (err.max(), err.mean())
    assert np.abs(out - outputs["output_fp32"]).mean() <= 0.008


def test_convert_then_load_orbax_equals_direct_load(golden_dir, tmp_path):
    folder = golden_dir / "opensora_v12" / "tiny_a"
    report = convert_transformer(folder, tmp_path / "ckpt", show_progress=False)
    assert report.num_params == jax_vdit.load_model(folder).cfg.num_params()
    direct = jax_vdit.load_model(folder, compute_dtype="float32")
    via_orbax = jax_vdit.load_model(tmp_path / "ckpt", compute_dtype="float32")
    from jax_vdit.io.params import pure_params
    import jax

    for a, b in zip(jax.tree.leaves(pure_params(direct)), jax.tree.leaves(pure_params(via_orbax))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    inputs = load_file(folder / "inputs.safetensors")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    assert np.abs(_run(via_orbax, inputs) - expected).max() <= 1e-4


def test_convert_bf16_storage(golden_dir, tmp_path):
    folder = golden_dir / "opensora_v12" / "tiny_b"
    convert_transformer(folder, tmp_path / "ckpt", param_dtype="bfloat16", show_progress=False)
    model = jax_vdit.load_model(tmp_path / "ckpt")
    assert model.cfg.param_dtype == "bfloat16"
    assert str(model.proj_out.kernel[...].dtype) == "bfloat16"
