"""``OpenSoraPipeline``: resolution (local folder, Hugging Face cache, mocked Hub download), equality with the
lower-level sampling call, seeds independent of the batch, and the cases that used to go wrong silently."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_vdit import sampling
from jax_vdit.io.hub import RELEASE_REPO, PretrainedNotFoundError
from jax_vdit.pipeline import NonFiniteSampleError, OpenSoraPipeline, PipelineInputError, TextEmbeddings

from fake_hub import COMMIT, build_fake_hub_cache, embeddings  # tests/fake_hub.py

F32 = dict(param_dtype="float32", compute_dtype="float32")


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf_cache")
    build_fake_hub_cache(cache)
    return cache


@pytest.fixture(scope="module")
def pipe(hub_cache) -> OpenSoraPipeline:
    """The release repo id, read offline from the fake cache."""
    return OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache,
                                            local_files_only=True, **F32)


def test_from_pretrained_reads_the_release_layout_from_the_cache_offline(pipe):
    assert pipe.source["transformer"].endswith(f"snapshots/{COMMIT}/29x720p")
    assert pipe.source["vae"].endswith(f"snapshots/{COMMIT}/vae") and pipe.vae is not None
    assert pipe.vae.has_encoder  # vae_parts="all" by default
    assert pipe.text_encoder is None  # no google/mt5-xxl in that cache
    assert (pipe.default_size.frames, pipe.default_size.height, pipe.default_size.width) == (9, 64, 80)
    assert pipe.settings.sampler == "euler_ancestral" and pipe.settings.guidance_scale == 7.5


def test_a_decoder_only_pipeline_decodes_as_the_whole_vae(pipe, hub_cache):
    """``vae_parts="decoder"`` (what `vdit sample` loads): no encoder, the decoder's weights of the whole VAE."""
    from jax_vdit.vae import VAEEncoderMissingError

    dec = OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache,
                                           local_files_only=True, text_encoder=None, vae_parts="decoder", **F32)
    assert not dec.vae.has_encoder and dec.vae.encoder is None
    np.testing.assert_array_equal(np.asarray(dec.vae.decoder.conv_in.kernel[...]),
                                  np.asarray(pipe.vae.decoder.conv_in.kernel[...]))
    with pytest.raises(VAEEncoderMissingError):
        dec.vae.encode_moments(jnp.zeros((1, 1, 8, 8, 3)))


def test_from_pretrained_downloads_only_the_variant_and_vae_when_online(hub_cache, monkeypatch):
    calls = []

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(hub_cache / "models--LanguageBind--Open-Sora-Plan-v1.2.0" / "snapshots" / COMMIT)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    p = OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", local_files_only=False, **F32)
    (release, encoder) = calls  # the text encoder is only looked up in the cache: never a download unasked
    assert release[0] == RELEASE_REPO and not release[1].get("local_files_only")
    assert release[1]["allow_patterns"] == ["29x720p/*", "vae/*"]
    assert encoder[0] == "google/mt5-xxl" and encoder[1]["local_files_only"] is True
    assert p.transformer.cfg.num_layers == 2 and p.vae is not None


