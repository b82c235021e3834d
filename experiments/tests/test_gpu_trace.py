"""experiments/gpu_trace.py: kernel kinds, and a trace without GPU kernels (the CPU) sums to nothing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from experiments.gpu_trace import aggregate, kind, summarize


def test_kernel_names_map_to_their_kinds():
    assert kind("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16") == "attention (cuDNN)"
    assert kind("nvjet_sm90_tst_192x128_64x5_1x2_h_bz_coopB_NNT") == "gemm"
    assert kind("tile_attention_fwd_mosaic") == kind("tile_attention_dkv") == "tile attention (Pallas)"
    assert kind("gemm_fusion_dot_81") == "gemm"
    assert kind("memcpy128") == "memcpy"
    assert kind("loop_dynamic_update_slice_fusion_31") == "dynamic_update_slice"
    assert kind("wrapped_transpose_1") == "transpose"
    assert kind("input_add_reduce_fusion") == "other fusions"


def test_kernel_times_are_grouped_per_step_by_kind_with_the_longest_kernels_listed():
    events = [("gemm_fusion_dot_1", 4_000_000), ("gemm_fusion_dot_1", 2_000_000), ("memcpy128", 1_000_000),
              ("loop_add_fusion", 3_500_000), ("loop_add_fusion", 3_500_000), ("loop_mul_fusion", 500_000)]
    result = aggregate(events, steps=2, top=2)
    assert result["ms_per_step"] == pytest.approx(7.25)
    assert list(result["kinds"]) == ["other fusions", "gemm", "memcpy"]  # longest first
    assert result["kinds"]["other fusions"] == pytest.approx({"ms_per_step": 3.75, "kernels_per_step": 1.5})
    assert result["kinds"]["gemm"] == pytest.approx({"ms_per_step": 3.0, "kernels_per_step": 1.0})
    assert [(t["kernel"], t["kind"], t["ms_per_step"], t["per_step"]) for t in result["top"]] == [
        ("loop_add_fusion", "other fusions", 3.5, 1.0), ("gemm_fusion_dot_1", "gemm", 3.0, 1.0)]


def test_a_cpu_trace_has_no_gpu_time_and_a_missing_trace_is_named(tmp_path):
    with jax.profiler.trace(str(tmp_path / "trace")):
        jax.block_until_ready(jax.jit(lambda x: x @ x)(jnp.ones((64, 64))))
    result = summarize(tmp_path / "trace", steps=1)
    assert result["ms_per_step"] == 0.0 and result["kinds"] == {}
    with pytest.raises(FileNotFoundError, match="xplane"):
        summarize(tmp_path / "nothing", steps=1)


def test_compare_scan_profiles_each_program_when_asked(tmp_path):
    """`bench_first_video --compare-scan --profile-dir`: a trace folder per compiled program and the GPU kernel time
    by kind in each row (nothing on the CPU)."""
    from experiments.bench_first_video import compare_scan

    rows = compare_scan("tiny", [2], ["dense"], runs=1, profile_dir=tmp_path)
    assert [(r["scan_layers"], r["gpu_ms"], r["gpu_ms_by_kind"], r["gpu_kernels_by_kind"], r["gpu_top_kernels"])
            for r in rows] == [(True, 0.0, {}, {}, []), (False, 0.0, {}, {}, [])]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dense_l2_scan_u1", "dense_l2_unrolled_u1"]
