"""Sequence parallelism (jax_vdit.parallel): Ulysses attention in shard_map, sampling and training on a mesh.

The multi-device checks need 8 fake CPU devices, which XLA only creates if asked before jax is imported; the rest of
the suite imports jax in-process, so they run in a subprocess (``tests/parallel_worker.py``) whose JSON lines are
asserted on here. In-process tests cover the one-device mesh, the rule table and config validation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jax_vdit import parallel, sampling
from jax_vdit.model import AttentionConfig
from jax_vdit.model.attention import sequence_parallel

from subprocess_flags import child_xla_flags  # tests/subprocess_flags.py
from tiny_sampler import CFG, SHAPE, sampling_model  # tests/tiny_sampler.py

ROOT = Path(__file__).resolve().parents[1]
FP32_TOL = 5e-6  # relative; observed ~2e-7 .. 8e-7 (different reduction orders per shard shape)


@pytest.fixture(scope="module")
def worker_rows(tmp_path_factory) -> list[dict]:
    """Run every multi-device check once (about 1-2 minutes on 2 CPU cores) and parse its JSON lines."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = child_xla_flags()  # the worker sets its own device count
    env["JAX_PLATFORMS"] = "cpu"
    # the train check runs `train` four times; the last three compile the same mesh step (8 s each on 2 cores),
    # which JAX's persistent cache then reads back: that check took 59-64 s instead of 77-80 s
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path_factory.mktemp("parallel_worker_xla_cache"))
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "2"  # only the large programs: writing every one costs more
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "parallel_worker.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"worker failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows[0]["check"] == "setup" and rows[0]["devices"] == 8, rows[0]
    assert rows[-1]["check"] == "done", proc.stdout[-2000:]
    return rows


def _rows(rows, check):
    found = [r for r in rows if r["check"] == check]
    assert found, f"the worker produced no {check!r} rows"
    return found


def test_sampling_matches_one_device_on_1x2_1x8_and_2x4_meshes(worker_rows):
    rows = _rows(worker_rows, "sample")
    assert {r["mesh"] for r in rows} >= {"1x2", "1x8", "2x4"}
    # dense + tile layers; the reference, gather and Pallas Triton (interpret) tile backends
    assert {r["attention"] for r in rows} >= {"mixed-reference", "tile-gather", "tile-triton"}
    for r in rows:
        assert r["finite"] and r["replicated"], r
        assert r["devices"] == int(r["mesh"][0]) * int(r["mesh"][2]), r
        assert r["err"] < FP32_TOL, r


def test_loss_and_gradients_match_one_device(worker_rows):
    rows = _rows(worker_rows, "grads")
    assert {r["mesh"] for r in rows} >= {"1x2", "1x8", "2x4"}
    for r in rows:
        assert r["loss_err"] < FP32_TOL and r["grad_err"] < FP32_TOL, r
    assert {r["attention"] for r in rows} >= {"mixed-reference", "tile-gather", "tile-triton"}
    split = [r for r in rows if r["rules"] == "split"]
    assert split and all(r["sharded_param_leaves"] > 0 for r in split)  # the rule table really split weights


def test_train_loop_on_2x4_mesh_matches_one_device_and_resumes(worker_rows):
    (r,) = _rows(worker_rows, "train")
    assert r["steps"] == 3 and r["devices"] == 8
    assert r["metric_err"] < FP32_TOL, r
    assert r["param_err_over_lr"] < 1e-3, r  # parameters and EMA after 3 AdamW steps
    # killed after 2 steps, resumed from the sharded checkpoint of step 2, on all 8 devices: bit-identical
    assert r["killed_at"] == 2 and r["resumed_from"] == 2 and r["resumed_devices"] == 8 and r["resume_equal"], r


def test_compiled_forward_is_token_sharded_with_all_to_alls(worker_rows):
    (r,) = _rows(worker_rows, "hlo")
    assert r["all_to_all"] >= r["layers"], r  # q/k/v in and the output back, per self-attention layer
    assert r["all_gather"] == 0, r  # activations are never gathered
    assert r["local_mlp"] and not r["global_mlp"], r  # the MLP runs on (B, N/seq, 4D) shards


