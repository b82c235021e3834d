"""The command-line entry points: sample from a release folder, size validation, clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jax_vdit.cli import main
from jax_vdit.config import VideoSize, VideoSizeError
from jax_vdit.model.attention import attention_from_spec
from jax_vdit.sampling import plan_from_name


def _embeddings(path, channels=64, batch=1):
    rng = np.random.default_rng(0)
    save_file({"text": rng.standard_normal((batch, 1, 7, channels)).astype(np.float32),
               "text_mask": np.ones((batch, 1, 7), np.int32),
               "negative_text": rng.standard_normal((1, 7, channels)).astype(np.float32),
               "negative_mask": np.ones((1, 7), np.int32)}, str(path))
    return path


def test_sample_command_writes_latents_and_decodes_to_mp4_with_a_vae(golden_dir, tmp_path, capsys):
    """One CLI run (3 CFG steps, then the CausalVAE decode): latents file, report, the mp4 beside it and the
    sidecars. One run instead of two keeps the suite short: each costs ~1 minute of CPU compilation. The size
    comes from the checkpoint (9x64x80 for tiny_a), not a fixed 29x720x1280."""
    import jax

    from jax_vdit.vae import clear_compile_cache

    # programs compiled by earlier tests in this process (same tiny model and VAE) would hide this run's compiles
    jax.clear_caches()
    clear_compile_cache()
    emb = _embeddings(tmp_path / "emb.safetensors")
    out = tmp_path / "out" / "lat.safetensors"
    code = main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb),
                 "--no-compile-cache", "--steps", "3", "--guidance", "4", "--seed", "7", "--fps", "8",
                 "--out", str(out), "--param-dtype", "float32", "--compute-dtype", "float32", "--quiet",
                 "--vae", str(golden_dir / "causalvae_v12" / "tiny_a")])
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["latent_shape"] == [1, 4, 3, 8, 10]
    assert 0 < report["vae_decode_s"] and 0 < report["write_s"]  # the VAE, then the mp4
    assert report["vae_decode_s"] + report["write_s"] <= report["decode_s"] + 0.02  # both within decode_s
    assert report["compile_s"] > 0 and report["sampling_s"] > 0 and report["compile_cache"] is None
    # compile time from JAX's own events: the warm-up built the sampler, the timed run reused it
    assert report["compile"]["programs"] >= 1 and report["compile"]["backend_compile_s"] > 0
    assert report["run_compile"]["programs"] == 0, report["run_compile"]
    assert report["vae_stages"] >= 1 and report["vae_compile_s"] > 0  # compiled in the background while sampling
    assert report["vae_tiles"] == "uniform" and report["vae_stages_loaded"] == 0  # the store is off in tests
    assert report["vae_has_encoder"] is False  # text-to-video loads the decoder only
    assert report["vae_planned"] is True  # no store, no recorded plan
    assert "euler_ancestral, 3 steps, CFG 4" in captured.err  # what ran is printed
    # the time before main (this test process's whole life so far) and main's own, which holds every phase
    assert report["before_main_s"] > 0
    assert report["main_s"] >= report["load_s"] + report["warmup_s"] + report["sampling_s"] + report["decode_s"]
    # each loading thread's CPU seconds beside its wall seconds (a thread cannot use more CPU than time passed)
    assert set(report["load_cpu"]) == {"transformer", "vae"}
    for part in ("transformer", "vae"):
        assert 0 < report["load_cpu"][part] <= report["load"][part] + 0.05, (part, report["load_cpu"], report["load"])
    assert 0 < report["warmup_cpu_s"] <= report["warmup_s"] + 0.05
    # where the transformer's load went: its parts, each timed inside that load
    parts = report["load_parts"]["transformer"]
    assert {"open", "read_wait", "layout", "checks", "build_model", "ready"} <= set(parts), parts
    assert all(v >= 0 for v in parts.values()) and parts["layout"] > 0
    assert sum(parts.values()) <= report["load"]["transformer"] + 0.05, (parts, report["load"])
    latents = load_file(str(out))["latents"]
    assert latents.shape == (1, 4, 3, 8, 10) and np.isfinite(latents).all()
    import imageio.v3 as iio

    frames = iio.imread(out.with_suffix(".mp4"))
    assert frames.shape[0] == 9 and frames.shape[1:3] == (64, 80)
    meta = json.loads(out.with_name("lat.mp4.json").read_text())
    assert meta["seed"] == 7 and meta["steps"] == 3 and meta["guidance_scale"] == 4.0 and meta["fps"] == 8
    # the mp4's libx264 speed preset: the default, in the report, the sidecar and the file's own x264 settings
    assert report["mp4_preset"] == meta["mp4_preset"] == "veryfast"
    assert b"subme=2" in out.with_suffix(".mp4").read_bytes()
    assert meta["negative_prompt"] == "<from the embeddings>" and meta["masks"] == ["dense", "dense"]
    assert "jax" in meta["versions"]
    latent_meta = json.loads(out.with_name("lat.safetensors.json").read_text())
    assert latent_meta["videos"][0]["seed"] == 7 and "--seed" in latent_meta["command"]


def _no_model_work(monkeypatch):
    from jax_vdit.pipeline import OpenSoraPipeline

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(OpenSoraPipeline, "from_pretrained", refuse)


@pytest.mark.parametrize("extra, match", [
    (["--guidance", "nan"], "--guidance must be a finite number, got nan"),
    (["--guidance", "inf"], "--guidance must be a finite number, got inf"),
    (["--vae", "/no/such/vae"], "--vae not found: /no/such/vae"),
    (["--num-videos-per-prompt", "0"], "--num-videos-per-prompt must be >= 1"),
    (["--prompt", "a cat"], "not both"),
    (["--sp-size", "2", "--mesh", "1x2"], "--sp-size or --mesh, not both"),
    (["--text-encoder", "/no/mt5"], "--text-encoder not found"),
    (["--edges", "0,a"], "--edges must be comma-separated integers"),
])
def test_sample_command_checks_inputs_before_loading_anything(golden_dir, tmp_path, capsys, monkeypatch, extra,
                                                               match):
    _no_model_work(monkeypatch)
    emb = _embeddings(tmp_path / "emb.safetensors")
    code = main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb), *extra])
    assert code == 2
    assert match in capsys.readouterr().err


def test_sample_command_refuses_nan_embeddings_before_loading(golden_dir, tmp_path, capsys, monkeypatch):
    _no_model_work(monkeypatch)
    emb = tmp_path / "nan.safetensors"
    save_file({"text": np.full((1, 7, 64), np.nan, np.float32), "text_mask": np.ones((1, 7), np.int32)}, str(emb))
    assert main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb)]) == 2
    assert "text holds NaN or infinite values" in capsys.readouterr().err


def test_sample_command_refuses_guidance_without_negatives_or_text_encoder(golden_dir, tmp_path, capsys):
    emb = tmp_path / "pos.safetensors"
    save_file({"text": np.ones((1, 7, 64), np.float32), "text_mask": np.ones((1, 7), np.int32)}, str(emb))
    code = main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb), "--guidance",
                 "4", "--no-compile-cache", "--param-dtype", "float32", "--compute-dtype", "float32"])
    assert code == 2
    assert "guidance_scale=4 needs negative embeddings" in capsys.readouterr().err


def test_the_prefetched_weights_go_to_the_device_in_warm_commands_unless_told():
    from jax_vdit.cli.startup import PREFETCH_TO_DEVICE_ENV, prefetch_to_device_wanted

    assert prefetch_to_device_wanted(cold=False, environ={}) and not prefetch_to_device_wanted(cold=True, environ={})
    assert prefetch_to_device_wanted(cold=True, environ={PREFETCH_TO_DEVICE_ENV: "1"})
    assert not prefetch_to_device_wanted(cold=False, environ={PREFETCH_TO_DEVICE_ENV: "0"})
    with pytest.raises(ValueError, match="JAX_VDIT_PREFETCH_TO_DEVICE must be auto, 0 or 1"):
        prefetch_to_device_wanted(cold=False, environ={PREFETCH_TO_DEVICE_ENV: "yes"})


def test_sample_with_embeddings_looks_for_no_text_encoder_unless_one_is_named(golden_dir, tmp_path, monkeypatch):
    """With --embeddings no text is encoded: "auto" then asks the pipeline for no text encoder (no search of the
    Hub's cache on the way to the first video); a named one is still loaded, and prompts still get "auto"."""
    from jax_vdit.pipeline import OpenSoraPipeline

    asked = []

    def stop_at_load(cls, *args, **kwargs):
        asked.append(kwargs["text_encoder"])
        raise ValueError("stopped at the load")

    monkeypatch.setattr(OpenSoraPipeline, "from_pretrained", classmethod(stop_at_load))
    emb = tmp_path / "pos.safetensors"
    save_file({"text": np.ones((1, 7, 64), np.float32), "text_mask": np.ones((1, 7), np.int32)}, str(emb))
    base = ["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--no-compile-cache", "--latents-only"]
    for extra in (["--embeddings", str(emb)], ["--embeddings", str(emb), "--text-encoder", "toy"],
                  ["--prompt", "a red circle"]):
        assert main(base + extra) == 2
    assert asked == [None, "toy", "auto"]


def test_sample_command_on_a_student_uses_student_json(tmp_path, capsys, monkeypatch):
    """`vdit sample STUDENT_DIR`: its sampler, edges, no CFG and its masks; contradicting flags need --force; a
    prompt file, several videos per prompt and their seeds are recorded. (The sampler itself is replaced by a
    recorder: the wiring is under test here, the sampling in test_pipeline.py.)"""
    from jax_vdit.pipeline import OpenSoraPipeline
    from jax_vdit.toy import TOY_STUDENT_SPARSE_DIR, load_toy_student

    ran = []
    monkeypatch.setattr(OpenSoraPipeline, "warm_up", lambda self, job, **k: None)

    def record_run(self, job, **k):
        ran.append(job)
        return np.zeros((len(job.videos), *job.latent_shape), np.float32)

    monkeypatch.setattr(OpenSoraPipeline, "run", record_run)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red circle moves left\n\na blue square moves up\n")
    base = ["sample", str(TOY_STUDENT_SPARSE_DIR), "--prompt-file", str(prompts), "--no-compile-cache", "--quiet",
            "--param-dtype", "float32", "--compute-dtype", "float32"]
    assert main(base + ["--guidance", "4"]) == 2
    assert "guidance_scale=4.0 (student.json: None) contradicts" in capsys.readouterr().err and not ran
    out = tmp_path / "s.safetensors"
    assert main(base + ["--num-videos-per-prompt", "2", "--seed", "10", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "consistency, 4 steps, edges 0,250,500,750, no CFG" in err and "student.json" in err
    (job,) = ran
    assert job.attention.scan_layers  # the default layer loop
    student = load_toy_student(TOY_STUDENT_SPARSE_DIR)
    np.testing.assert_array_equal(job.plan.t_model, student.plan.t_model)
    assert [m.label() for m in job.attention.masks] == [m.label() for m in student.attention.masks]
    records = json.loads(out.with_name("s.safetensors.json").read_text())["videos"]
    assert [(r["prompt"], r["seed"]) for r in records] == [
        ("a red circle moves left", 10), ("a red circle moves left", 11),
        ("a blue square moves up", 12), ("a blue square moves up", 13)]
    assert records[0]["sampler"] == "consistency" and records[0]["edges"] == [0, 250, 500, 750]
    assert records[0]["guidance_scale"] is None and records[0]["student"]["guidance_distilled"] == 4.0
    assert records[0]["masks"] == [m.label() for m in student.attention.masks]
    assert main(base + ["--steps", "2", "--force", "--out", str(out)]) == 0
    forced = json.loads(out.with_name("s.safetensors.json").read_text())["videos"][0]
    assert forced["steps"] == 2 and forced["notes"] == ["forced num_inference_steps=2 (student.json: 4)"]
    capsys.readouterr()
    assert main(base + ["--layer-loop", "unrolled", "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not ran[-1].attention.scan_layers and report["layer_loop"] == "unrolled"
    assert [m.label() for m in ran[-1].attention.masks] == [m.label() for m in student.attention.masks]


def test_help_lists_every_flag_with_help_and_defaults(capsys):
    from jax_vdit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("sample", "convert"):
        for action in sub.choices[name]._actions:
            assert action.help and action.help.strip(), f"vdit {name} {action.option_strings or action.dest}"
    for argv in (["sample", "--help"], ["convert", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # help lines wrap at the terminal width
    assert "--sp-size" in text and "(default: 24)" in text and "(default: outputs/sample.safetensors)" in text
    assert "usage: vdit convert" in text and "--dtype" in text and "(default: float32)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("frames, height, width, match", [
    (30, 720, 1280, "frames=30 is not 4k\\+1"),
    (29, 720, 1000, "width=1000 is not a positive multiple of 16"),
    (0, 8, 16, "frames=0"),
])
def test_video_size_validation(frames, height, width, match):
    with pytest.raises(VideoSizeError, match=match):
        VideoSize(frames, height, width)


def test_video_size_latents():
    assert VideoSize(93, 720, 1280).latent_shape == (4, 24, 90, 160)
    assert VideoSize(29, 480, 640).latent_shape == (4, 8, 60, 80)
    assert VideoSize(1, 480, 640).latent_shape == (4, 1, 60, 80)


def test_sample_command_rejects_bad_frames_before_loading(tmp_path, capsys):
    code = main(["sample", str(tmp_path / "missing"), "--embeddings", "x", "--frames", "30"])
    assert code == 2
    assert "frames=30 is not 4k+1" in capsys.readouterr().err


def test_sample_command_needs_text(golden_dir, capsys):
    code = main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--frames", "9", "--height", "64",
                 "--width", "80", "--prompt", "a cat", "--no-compile-cache"])
    assert code == 2
    assert "this pipeline has no text encoder" in capsys.readouterr().err


def test_attention_specs(tmp_path):
    import pallas_kernels

    dense = attention_from_spec("dense", 4, 8)
    assert dense.masks is None
    uniform = attention_from_spec("1:7", 4, 8)
    assert len(uniform.masks) == 4 and uniform.masks[0].kept_tiles == 2 * 8 - 1 + 8 - 1
    schedule = pallas_kernels.MaskSchedule.from_specs(["1:7", None, "full", "2:6"], 8)
    schedule.save(tmp_path / "s.json")
    loaded = attention_from_spec(str(tmp_path / "s.json"), 4, 8)
    assert loaded.masks[1] is None and loaded.masks[3].kept_tiles == 2 * 2 * 8 - 4 + 8 - 2
    with pytest.raises(ValueError, match="has 4 layers, the model has 3"):
        attention_from_spec(str(tmp_path / "s.json"), 3, 8)
    with pytest.raises(ValueError, match="for 8 latent frames, video has 24"):
        attention_from_spec(str(tmp_path / "s.json"), 4, 24)


def test_sampler_names():
    assert plan_from_name("ddim", 4).num_steps == 4
    plan = plan_from_name("consistency", 4)
    assert list(plan.t_model[:4]) == [999, 750, 500, 250]
    assert list(plan_from_name("consistency", 2, "0,500").t_model[:2]) == [999, 500]
    with pytest.raises(ValueError, match="unknown sampler"):
        plan_from_name("heun", 4)


def test_train_teacher_command_keeps_the_best_checked_teacher(tmp_path, capsys):
    """`vdit train-teacher --check-every`: ToyBench rows in evals.jsonl, the best EMA exported atomically."""
    from jax_vdit.toy import BEST_EMA, load_toy_teacher
    from jax_vdit.training import read_evals

    run = tmp_path / "run"
    code = main(["train-teacher", "--run", str(run), "--world", "toy-tiny-5x16x16", "--model", "toy-tiny",
                 "--steps", "4", "--batch", "2", "--samples", "8", "--compute-dtype", "float32",
                 "--check-every", "2", "--check-steps", "1", "--check-prompts", "2", "--check-seeds", "2",
                 "--export", str(tmp_path / "t")])
    assert code == 0 and "best EMA teacher" in capsys.readouterr().out
    evals = read_evals(run)
    assert [r["step"] for r in evals] == [2, 4] and evals[0]["is_best"] == 1.0
    for r in evals:  # two noise seeds per check, the check's alignment their mean
        assert r["alignment"] == pytest.approx((r["alignment_seed1234"] + r["alignment_seed1235"]) / 2)
    best = max(evals, key=lambda r: r["alignment"])  # the first of equals
    saved = json.loads((run / BEST_EMA / "check.json").read_text())
    assert saved["alignment"] == best["alignment"]
    assert saved["step"] == max(r["step"] for r in evals if r["is_best"] == 1.0)
    assert sorted(p.name for p in run.glob(f"{BEST_EMA}*")) == [BEST_EMA]  # no partial or old export left
    assert load_toy_teacher(run / BEST_EMA).cfg.num_layers == 2
    assert (tmp_path / "t" / "config.json").is_file()
    # going on with one seed per check would compare unlike checks: refused before any data is rendered
    code = main(["train-teacher", "--run", str(run), "--world", "toy-tiny-5x16x16", "--model", "toy-tiny",
                 "--steps", "6", "--batch", "2", "--samples", "8", "--compute-dtype", "float32",
                 "--check-every", "2", "--check-steps", "1", "--check-prompts", "2"])
    assert code == 2 and "seeds 2 -> 1" in capsys.readouterr().err
    assert [r["step"] for r in read_evals(run)] == [2, 4]


def test_train_teacher_command_mixes_a_world_and_toybench_writes_every_score(tmp_path, capsys):
    """`vdit train-teacher --mix-world ... --adapt-to-world` (the shipped teacher's stage 2) records the mix;
    `vdit toybench --json` writes per-attribute scores with the command."""
    stage1 = tmp_path / "stage1"
    assert main(["train-teacher", "--run", str(tmp_path / "r1"), "--world", "toy-sign-5x16x16-subframe",
                 "--model", "toy-tiny", "--steps", "2", "--batch", "2", "--samples", "8", "--warmup", "0",
                 "--compute-dtype", "float32", "--export", str(stage1), "--lr-schedule", "wsd",
                 "--decay-fraction", "0.5"]) == 0
    stage1_config = json.loads((tmp_path / "r1" / "train_config.json").read_text())["train_config"]
    assert (stage1_config["lr_schedule"], stage1_config["decay_fraction"]) == ("wsd", 0.5)  # warmup-stable-decay
    run = tmp_path / "r2"
    args = ["train-teacher", "--run", str(run), "--world", "toy-tiny-5x16x16-subframe", "--model", "toy-tiny",
            "--steps", "2", "--batch", "4", "--samples", "8", "--compute-dtype", "float32", "--init-from", str(stage1),
            "--mix-world", "toy-sign-5x16x16-subframe", "--mix-fraction", "0.25", "--export", str(tmp_path / "t")]
    assert main(args) == 2  # weights of another world, without --adapt-to-world
    assert "trained on the toy world 'toy-sign-5x16x16-subframe'" in capsys.readouterr().err
    cool_down = ["--lr-schedule", "cosine", "--final-lr-fraction", "0.1", "--warmup", "0"]
    assert main(args + ["--adapt-to-world", *cool_down]) == 0
    meta = json.loads((run / "train_config.json").read_text())
    recipe = meta.get("recipe") or meta["extra"]["recipe"]
    assert recipe["mix_world"] == "toy-sign-5x16x16-subframe" and recipe["mix_fraction"] == 0.25
    assert (recipe["lr_schedule"], recipe["final_lr_fraction"]) == ("cosine", 0.1)  # a cool-down stage
    assert (meta["train_config"]["lr_schedule"], meta["train_config"]["final_lr_fraction"]) == ("cosine", 0.1)
    out = tmp_path / "tb.json"
    assert main(["toybench", str(tmp_path / "t"), "--setting", "ddim:2:none", "--prompts", "2", "--seeds", "0",
                 "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["header"]["world"] == "toy-tiny-5x16x16-subframe" and "--json" in saved["header"]["command"]
    row = saved["results"]["ddim:2:none"]["mean"]
    assert {"alignment", "direction_acc", "colour_acc"} <= set(row) and 0.0 <= row["alignment"] <= 1.0


def test_toybench_samples_a_student_with_its_own_masks_and_edges(monkeypatch, tmp_path):
    """`vdit toybench <sparse student>` must not score it with dense attention or uniform edges."""
    from jax_vdit import toy

    seen = []
    real = toy.sample_specs

    def spy(model, specs, world, **kw):
        seen.append(kw)
        return real(model, specs, world, **kw)

    monkeypatch.setattr(toy, "sample_specs", spy)
    out = tmp_path / "tb.json"
    assert main(["toybench", str(toy.TOY_STUDENT_SPARSE_DIR), "--prompts", "1", "--seeds", "0", "--json",
                 str(out)]) == 0
    student = toy.load_toy_student(toy.TOY_STUDENT_SPARSE_DIR)
    (kw,) = seen
    assert kw["attention"].masks is not None and len(kw["attention"].masks) == len(student.attention.masks)
    assert [m.label() for m in kw["attention"].masks] == [m.label() for m in student.attention.masks]
    assert kw["plan"].method == student.plan.method and kw["guidance_scale"] is None
    np.testing.assert_array_equal(kw["plan"].t_model, student.plan.t_model)
    np.testing.assert_array_equal(kw["plan"].t_to, student.plan.t_to)
    assert list(json.loads(out.read_text())["results"]) == ["consistency:4:none"]


def test_prepare_data_and_distill_turn_the_compile_cache_on_like_sample(tmp_path, monkeypatch):
    """`vdit prepare-data` and `vdit distill mlcd|search-masks|kd` take --compile-cache / --no-compile-cache (a
    resumed run reads its compiled programs instead of compiling them again); the default comes from
    $JAX_VDIT_COMPILE_CACHE or ~/.cache/jax-vdit/xla."""
    import jax

    from jax_vdit.cli import build_parser
    from jax_vdit.cli import compile_cache as cc

    common = ["--data", "d", "--run", "r"]
    commands = [["prepare-data", "--videos", "v", "--captions", "c.jsonl", "--out", "o", "--vae", "x",
                 "--embeddings", "e"], ["distill", "mlcd", "--teacher", "t", *common],
                ["distill", "search-masks", "--student", "s", *common], ["distill", "kd", "--student", "s", *common]]
    previous = jax.config.jax_compilation_cache_dir
    try:
        for argv in commands:
            args = build_parser().parse_args([*argv, "--compile-cache", str(tmp_path / "xla")])
            assert cc.setup_compile_cache(args) == str(tmp_path / "xla")
            assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
            args = build_parser().parse_args([*argv, "--compile-cache", str(tmp_path / "xla"), "--no-compile-cache"])
            assert cc.setup_compile_cache(args) is None
        monkeypatch.delenv(cc.COMPILE_CACHE_ENV)  # read when the parser is built
        assert build_parser().parse_args(commands[1]).compile_cache == cc.DEFAULT_COMPILE_CACHE
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


def test_sample_command_passes_vae_tiles_to_the_pipeline(golden_dir, tmp_path, monkeypatch):
    from jax_vdit.pipeline import OpenSoraPipeline

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop after loading")

    monkeypatch.setattr(OpenSoraPipeline, "from_pretrained", capture)
    emb = _embeddings(tmp_path / "emb.safetensors")
    try:
        main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb), "--vae-tiles",
              "uniform", "--no-compile-cache"])
    except RuntimeError:
        pass
    assert seen["vae_tiles"] == "uniform"


class _Stop(Exception):
    pass


@pytest.mark.parametrize("when, decode_size", [("early", (9, 64, 80)), ("after-load", None), ("off", None)])
def test_vae_warmup_decides_whether_the_pipeline_starts_the_decode_warmup_while_loading(
        when, decode_size, golden_dir, tmp_path, monkeypatch):
    """``--vae-warmup early`` hands the video size to ``from_pretrained`` (the VAE's stages start compiling as soon
    as it is loaded); ``after-load`` and ``off`` do not (the command starts it after the load, or never)."""
    seen = _from_pretrained_arguments(golden_dir, tmp_path, monkeypatch, ["--vae-warmup", when])
    assert seen["decode_size"] == decode_size


def _from_pretrained_arguments(golden_dir, tmp_path, monkeypatch, flags: list[str]) -> dict:
    """The keyword arguments `vdit sample` (tiny_a, 9x64x80, 3 steps, embeddings) with ``flags`` hands to
    ``OpenSoraPipeline.from_pretrained`` (stopped there)."""
    from jax_vdit.pipeline import OpenSoraPipeline

    seen: dict = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(OpenSoraPipeline, "from_pretrained", capture)
    emb = _embeddings(tmp_path / "emb.safetensors")
    with pytest.raises(_Stop):
        main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb), "--steps", "3",
              "--frames", "9", "--height", "64", "--width", "80", "--no-compile-cache", *flags])
    return seen