def test_from_pretrained_falls_back_to_the_cache_when_the_hub_is_unreachable(hub_cache, monkeypatch):
    real = huggingface_hub.snapshot_download
    online = []

    def flaky(repo_id, **kwargs):
        if not kwargs.get("local_files_only"):
            online.append(repo_id)
            raise OSError("Network is unreachable")
        return real(repo_id, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", flaky)
    with pytest.warns(UserWarning, match="could not download LanguageBind/Open-Sora-Plan-v1.2.0"):
        p = OpenSoraPipeline.from_pretrained(RELEASE_REPO, cache_dir=hub_cache, local_files_only=False, vae=None,
                                             **F32)
    assert online == [RELEASE_REPO] and p.vae is None


def test_missing_files_and_repos_are_named(tmp_path):
    build_fake_hub_cache(tmp_path, with_vae=False)
    with pytest.raises(PretrainedNotFoundError, match=r"LanguageBind/Open-Sora-Plan-v1.2.0 .* is missing "
                                                      r"vae/config.json, vae/<weights"):
        OpenSoraPipeline.from_pretrained(RELEASE_REPO, cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(PretrainedNotFoundError, match=r"missing 93x480p/config.json"):
        OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="93x480p", vae=None, cache_dir=tmp_path,
                                         local_files_only=True)
    with pytest.raises(PretrainedNotFoundError, match="repo someone/else is not in the local cache"):
        OpenSoraPipeline.from_pretrained("someone/else", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(PretrainedNotFoundError, match="not a local folder and not a Hugging Face repo id"):
        OpenSoraPipeline.from_pretrained("./no/such/folder")


def test_a_cache_folder_and_a_transformer_folder_load_too(hub_cache):
    repo = hub_cache / "models--LanguageBind--Open-Sora-Plan-v1.2.0"
    p = OpenSoraPipeline.from_pretrained(repo, text_encoder=None, **F32)  # follows refs/main to the snapshot
    assert p.source["transformer"] == str(repo / "snapshots" / COMMIT / "29x720p")
    q = OpenSoraPipeline.from_pretrained(repo / "snapshots" / COMMIT / "29x720p", text_encoder=None, **F32)
    assert q.source["vae"] == str(repo / "snapshots" / COMMIT / "vae")  # the vae/ beside the variant


def test_output_equals_the_sampling_call_and_seeds_do_not_depend_on_the_batch(pipe):
    emb = embeddings(3)
    kw = dict(num_inference_steps=3, guidance_scale=4.0, output_type="latent", latent_dtype=jnp.float32)
    out = pipe(prompt_embeds=emb, seed=5, **kw)
    assert out.latents.shape == (3, 4, 3, 8, 10) and [r["seed"] for r in out.records] == [5, 6, 7]
    ref = sampling.sample(pipe.transformer, jnp.asarray(emb["text"][1:2]), jnp.asarray(emb["text_mask"][1:2]),
                          key=jax.random.key(6), latent_shape=(4, 3, 8, 10), plan=sampling.euler_ancestral(3),
                          negative_text=jnp.asarray(emb["negative_text"]),
                          negative_mask=jnp.asarray(emb["negative_mask"]), guidance_scale=4.0,
                          latent_dtype=jnp.float32)
    np.testing.assert_array_equal(out.latents[1], np.asarray(ref)[0])  # bit for bit
    alone = {k: v[1:2] if k.startswith("text") else v for k, v in emb.items()}
    single = pipe(prompt_embeds=alone, seed=6, **kw)
    np.testing.assert_array_equal(single.latents[0], out.latents[1])  # same prompt + seed, alone or batched
    reordered = {k: v[::-1] if k.startswith("text") else v for k, v in emb.items()}
    back = pipe(prompt_embeds=reordered, seed=[7, 6, 5], **kw)
    np.testing.assert_array_equal(back.latents[::-1], out.latents)
    assert not np.array_equal(out.latents[0], out.latents[1])
    two = pipe(prompt_embeds=alone, seed=6, num_videos_per_prompt=2, **kw)  # videos per prompt: consecutive seeds
    np.testing.assert_array_equal(two.latents[0], out.latents[1])
    assert [r["seed"] for r in two.records] == [6, 7] and not np.array_equal(two.latents[0], two.latents[1])


def test_decoded_video_and_sidecar(pipe, tmp_path):
    out = pipe(prompt_embeds=embeddings(1), num_inference_steps=2, seed=1, output_path=tmp_path / "v.mp4", fps=12)
    assert out.frames.shape == (1, 9, 64, 80, 3) and out.frames.dtype == np.uint8
    np.testing.assert_array_equal(out.frames, pipe.decode(out.latents))  # the frames kept while writing
    (path,) = out.paths
    import imageio.v3 as iio

    assert iio.imread(path).shape == (9, 64, 80, 3)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["seed"] == 1 and meta["sampler"] == "euler_ancestral" and meta["steps"] == 2
    assert meta["guidance_scale"] == 7.5 and meta["cfg"] and meta["fps"] == 12 and meta["file"] == path.name
    assert meta["mp4_preset"] == "veryfast" and b"subme=2" in path.read_bytes()  # libx264's preset, as written
    assert meta["masks"] == ["dense", "dense"] and meta["model"]["model"] == RELEASE_REPO
    assert {"jax", "jax-vdit", "flax"} <= set(meta["versions"])
    two = pipe(prompt_embeds=embeddings(1), num_inference_steps=2, seed=1, num_videos_per_prompt=2,
               output_path=tmp_path / "two.mp4", fps=12)
    assert [p.name for p in two.paths] == ["two_0.mp4", "two_1.mp4"] and two.frames.shape == (2, 9, 64, 80, 3)
    np.testing.assert_array_equal(two.frames, pipe.decode(two.latents))
    np.testing.assert_array_equal(two.frames[0], out.frames[0])  # seed 1 first, as alone
    assert [json.loads(p.with_name(p.name + ".json").read_text())["seed"] for p in two.paths] == [1, 2]
    with pytest.raises(PipelineInputError, match="unknown mp4_preset 'quick'"):  # refused before any sampling
        pipe(prompt_embeds=embeddings(1), num_inference_steps=2, output_path=tmp_path / "q.mp4", mp4_preset="quick")
    assert not (tmp_path / "q.mp4").exists()


def test_cfg_without_negative_embeddings_and_no_text_encoder_is_refused(pipe):
    with pytest.raises(PipelineInputError, match="guidance_scale=4 needs negative embeddings"):
        pipe.prepare(prompt_embeds=embeddings(1, negative=False), guidance_scale=4.0)
    job = pipe.prepare(prompt_embeds=embeddings(1, negative=False), guidance_scale=1.0)  # no CFG: fine
    assert not job.settings.uses_cfg and job.text.negative_text is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number, got nan"),
    (dict(guidance_scale=float("inf")), "guidance_scale must be a finite number, got inf"),
    (dict(num_inference_steps=0), r"num_inference_steps must be in \[1, 1000\], got 0"),
    (dict(seed=-1), r"seeds must be in \[0, 2\*\*32\), got \[-1\]"),
    (dict(seed=[1]), "1 seeds for 2 videos"),
    (dict(sampler="ddim", edges=[0, 500]), "edges apply to the consistency sampler only"),
    (dict(prompt="a cat"), "no text encoder"),
    (dict(num_frames=30), "frames=30 is not 4k\\+1"),
])
def test_bad_inputs_are_refused_before_sampling(pipe, kwargs, match):
    kwargs = {"prompt_embeds": None if "prompt" in kwargs else embeddings(2)} | kwargs
    with pytest.raises(ValueError, match=match):
        pipe.prepare(**kwargs)