def test_multi_device_errors_name_the_problem(worker_rows):
    errors = {r["case"]: r["raised"] for r in _rows(worker_rows, "error")}
    assert errors["heads"] and "8 attention heads" in errors["heads"] and "not divisible by 3" in errors["heads"]
    assert errors["no_mesh"] and "jax.set_mesh" in errors["no_mesh"]
    assert errors["bad_axis"] and "'tokens' is not an axis of the mesh" in errors["bad_axis"]


# ------------------------------------------------------------------------------------------------------------
# in-process (one device)


@pytest.fixture(scope="module")
def model():
    return sampling_model()


def test_sampling_on_a_one_device_mesh_equals_plain_sampling(model):
    pos = jax.random.normal(jax.random.key(1), (1, 5, CFG.caption_channels))
    neg = jax.random.normal(jax.random.key(2), (1, 5, CFG.caption_channels))
    mask = jnp.ones((1, 5), jnp.int32)
    kwargs = dict(key=jax.random.key(0), latent_shape=SHAPE, plan=sampling.ddim(2), negative_text=neg,
                  negative_mask=mask, guidance_scale=3.0, latent_dtype=jnp.float32)
    plain = sampling.sample(model, pos, mask, **kwargs)
    meshed = sampling.sample(model, pos, mask, mesh=parallel.make_mesh(seq=1), **kwargs)
    np.testing.assert_allclose(meshed, plain, rtol=1e-6, atol=1e-6 * float(jnp.abs(plain).max()))


def test_sequence_axis_without_a_mesh_is_an_error(model):
    x = jnp.zeros((1, *SHAPE))
    text = jnp.zeros((1, 5, CFG.caption_channels))
    with pytest.raises(ValueError, match="needs a device mesh in context"):
        model(x, jnp.zeros((1,)), text, attention=AttentionConfig(sequence_axis="seq"))


def test_attention_config_fields_are_validated():
    with pytest.raises(ValueError, match="must be different mesh axes"):
        AttentionConfig(sequence_axis="seq", batch_axis="seq")
    with pytest.raises(ValueError, match="sequence_axis must be a mesh axis name"):
        AttentionConfig(sequence_axis=3)
    assert AttentionConfig() == AttentionConfig(sequence_axis=None, batch_axis=None)  # default unchanged
    hash(AttentionConfig(sequence_axis="seq", batch_axis="data"))  # still a static jit argument


def test_rules_table_and_parameter_axes():
    mesh = parallel.make_mesh(seq=1, data=1)
    assert parallel.DEFAULT_RULES.axis("tokens") == "seq" and parallel.DEFAULT_RULES.axis("heads") is None
    rules = parallel.DEFAULT_RULES.with_rules(mlp="seq")
    assert rules.spec(("embed", "mlp")) == P(None, "seq")
    assert rules.spec(("batch", "tokens"), shape=(3, 8), mesh=mesh) == P("data", "seq")  # size-1 axes divide
    assert parallel.param_logical_axes(("blocks", "0", "attn1", "to_q", "kernel"), 2) == ("embed", "heads")
    assert parallel.param_logical_axes(("opt_state", "mu", "blocks", "1", "ff", "proj_out", "kernel"), 2) == (
        "mlp", "embed")
    assert parallel.param_logical_axes(("proj_out", "kernel"), 2) == (None, None)  # the final layer
    with pytest.raises(ValueError, match="unknown logical axes"):
        parallel.ShardingRules((("vocab", "data"),))
    att = sequence_parallel(AttentionConfig(), mesh)
    assert (att.sequence_axis, att.batch_axis) == ("seq", "data")
    with pytest.raises(ValueError, match="needs 16 devices"):
        parallel.make_mesh(seq=8, data=2, devices=jax.devices()[:1])
