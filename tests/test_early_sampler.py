"""``from_pretrained(early_job=...)``: the sampler compiles from the model's shapes in a background thread while
the weights load; the warm-up then traces and compiles nothing, and the latents are those of a pipeline without
it. A job the shapes-only pipeline cannot prepare is recorded, and the warm-up compiles as before."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit import executable_store, sampling
from jax_vdit.compile_meter import CompileMeter
from jax_vdit.io.hub import RELEASE_REPO
from jax_vdit.pipeline import OpenSoraPipeline

from fake_hub import build_fake_hub_cache, embeddings  # tests/fake_hub.py

F32 = dict(param_dtype="float32", compute_dtype="float32")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("hf_cache")
    build_fake_hub_cache(cache)
    return cache


@pytest.fixture
def store(executable_store_on):
    """The executable store on, in a fresh cache folder (tests/conftest.py), as `vdit sample` has it."""
    return executable_store_on


class _NoTracing:
    def lower(self, *args, **kwargs):
        raise AssertionError("the sampler was traced again although the background thread compiled it")

    __call__ = lower


def _load(hub_cache, early_job):
    return OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache, vae=None,
                                            local_files_only=True, early_job=early_job, **F32)


def test_the_warm_up_finds_the_sampler_compiled_from_shapes(hub_cache, store, monkeypatch):
    job_args = dict(prompt_embeds=embeddings(1), num_inference_steps=3, guidance_scale=4.0, seed=5,
                    latent_dtype=jnp.float32)
    pipe = _load(hub_cache, job_args)
    job = pipe.prepare(**job_args)
    pipe._early_sampler.result()  # the background compile is done: from here on nothing may trace the sampler
    with monkeypatch.context() as patched:
        patched.setattr(sampling, "_sample_jit", _NoTracing())
        with CompileMeter() as meter:
            pipe.warm_up(job)
            latents = pipe.run(job)
    assert pipe.early_sampler["error"] is None, pipe.early_sampler
    assert pipe.early_sampler["compile"]["programs"] >= 1 and pipe.early_sampler["wait_s"] >= 0
    assert meter.programs == 0, meter.report()  # the key, the noise and the sampler: all compiled beforehand
    assert len(list(store.glob("*.bin"))) == 3  # the sampler and the weights' two layout programs

    monkeypatch.setenv(executable_store.ENV_SWITCH, "0")  # the plain jitted path, for reference
    plain = _load(hub_cache, None)
    assert plain._early_sampler is None
    np.testing.assert_array_equal(latents, plain.run(plain.prepare(**job_args)))


def test_a_job_the_shapes_cannot_prepare_is_recorded_and_compiled_in_the_warm_up(hub_cache, store):
    emb = {k: v for k, v in embeddings(1).items() if not k.startswith("negative")}
    job_args = dict(prompt_embeds=emb, num_inference_steps=2, guidance_scale=1.0, seed=0, latent_dtype=jnp.float32)
    bad = dict(job_args, guidance_scale=4.0)  # CFG without negative embeddings or a text encoder
    pipe = _load(hub_cache, bad)
    with CompileMeter() as meter:
        pipe.warm_up(pipe.prepare(**job_args))
    assert "needs negative embeddings" in pipe.early_sampler["error"], pipe.early_sampler
    assert meter.programs >= 1  # compiled here instead