def test_nan_embeddings_are_refused(pipe):
    emb = embeddings(2)
    emb["text"][1, 3, 0] = np.nan
    with pytest.raises(PipelineInputError, match=r"text embeddings hold NaN or infinite values \(rows \[1\]\)"):
        pipe.prepare(prompt_embeds=emb)
    emb = embeddings(1)
    emb["negative_text"][0, 0, 0] = np.inf
    with pytest.raises(PipelineInputError, match="negative_text embeddings hold NaN"):
        pipe.prepare(prompt_embeds=emb)


class NaNBelow(nnx.Module):
    """A transformer that returns NaN for timesteps below ``threshold`` (a fault that appears mid-sampling)."""

    def __init__(self, inner, threshold: float):
        self.inner, self.cfg, self.threshold = inner, inner.cfg, threshold

    def __call__(self, x, t, text, mask, attention=None):
        eps = self.inner(x, t, text, mask, attention=attention)
        return jnp.where((t < self.threshold)[:, None, None, None, None], jnp.nan, eps)


def test_a_non_finite_result_is_an_error_naming_its_first_step(pipe):
    """The error names the first step whose latents are non-finite: the step a step-by-step scan finds, and the
    first step whose model timestep is below the fault's threshold."""
    faulty = dataclasses.replace(pipe, transformer=NaNBelow(pipe.transformer, 600.0))
    job = faulty.prepare(prompt_embeds=embeddings(1), num_inference_steps=5, guidance_scale=3.0, seed=2)
    expected = 1 + next(i for i, t in enumerate(job.plan.t_model[:5]) if t < 600.0)
    scan = next(k for k in range(1, 6) if not np.isfinite(np.asarray(faulty._sample_one(
        job, job.videos[0], plan=job.plan.truncated(k)))).all())
    assert scan == expected and 1 < expected < 5
    with pytest.raises(NonFiniteSampleError, match=rf"seed 2\): the latents became NaN or infinite at step "
                                                   rf"{expected} of 5 \(model timestep"):
        faulty.run(job)


