"""The command-line entry points: sample from a release folder, size validation, clear errors."""

from __future__ import annotations

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
    """One CLI run (3 CFG steps, then the CausalVAE decode): latents file, report, and the mp4 beside it. One run
    instead of two keeps the suite short: each costs ~1 minute of CPU compilation."""
    emb = _embeddings(tmp_path / "emb.safetensors")
    out = tmp_path / "out" / "lat.safetensors"
    code = main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb), "--frames", "9",
                 "--compile-cache", "", "--height", "64", "--width", "80", "--steps", "3", "--guidance", "4",
                 "--out", str(out), "--param-dtype", "float32", "--compute-dtype", "float32", "--quiet",
                 "--vae", str(golden_dir / "causalvae_v12" / "tiny_a")])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["latent_shape"] == [1, 4, 3, 8, 10] and "decode_s" in report
    latents = load_file(str(out))["latents"]
    assert latents.shape == (1, 4, 3, 8, 10) and np.isfinite(latents).all()
    import imageio.v3 as iio

    frames = iio.imread(out.with_suffix(".mp4"))
    assert frames.shape[0] == 9 and frames.shape[1:3] == (64, 80)


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
                 "--width", "80", "--prompt", "a cat"])
    assert code == 2
    assert "--text-encoder" in capsys.readouterr().err


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
                 "--check-every", "2", "--check-steps", "1", "--check-prompts", "2", "--export", str(tmp_path / "t")])
    assert code == 0 and "best EMA teacher" in capsys.readouterr().out
    evals = read_evals(run)
    assert [r["step"] for r in evals] == [2, 4] and evals[0]["is_best"] == 1.0
    best = max(evals, key=lambda r: r["alignment"])  # the first of equals
    saved = json.loads((run / BEST_EMA / "check.json").read_text())
    assert saved["alignment"] == best["alignment"]
    assert saved["step"] == max(r["step"] for r in evals if r["is_best"] == 1.0)
    assert sorted(p.name for p in run.glob(f"{BEST_EMA}*")) == [BEST_EMA]  # no partial or old export left
    assert load_toy_teacher(run / BEST_EMA).cfg.num_layers == 2
    assert (tmp_path / "t" / "config.json").is_file()


def test_train_teacher_command_mixes_a_world_and_toybench_writes_every_score(tmp_path, capsys):
    """`vdit train-teacher --mix-world ... --adapt-to-world` (the shipped teacher's stage 2) records the mix;
    `vdit toybench --json` writes per-attribute scores with the command."""
    stage1 = tmp_path / "stage1"
    assert main(["train-teacher", "--run", str(tmp_path / "r1"), "--world", "toy-sign-5x16x16-subframe",
                 "--model", "toy-tiny", "--steps", "2", "--batch", "2", "--samples", "8", "--warmup", "0",
                 "--compute-dtype", "float32", "--export", str(stage1)]) == 0
    run = tmp_path / "r2"
    args = ["train-teacher", "--run", str(run), "--world", "toy-tiny-5x16x16-subframe", "--model", "toy-tiny",
            "--steps", "2", "--batch", "4", "--samples", "8", "--compute-dtype", "float32", "--init-from", str(stage1),
            "--mix-world", "toy-sign-5x16x16-subframe", "--mix-fraction", "0.25", "--export", str(tmp_path / "t")]
    assert main(args) == 2  # weights of another world, without --adapt-to-world
    assert "trained on the toy world 'toy-sign-5x16x16-subframe'" in capsys.readouterr().err
    assert main(args + ["--adapt-to-world"]) == 0
    meta = json.loads((run / "train_config.json").read_text())
    recipe = meta.get("recipe") or meta["extra"]["recipe"]
    assert recipe["mix_world"] == "toy-sign-5x16x16-subframe" and recipe["mix_fraction"] == 0.25
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