@pytest.mark.parametrize("flags, early", [([], True), (["--sampler-compile", "early"], True),
                                          (["--sampler-compile", "after-load"], False),
                                          (["--sampler-compile", "early", "--sp-size", "1"], False),
                                          (["--sp-size", "1"], False),
                                          (["--vae-compile-processes", "2", "--sampler-compile", "after-load"],
                                           False)])
def test_sampler_compile_decides_whether_the_pipeline_compiles_it_while_loading(flags, early, golden_dir, tmp_path,
                                                                                monkeypatch):
    """With ``--sampler-compile early``, and by default (auto) where embeddings are given, ``from_pretrained`` gets
    the job's arguments (the sampler compiles from the model's shapes while the weights load); with after-load or
    a device mesh it does not. ``--vae-compile-processes`` reaches it too."""
    seen = _from_pretrained_arguments(golden_dir, tmp_path, monkeypatch, flags)
    assert seen["vae_compile_processes"] == (2 if "--vae-compile-processes" in flags else 0)
    if early:
        job = seen["early_job"]
        assert job["num_inference_steps"] == 3 and job["num_frames"] == 9 and job["prompt_embeds"] is not None
    else:
        assert seen["early_job"] is None


@pytest.mark.parametrize("argv, module, name", [
    (["train-teacher", "--run", "r", "--world", "toy-tiny-5x16x16", "--model", "toy-tiny"], "jax_vdit.toy",
     "train_teacher"),
    (["distill", "mlcd", "--teacher", "t", "--data", "d", "--run", "r", "--no-compile-cache"],
     "jax_vdit.distill.stages", "mlcd_folder"),
    (["distill", "kd", "--student", "s", "--data", "d", "--run", "r", "--no-compile-cache"],
     "jax_vdit.distill.stages", "kd_folder"),
])
def test_time_limit_counts_from_the_command_start(argv, module, name, monkeypatch, tmp_path):
    """`--time-limit` reaches the training loop as a Deadline that started when the command started, so the
    data rendering, loading and compiling before the first step count against it (a job's wall-time limit)."""
    import importlib
    import time

    from jax_vdit import cli
    from jax_vdit.cli import build_parser
    from jax_vdit.training import Deadline

    monkeypatch.chdir(tmp_path)
    seen = {}

    def capture(*args, time_limit_s=None, **kwargs):
        seen["limit"], seen["called_at"] = time_limit_s, time.perf_counter()
        raise _Stop

    def slow_parser():  # stands in for the work a command does before training (imports, parsing, rendering)
        time.sleep(0.3)
        return build_parser()

    monkeypatch.setattr(importlib.import_module(module), name, capture)
    monkeypatch.setattr(cli, "build_parser", slow_parser)
    before = time.perf_counter()
    with pytest.raises(_Stop):
        main([*argv, "--time-limit", "120"])
    limit = seen["limit"]
    assert isinstance(limit, Deadline) and limit.seconds == 120.0
    assert before <= limit.start and seen["called_at"] - limit.start >= 0.3  # started before the slow part
    with pytest.raises(_Stop):
        main(argv)
    assert seen["limit"] is None