def test_a_student_folder_samples_as_its_student_json_says():
    from jax_vdit.toy import TOY_STUDENT_SPARSE_DIR, load_toy_student

    student_pipe = OpenSoraPipeline.from_pretrained(TOY_STUDENT_SPARSE_DIR, **F32)
    student = load_toy_student(TOY_STUDENT_SPARSE_DIR)
    assert student_pipe.text_encoder.is_toy and student_pipe.vae is None
    job = student_pipe.prepare("a red circle moves left", seed=3)
    assert job.settings.sampler == "consistency" and not job.settings.uses_cfg and job.text.negative_text is None
    np.testing.assert_array_equal(job.plan.t_model, student.plan.t_model)
    np.testing.assert_array_equal(job.plan.t_to, student.plan.t_to)
    assert [m.label() for m in job.attention.masks] == [m.label() for m in student.attention.masks]
    with pytest.raises(PipelineInputError, match=r"guidance_scale=4.0 \(student.json: None\) contradicts how this "
                                                 r"distilled student samples .*force"):
        student_pipe.prepare("a red circle moves left", guidance_scale=4.0)
    with pytest.raises(PipelineInputError, match=r"sampler='ddim' .*num_inference_steps=8 .*contradict "):
        student_pipe.prepare("a red circle moves left", sampler="ddim", num_inference_steps=8)
    forced = student_pipe.prepare("a red circle moves left", num_inference_steps=2, force=True)
    assert forced.plan.num_steps == 2 and forced.notes == ("forced num_inference_steps=2 (student.json: 4)",)
    assert student_pipe.records(forced)[0]["notes"] == list(forced.notes)


def test_a_searched_schedule_samples_the_same_in_one_switched_scan():
    """The sparse toy student's schedule changes mask from layer to layer; ``mixed_masks="switch"`` runs it as one
    scan with a switch over its masks and gives the latents of the runs-of-equal-masks forward."""
    from jax_vdit.toy import TOY_STUDENT_SPARSE_DIR

    runs = OpenSoraPipeline.from_pretrained(TOY_STUDENT_SPARSE_DIR, **F32)
    switch = OpenSoraPipeline.from_pretrained(TOY_STUDENT_SPARSE_DIR, mixed_masks="switch", **F32)
    job = switch.prepare("a red circle moves left", seed=3)
    assert job.attention.mixed_masks == "switch" and len(set(job.attention.masks)) > 1
    assert len(job.attention.layer_runs(len(job.attention.masks))) > len(set(job.attention.masks))
    a = runs("a red circle moves left", seed=3, output_type="latent").latents
    b = switch("a red circle moves left", seed=3, output_type="latent").latents
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(np.abs(a).max()))


def test_text_embeddings_from_a_file_keep_their_negative(tmp_path):
    from safetensors.numpy import save_file

    emb = embeddings(2)
    save_file({"text": emb["text"][:, None], "text_mask": emb["text_mask"][:, None],
               "negative_text": emb["negative_text"], "negative_mask": emb["negative_mask"]}, str(tmp_path / "e.st"))
    loaded = TextEmbeddings.from_any(tmp_path / "e.st")
    np.testing.assert_array_equal(loaded.text, emb["text"])
    assert loaded.negative_text.shape == (1, 7, 64) and loaded.batch == 2


def test_vae_tiles_reach_the_decoder_and_bad_values_are_refused(pipe):
    """``vae_tiles="uniform"`` (the default) decodes (and warms up) with zero-padded uniform tiles, "exact" with
    each tile's own shape; anything else is refused."""
    assert pipe.vae_tiles == "uniform" and pipe.decode_tiling.uniform_tiles
    exact = dataclasses.replace(pipe, vae_tiles="exact")
    assert not exact.decode_tiling.uniform_tiles
    assert exact.decode_tiling.tile_latent_min_size == pipe.decode_tiling.tile_latent_min_size == 64
    with pytest.raises(PipelineInputError, match="vae_tiles"):
        dataclasses.replace(pipe, vae_tiles="padded")


def test_the_unrolled_layer_loop_samples_the_same_latents_and_bad_values_are_refused(pipe):
    """``layer_loop="unrolled"`` reaches the attention config of every job (each block its own program) and samples
    what the scanned default samples (fp32); any other value is refused."""
    unrolled = dataclasses.replace(pipe, layer_loop="unrolled")
    kw = dict(prompt_embeds=embeddings(1), seed=2, num_inference_steps=2, guidance_scale=4.0, latent_dtype=jnp.float32)
    assert pipe.prepare(**kw).attention.scan_layers and not unrolled.prepare(**kw).attention.scan_layers
    a = pipe(output_type="latent", **kw).latents
    b = unrolled(output_type="latent", **kw).latents
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(np.abs(a).max()))
    with pytest.raises(PipelineInputError, match="layer_loop"):
        dataclasses.replace(pipe, layer_loop="unroll")


