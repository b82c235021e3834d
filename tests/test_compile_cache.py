"""One sampler executable: the warm-up, the real run and a progress bar share it, ``compile_sampler`` returns it
compiled ahead of time, and a fresh process reads it from the persistent compilation cache (compiles nothing)."""

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

from jax_vdit import sampling

from tiny_sampler import CFG, SHAPE, sampling_model  # tests/tiny_sampler.py

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return sampling_model()


@pytest.fixture(scope="module")
def text():
    k1, k2 = jax.random.split(jax.random.key(11))
    pos = jax.random.normal(k1, (1, 5, CFG.caption_channels))
    neg = jax.random.normal(k2, (1, 5, CFG.caption_channels))
    return pos, jnp.ones((1, 5), jnp.int32), neg


def test_progress_warmup_and_full_run_share_one_executable(model, text):
    pos, mask, neg = text
    kw = dict(key=jax.random.key(0), latent_shape=SHAPE, negative_text=neg, negative_mask=mask, guidance_scale=4.0,
              latent_dtype=jnp.float32)
    plan = sampling.euler_ancestral(3)
    plain = sampling.sample(model, pos, mask, plan=plan, **kw)
    size = sampling._sample_jit._cache_size()
    seen: list[int] = []
    with_bar = sampling.sample(model, pos, mask, plan=plan, progress=seen.append, **kw)
    sampling.sample(model, pos, mask, plan=plan.truncated(1), **kw)  # a CLI-style warm-up
    assert sampling._sample_jit._cache_size() == size  # nothing new was compiled
    assert seen == [0, 1, 2]
    np.testing.assert_array_equal(np.asarray(with_bar), np.asarray(plain))


def test_compiled_sampler_equals_sample_and_times_compilation(model, text):
    pos, mask, neg = text
    plan = sampling.ddim(3)
    common = dict(latent_shape=SHAPE, plan=plan, negative_text=neg, negative_mask=mask, guidance_scale=4.0,
                  latent_dtype=jnp.float32)
    compiled = sampling.compile_sampler(model, pos, mask, **common)
    assert compiled.compile_s > 0 and compiled.lower_s > 0
    assert "while" in compiled.hlo_text()
    key = jax.random.key(9)
    expected = sampling.sample(model, pos, mask, key=key, **common)
    np.testing.assert_allclose(np.asarray(compiled(key)), np.asarray(expected), rtol=1e-6, atol=1e-6)
    seen: list[int] = []
    np.testing.assert_allclose(np.asarray(compiled(key, progress=seen.append)), np.asarray(expected),
                               rtol=1e-6, atol=1e-6)
    assert seen == [0, 1, 2]
    one = compiled(key, num_steps=1)
    resumed = compiled(key, start_step=1, latents=one)
    np.testing.assert_allclose(np.asarray(resumed), np.asarray(expected), rtol=1e-6, atol=1e-6)
    assert one.shape == (1, *SHAPE)  # the caller's latents were copied, not donated
    with pytest.raises(ValueError, match="num_steps must be in \\[0, 3\\]"):
        compiled(key, num_steps=4)


_CHILD = r"""
import json, sys
import jax
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
import jax.numpy as jnp
import pallas_kernels
from jax_vdit import sampling
from jax_vdit.config import get_preset
from jax_vdit.model import AttentionConfig, init_model

cfg = get_preset("tiny", num_layers=3)
model = init_model(cfg, seed=0)
text, mask = jnp.ones((1, 5, cfg.caption_channels)), jnp.ones((1, 5), jnp.int32)
att = AttentionConfig(masks=(None,) + (pallas_kernels.TileMask.from_string("1:1", 2),) * 2, tile_backend="reference")
start = len(events)
sampler = sampling.compile_sampler(model, text, mask, latent_shape=(4, 2, 8, 8), plan=sampling.consistency((0, 500)),
                                   negative_text=text, negative_mask=mask, attention=att)
at_compile = events[start:]
out = sampler(jax.random.key(0), num_steps=1)
out = sampler(jax.random.key(0), progress=lambda i: None)
jax.block_until_ready(out)
count = lambda evs, name: sum(e == "/jax/compilation_cache/" + name for e in evs)
print(json.dumps({"misses": count(events, "cache_misses"), "hits": count(events, "cache_hits"),
                  "compile_misses": count(at_compile, "cache_misses"), "compile_hits": count(at_compile, "cache_hits"),
                  "compile_s": sampler.compile_s}))
"""


def _child(cache_dir: Path) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cache_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_compiles_nothing(tmp_path):
    """A fresh process with the same model, shapes and masks reads every program (the sampler, the warm-up, the
    progress run and the small eager ops) from the persistent cache."""
    first = _child(tmp_path / "xla")
    assert first["compile_misses"] >= 1 and first["misses"] >= first["compile_misses"], first
    second = _child(tmp_path / "xla")
    assert second["misses"] == 0, second
    assert second["compile_hits"] >= 1 and second["hits"] == first["misses"], (first, second)