def test_a_second_sample_command_in_a_fresh_process_compiles_nothing(golden_dir, tmp_path):
    """`vdit sample` twice with one persistent cache, each in its own process: the second reads every program
    from the cache (loading's layout programs, the warm-up's sampler and the small eager ops) and compiles none;
    its report says so. Without caching programs that compile in under a second (JAX's default threshold) the
    second run compiled its 28 layout programs again."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    emb = _embeddings(tmp_path / "emb.safetensors")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_VDIT_EXECUTABLE_STORE="1")  # on, as for a user (tests/conftest.py turns it off)
    reports = []
    for run in range(2):
        # the first through main (the interpreter's full exit), the second through the console entry `vdit`, which
        # ends the process at once after the report: its report and latents must be whole all the same
        entry = "main" if run == 0 else "console_main"
        cmd = [sys.executable, "-c", f"import sys; from jax_vdit.cli import {entry}; sys.exit({entry}(sys.argv[1:]))",
               "sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb),
               "--compile-cache", str(tmp_path / "xla"), "--steps", "2", "--guidance", "4", "--latents-only",
               "--out", str(tmp_path / f"lat{run}.safetensors"), "--param-dtype", "float32",
               "--compute-dtype", "float32", "--quiet", "--sampler-compile", "after-load"]  # counted in "compile"
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = reports
    assert second["before_main_s"] > 0 and second["main_s"] >= second["load_s"] + second["sampling_s"]
    # JAX_PLATFORMS=cpu: no GPU compile flags are added, and the VAE's stages compile in a thread ("auto")
    assert second["xla_flags_added"] == [] and second["vae_compile_processes"] == 0
    assert second["client_env_added"] == {}  # nor the GPU client's memory setting
    assert set(second["load"]) == {"vae", "vae_wait", "transformer", "text_encoder"}  # where the load seconds went
    assert 0 < second["load"]["transformer"] <= second["load_s"] and second["load"]["vae"] >= 0
    assert first["load_compile"]["cache_misses"] >= 1, first
    # no program per tensor shape (host arrays are copied, not staged): loading lays out the weights in two
    # programs (the blocks' group and the rest); sampling needs the seed, the initial noise and the sampler
    assert first["load_compile"]["programs"] <= 2, first["load_compile"]
    assert first["compile"]["programs"] <= 3, first["compile"]
    for phase in ("load_compile", "compile"):
        assert second[phase]["cache_misses"] == 0, (phase, second[phase])
        assert second[phase]["cache_hits"] == second[phase]["programs"], (phase, second[phase])
    # the second process reads the sampler from the executable store: not traced, lowered or read from JAX's cache
    # (its key once held function addresses, so no process after the first ever found it)
    assert not first["sampler_from_store"] and second["sampler_from_store"], (first, second)
    assert first["sampler_early"] is None and first["sampler_compile"] == "after-load"
    # the weights' layout programs come from the executable store: neither traced nor lowered again
    assert first["load_compile"]["programs"] >= 1 and second["load_compile"]["programs"] == 0, second["load_compile"]
    assert second["compile"]["programs"] == first["compile"]["programs"] - 1, (first["compile"], second["compile"])
    assert second["run_compile"]["programs"] == 0, second["run_compile"]
    np.testing.assert_array_equal(load_file(str(tmp_path / "lat0.safetensors"))["latents"],
                                  load_file(str(tmp_path / "lat1.safetensors"))["latents"])


def test_compile_only_fills_the_caches_and_the_next_sample_compiles_nothing(golden_dir, tmp_path):
    """`vdit sample --compile-only` loads and compiles what the command needs, writes no latents, and reports it;
    the same command without the flag, in a fresh process, then traces, lowers and compiles nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    emb = _embeddings(tmp_path / "emb.safetensors")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_VDIT_EXECUTABLE_STORE="1")
    reports = []
    for flags in (["--compile-only"], []):
        cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import console_main; sys.exit(console_main())",
               "sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb),
               "--compile-cache", str(tmp_path / "xla"), "--steps", "2", "--guidance", "4", "--latents-only",
               "--out", str(tmp_path / "lat.safetensors"), "--param-dtype", "float32", "--compute-dtype", "float32",
               "--quiet", *flags]
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if flags:
            assert not (tmp_path / "lat.safetensors").exists()  # nothing sampled or written
    compiled, sampled = reports
    assert compiled["compile_only"] and not sampled["compile_only"]
    assert "sampling_s" not in compiled and sampled["sampling_s"] > 0
    # with --embeddings the sampler compiles beside the load (--sampler-compile auto: early)
    assert compiled["sampler_compile"] == "early" and compiled["sampler_early"]["compile"]["cache_misses"] >= 1
    assert compiled["load_compile"]["cache_misses"] >= 1, compiled
    assert sampled["load_compile"]["programs"] == 0 and sampled["sampler_from_store"], sampled
    assert sampled["sampler_early"]["compile"]["cache_misses"] == 0, sampled["sampler_early"]
    for phase in ("compile", "run_compile"):
        assert sampled[phase]["cache_misses"] == 0, (phase, sampled[phase])
    assert sampled["run_compile"]["programs"] == 0
    assert load_file(str(tmp_path / "lat.safetensors"))["latents"].shape[0] == 1


