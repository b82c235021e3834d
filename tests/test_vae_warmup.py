"""Planning and compiling the VAE's stages ahead of the data (``jax_vdit.vae.warmup``): the plan holds exactly the
stages a decode/encode then runs, the decode after a (background, multi-threaded) warm-up compiles nothing and
gives the same pixels, and the pipeline overlaps the warm-up with sampling."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jax_vdit.vae import (
    TilingConfig,
    clear_compile_cache,
    compile_log,
    decode_latents_to_video,
    encode_video_to_latents,
)
from jax_vdit.vae.warmup import (
    WarmupReport,
    plan_decode,
    plan_encode,
    precompile,
    precompile_decode,
    precompile_decode_in_background,
    precompile_encode,
)

# small tiles so that a small latent is cut into edge and interior tiles of several shapes and two time chunks
TILES = TilingConfig(tile_sample_min_size=16, tile_latent_min_size=4, tile_sample_min_size_t=5,
                     tile_latent_min_size_t=2, tile_overlap_factor=0.25)
LATENT = (1, 4, 3, 6, 7)  # (B, C, t, h, w) DiT latents


@pytest.fixture
def vae(micro_vae):
    return micro_vae  # tests/conftest.py: shared by the VAE stage tests


pytestmark = pytest.mark.usefixtures("fresh_vae_stage_cache")


def _signatures(log: list[dict]) -> list[tuple]:
    return [(e["stage"], e["shape"], e["dtype"]) for e in log]


def test_the_plan_is_what_the_decode_compiles(vae):
    z = jax.random.normal(jax.random.key(0), LATENT)
    reference = decode_latents_to_video(vae, z, tiling=TILES)  # compiles as it goes
    compiled_by_decode = sorted(_signatures(compile_log()))
    calls = plan_decode(vae, LATENT, tiling=TILES)
    planned = sorted((c.fn.__name__, tuple(c.x_spec.shape), str(c.x_spec.dtype)) for c in calls)
    assert planned == compiled_by_decode
    assert len({(c.fn.__name__, tuple(c.x_spec.shape)) for c in calls}) > 6  # several tile shapes and stages

    clear_compile_cache()
    report = precompile(calls, workers=3)
    assert isinstance(report, WarmupReport) and report.stages == report.compiled == len(calls)
    n = len(compile_log())
    again = decode_latents_to_video(vae, z, tiling=TILES)
    assert len(compile_log()) == n  # the decode found every stage compiled
    np.testing.assert_array_equal(again, reference)
    assert precompile(calls).compiled == 0  # nothing left to do


def test_planning_traces_each_distinct_stage_once(vae, monkeypatch):
    """Equal-shape tiles and time chunks repeat the same stages: the plan traces each distinct one once (at 93x720p
    with uniform tiles, 384 stage calls but 10 distinct stages; tracing every call took 7-14 s of planning)."""
    from jax_vdit.vae import runtime

    uniform = TilingConfig(**{**TILES.__dict__, "uniform_tiles": True})
    traced = []
    real_eval_shape = runtime.jax.eval_shape

    def counting_eval_shape(fn, *args, **kw):
        traced.append(getattr(fn, "__name__", ""))
        return real_eval_shape(fn, *args, **kw)

    with runtime.recording_stages() as calls:
        monkeypatch.setattr(runtime.jax, "eval_shape", counting_eval_shape)
        real_eval_shape(lambda z: runtime.decode_nthwc(vae, z, tiling=uniform),
                        jax.ShapeDtypeStruct((1, 3, 6, 7, 4), np.float32))
        monkeypatch.undo()
    distinct = {runtime.stage_key(c) for c in calls}
    assert len(calls) > 2 * len(distinct)  # the tiles and chunks repeat the stages
    assert len([n for n in traced if n == "pure"]) == len(distinct)  # one trace per distinct stage


def test_background_decode_warmup_then_decode_compiles_nothing(vae):
    future = precompile_decode_in_background(vae, LATENT, tiling=TILES, workers=2)
    report = future.result(timeout=600)
    assert report.compiled == report.stages > 0 and report.workers == 2
    n = len(compile_log())
    frames = decode_latents_to_video(vae, jax.random.normal(jax.random.key(1), LATENT), tiling=TILES)
    assert frames.shape == (1, 5, 24, 28, 3) and len(compile_log()) == n  # the micro VAE: time 2x, space 4x
    assert n == report.stages  # each distinct stage compiled exactly once


def test_encode_warmup_covers_the_encode(vae):
    video = np.random.default_rng(0).integers(0, 255, (1, 9, 40, 48, 3), dtype=np.uint8)
    report = precompile_encode(vae, video.shape, tiling=TILES)
    assert report.compiled == report.stages == len(plan_encode(vae, video.shape, tiling=TILES))
    n = len(compile_log())
    latents = encode_video_to_latents(vae, video, None, mean=True, tiling=TILES)
    assert latents.shape == (1, 4, 5, 10, 12) and len(compile_log()) == n


def test_bad_shapes_are_refused(vae):
    with pytest.raises(ValueError, match="4 channels"):
        plan_decode(vae, (1, 3, 3, 6, 7))
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        plan_encode(vae, (1, 9, 40, 48, 4))
    with pytest.raises(ValueError, match="4 channels"):
        precompile_decode(vae, (1, 8, 3, 6, 7))


def test_the_pipeline_warms_the_decoder_up_while_it_samples(tmp_path):
    """``pipe(...)`` starts the VAE warm-up before sampling; its decode then compiles no stage itself."""
    from fake_hub import build_fake_hub_cache, embeddings  # tests/fake_hub.py
    from jax_vdit.io.hub import RELEASE_REPO
    from jax_vdit.pipeline import OpenSoraPipeline

    build_fake_hub_cache(tmp_path)
    pipe = OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=tmp_path,
                                            local_files_only=True, param_dtype="float32", compute_dtype="float32")
    job = pipe.prepare(prompt_embeds=embeddings(1), num_inference_steps=1, seed=0)
    planned = len(plan_decode(pipe.vae, (1, *job.latent_shape)))
    clear_compile_cache()
    out = pipe(prompt_embeds=embeddings(1), num_inference_steps=1, seed=0)
    assert out.frames.shape[0] == 1 and not pipe._decoder_warmups  # the warm-up was waited for and cleared
    assert len(compile_log()) == planned  # each stage compiled once,
    assert {e["thread"].split("_")[0] for e in compile_log()} == {"vae-compile"}  # by the warm-up's threads