def test_the_vae_loads_beside_the_transformer_and_starts_its_warmup(hub_cache, monkeypatch):
    """``from_pretrained(decode_size=...)`` (what ``vdit sample`` passes): the VAE loads in a background thread while
    the transformer loads (each load waits here until the other has started: one after the other would time out),
    then its stages for that size start compiling there, and the job's warm-up is that one."""
    import threading

    import jax_vdit.io as jio
    from jax_vdit.vae import warmup

    events: list[tuple] = []
    started = {"vae": threading.Event(), "transformer": threading.Event()}
    real_load, real_load_vae, real_warmup = jio.load_model, jio.load_vae, warmup.precompile_decode_in_background

    def load_model(*args, **kwargs):
        started["transformer"].set()
        assert started["vae"].wait(60), "the VAE did not start loading while the transformer loaded"
        return real_load(*args, **kwargs)

    def load_vae(*args, **kwargs):
        started["vae"].set()
        events.append(("vae load", threading.current_thread() is threading.main_thread()))
        assert started["transformer"].wait(60), "the transformer did not start loading while the VAE loaded"
        return real_load_vae(*args, **kwargs)

    def precompile(vae, shape, **kwargs):
        events.append(("vae warm-up", tuple(shape), kwargs["tiling"].uniform_tiles))
        return real_warmup(vae, shape, **kwargs)

    monkeypatch.setattr(jio, "load_model", load_model)
    monkeypatch.setattr(jio, "load_vae", load_vae)
    monkeypatch.setattr(warmup, "precompile_decode_in_background", precompile)
    pipe = OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache, local_files_only=True,
                                            decode_size=(None, None, None), vae_tiles="uniform", **F32)
    # loaded off the main thread; the warm-up at the checkpoint's default size
    assert events == [("vae load", False), ("vae warm-up", (1, 4, 3, 8, 10), True)]
    assert pipe.vae is not None and set(pipe.load_seconds) == {"vae", "vae_wait", "transformer", "text_encoder"}
    job = pipe.prepare(prompt_embeds=embeddings(1), num_inference_steps=2)
    future = pipe.warm_up_decoder(job)
    assert future is not None and len(events) == 2  # the early warm-up, not a second one
    assert future.result(timeout=600).stages > 0
    with pytest.raises(PipelineInputError, match="vae_tiles"):  # refused before anything loads
        OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache, local_files_only=True,
                                         vae_tiles="padded", **F32)
    assert len(events) == 2
    with pytest.raises(PipelineInputError, match="vae_parts"):
        OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache, local_files_only=True,
                                         vae_parts="encoder", **F32)
    assert len(events) == 2


def test_a_failed_vae_load_is_raised_by_from_pretrained(hub_cache, monkeypatch):
    """The background VAE load's error reaches the caller, as it was raised."""
    import jax_vdit.io as jio

    def broken(*args, **kwargs):
        raise OSError("vae weights unreadable")

    monkeypatch.setattr(jio, "load_vae", broken)
    with pytest.raises(OSError, match="vae weights unreadable"):
        OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache, local_files_only=True,
                                         decode_size=(None, None, None), **F32)


def test_a_failed_transformer_load_stops_the_early_vae_warmup(hub_cache, monkeypatch):
    """The error is raised at once, and the background warm-up stops instead of compiling every stage first (which
    would keep the process from exiting). The transformer's load fails here once the warm-up has started."""
    import time as _time

    import jax_vdit.io as jio
    from jax_vdit.vae import warmup

    futures = []
    real_warmup = warmup.precompile_decode_in_background

    def precompile(vae, shape, **kwargs):
        futures.append(real_warmup(vae, shape, **kwargs))
        return futures[-1]

    def broken(*args, **kwargs):
        deadline = _time.monotonic() + 60
        while not futures and _time.monotonic() < deadline:
            _time.sleep(0.01)
        raise OSError("weights unreadable")

    monkeypatch.setattr(warmup, "precompile_decode_in_background", precompile)
    monkeypatch.setattr(jio, "load_model", broken)
    with pytest.raises(OSError, match="weights unreadable"):
        OpenSoraPipeline.from_pretrained(RELEASE_REPO, variant="29x720p", cache_dir=hub_cache, local_files_only=True,
                                         decode_size=(None, None, None), **F32)
    (future,) = futures
    report = future.result(timeout=600)
    assert report.stages > 0 and report.compiled < report.stages