def test_compile_only_compiles_the_vae_stages_even_with_the_warmup_off(golden_dir, tmp_path):
    """With a VAE, `--compile-only` compiles every decode stage into the store (also under `--vae-warmup off`,
    where a sampling command would compile them as the decode reaches them) and writes nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from jax_vdit.vae import TilingConfig

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_VDIT_EXECUTABLE_STORE="1")
    cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import console_main; sys.exit(console_main())",
           "sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--vae", str(golden_dir / "causalvae_v12" / "tiny_a"),
           "--embeddings", str(_embeddings(tmp_path / "emb.safetensors")), "--compile-cache", str(tmp_path / "xla"),
           "--steps", "2", "--guidance", "4", "--out", str(tmp_path / "out" / "lat.safetensors"), "--param-dtype",
           "float32", "--compute-dtype", "float32", "--quiet", "--compile-only", "--vae-warmup", "off"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["compile_only"] and report["vae_tiles"] == "uniform"
    assert report["vae_stages"] > 0 and report["vae_stages_loaded"] == 0, report
    assert not (tmp_path / "out").exists()
    # every stage (and the decode's plan) is in the store now: a later decode of this shape compiles nothing
    import jax
    import jax.numpy as jnp

    from jax_vdit.io import load_vae
    from jax_vdit.vae.warmup import decode_is_stored

    vaes = [load_vae(golden_dir / "causalvae_v12" / "tiny_a", dtype=jnp.float32, parts=p) for p in ("all", "decoder")]
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla"))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("JAX_VDIT_EXECUTABLE_STORE", "1")
            # tiny_a's sample size, 9x64x80: latents (1, 4, 3, 8, 10); the command loaded the decoder only, the
            # compile processes build the whole VAE: both find the plan
            for vae in vaes:
                assert decode_is_stored(vae, (1, 4, 3, 8, 10), tiling=TilingConfig.sample_script(uniform_tiles=True))
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


@pytest.mark.parametrize("value", ["fast", "0", "2"])
def test_a_bad_switch_interval_is_refused_by_name(value, monkeypatch):
    from jax_vdit.cli.sample import SWITCH_INTERVAL_ENV, set_switch_interval

    monkeypatch.setenv(SWITCH_INTERVAL_ENV, value)
    with pytest.raises(ValueError, match=SWITCH_INTERVAL_ENV):
        set_switch_interval()


def test_the_switch_interval_is_set_from_the_environment(monkeypatch):
    import sys

    from jax_vdit.cli.sample import SWITCH_INTERVAL_ENV, set_switch_interval

    before = sys.getswitchinterval()
    try:
        monkeypatch.delenv(SWITCH_INTERVAL_ENV, raising=False)
        assert set_switch_interval() is None and sys.getswitchinterval() == before
        monkeypatch.setenv(SWITCH_INTERVAL_ENV, "0.001")
        assert set_switch_interval() == 0.001 and abs(sys.getswitchinterval() - 0.001) < 1e-9
    finally:
        sys.setswitchinterval(before)


def test_the_console_entry_ends_a_failed_sample_with_its_error_and_code(tmp_path):
    """The prompt exit of `vdit sample` keeps the exit code and the error message (flushed before the exit)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import console_main; sys.exit(console_main())",
           "sample", str(tmp_path / "missing"), "--embeddings", str(tmp_path / "e.safetensors")]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "no checkpoint at" in proc.stderr and str(tmp_path / "missing") in proc.stderr


