"""bench_distill's analysis of the sharded step: with --fsdp-devices the per-device arguments shrink (state and
teacher split over ``data``) and the numbers are recorded with the mesh size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[2]


def _analysis(tmp_path: Path, *extra: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "experiments.bench_distill", "--size", "tiny", "--batch", "4", "--analyze-only",
           "--stages", "kd", "--out", str(tmp_path), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    name = "tiny_analysis_kd_fsdp4_cpu.json" if extra else "tiny_analysis_kd_cpu.json"
    return json.loads((tmp_path / name).read_text())["analysis"][0]


def test_fsdp_analysis_splits_the_state_per_device(tmp_path):
    one = _analysis(tmp_path)
    four = _analysis(tmp_path, "--fsdp-devices", "4")
    assert one["fsdp_devices"] == 0 and four["fsdp_devices"] == 4
    assert four["state_bytes"] == one["state_bytes"]  # the whole state, as before
    # per device: the state and teacher are split (not every tiny axis divides by 4, so less than 4x)
    assert four["argument_size_in_bytes"] < 0.6 * one["argument_size_in_bytes"]
    assert four["peak_estimate_bytes"] < one["peak_estimate_bytes"]


def test_scan_layers_reaches_the_benchmarked_train_step():
    """--scan-layers: bench_distill's TrainConfig (and so the step it times) scans the blocks; default unrolled."""
    from experiments.bench_distill import abstract_inputs, configs

    student_cfg, teacher_cfg, latent, text_len = configs("tiny")
    for scan in (False, True):
        tcfg = abstract_inputs(student_cfg, teacher_cfg, latent, text_len, 1, "kd", scan)[2]
        assert tcfg.scan_layers is scan


def test_recipe_settings_shape_the_benchmarked_state():
    """--set mlcd_export=student --set adam_mu_dtype=bfloat16: the MLCD state bench_distill builds is the one
    `vdit distill mlcd` trains with those settings, 14 instead of 20 bytes a parameter (no exported EMA, bf16 first
    moments); the defaults keep the target and exported EMAs."""
    from experiments.bench_distill import abstract_inputs, configs

    student_cfg, teacher_cfg, latent, text_len = configs("tiny")

    def state_bytes_per_param(*sets: str) -> tuple:
        tcfg, _, state = abstract_inputs(student_cfg, teacher_cfg, latent, text_len, 1, "mlcd", False, sets)[2:5]
        params = sum(x.size for x in jax.tree.leaves(state.params))
        total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
        return tcfg, round(total / params, 3)

    default, lean = state_bytes_per_param(), state_bytes_per_param("mlcd_export=student", "adam_mu_dtype=bfloat16")
    assert [name for name, _ in default[0].emas] == ["target", "ema"] and default[1] == 20.0
    assert [name for name, _ in lean[0].emas] == ["target"] and lean[0].adam_mu_dtype == "bfloat16"
    assert lean[1] == 14.0