def test_prompt_exit_stops_the_compile_workers_and_flushes_first(monkeypatch, capsys):
    """`exit_promptly` does what the skipped atexit handlers would have done for us: running VAE compile workers
    are terminated, and what was printed is flushed, before ``os._exit`` with the command's code."""
    import jax_vdit.cli as cli
    from jax_vdit.vae import compile_worker

    class Running:
        terminated = False

        def poll(self):
            return None

        def terminate(self):
            self.terminated = True

    class Exited(Exception):
        pass

    def fake_exit(code):
        raise Exited(code)

    import threading
    import time

    worker = Running()
    monkeypatch.setattr(compile_worker, "_RUNNING", [worker])
    finished = []  # background work still running (e.g. a store write) finishes before the exit, as it would
    background = threading.Thread(target=lambda: (time.sleep(0.3), finished.append(True)))
    background.start()
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    flushed_logs = []
    monkeypatch.setattr(cli.logging, "shutdown", lambda: flushed_logs.append(True))  # not pytest's own handlers
    print("the report")
    with pytest.raises(Exited) as ended:
        cli.exit_promptly(3)
    assert ended.value.args == (3,) and worker.terminated and flushed_logs == [True] and finished == [True]
    assert capsys.readouterr().out == "the report\n"


@pytest.mark.parametrize("full_exit, prompt", [(None, True), ("1", False)])
def test_console_main_exits_promptly_only_after_sample(full_exit, prompt, monkeypatch):
    import jax_vdit.cli as cli

    calls = []
    monkeypatch.setattr(cli, "main", lambda argv: 0)
    monkeypatch.setattr(cli, "exit_promptly", lambda code: calls.append(code))
    if full_exit is None:
        monkeypatch.delenv(cli.FULL_EXIT_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.FULL_EXIT_ENV, full_exit)
    assert cli.console_main(["sample", "ckpt"]) == 0
    assert calls == ([0] if prompt else [])
    calls.clear()
    assert cli.console_main(["distill", "--help"]) == 0 and calls == []  # other commands: the usual exit


@pytest.mark.parametrize("backend, cores, expected", [("gpu", 16, 3), ("gpu", 8, 3), ("gpu", 6, 2), ("gpu", 4, 2),
                                                     ("gpu", 2, 0), ("cpu", 16, 0)])
def test_vae_compile_processes_auto_means_two_or_three_on_a_gpu_host(backend, cores, expected, monkeypatch):
    import jax

    from jax_vdit.cli.sample import resolve_vae_compile_processes

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert resolve_vae_compile_processes("auto") == expected
    assert resolve_vae_compile_processes("3") == 3 and resolve_vae_compile_processes("0") == 0


def test_sampler_compile_auto_is_early_only_with_embeddings_on_one_device():
    from jax_vdit.cli.sample import resolve_sampler_compile

    assert resolve_sampler_compile("auto", embeddings=True, one_device=True) == "early"
    assert resolve_sampler_compile("auto", embeddings=False, one_device=True) == "after-load"
    assert resolve_sampler_compile("auto", embeddings=True, one_device=False) == "after-load"
    assert resolve_sampler_compile("after-load", embeddings=True, one_device=True) == "after-load"
    assert resolve_sampler_compile("early", embeddings=False, one_device=True) == "early"
    assert resolve_sampler_compile("early", embeddings=True, one_device=False) == "after-load"


@pytest.mark.parametrize("value", ["-1", "two"])
def test_a_bad_vae_compile_processes_value_is_refused_by_name(value):
    from jax_vdit.cli.sample import resolve_vae_compile_processes

    with pytest.raises(ValueError, match="--vae-compile-processes"):
        resolve_vae_compile_processes(value)
