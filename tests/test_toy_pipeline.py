"""The toy-world pipeline: the shipped teacher, the demo, teacher training through the real recipe."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit.config import get_preset
from jax_vdit.toy.demo import run_demo
from jax_vdit.model import random_model
from jax_vdit.toy import (
    TOY_STUDENT_MLCD_DIR,
    TOY_STUDENT_SPARSE_DIR,
    TOY_TEACHER_DIR,
    TeacherRecipe,
    load_toy_teacher,
    recorded_world,
    train_teacher,
    world_for,
    write_world_record,
)
from jax_vdit.toy.world import get_config
from jax_vdit.toy.world.training_set import ToyTrainingSet



@pytest.fixture
def anchored_worlds(monkeypatch):
    """Worlds that differ from the product's presets only by a first-frame mark (a world change a model's record
    must catch), registered for one test."""
    from jax_vdit.toy.world import config as world_config

    for base in ("toy-9x24x24", "toy-tiny-5x16x16"):
        name = f"{base}-anchored"
        monkeypatch.setitem(world_config.PRESETS, name,
                            dataclasses.replace(world_config.PRESETS[base], name=name, first_frame_offset=0.5))

def test_shipped_teacher_is_a_release_format_folder():
    assert (TOY_TEACHER_DIR / "config.json").is_file()
    assert (TOY_TEACHER_DIR / "diffusion_pytorch_model.safetensors").is_file()
    model = load_toy_teacher()
    assert model.cfg == get_preset("toy-teacher", compute_dtype="float32")


def test_demo_writes_grid_and_scores_teacher_and_students_side_by_side(tmp_path):
    summary = run_demo(tmp_path, prompts=2, steps=2)
    assert (tmp_path / "grid.gif").is_file()
    saved = json.loads((tmp_path / "toybench.json").read_text())
    assert len(saved["prompts"]) == 2
    assert list(saved["results"]) == ["teacher euler-a 2 steps, cfg 4.0", "teacher ddim 4 steps, cfg 4.0",
                                      "MLCD student 4 steps, no cfg", "sparse student 4 steps, no cfg"]
    for row in saved["results"].values():
        assert 0.0 <= row["alignment"] <= 1.0 and row["sampling_s"] > 0
    assert "alignment" in summary["table"]


def test_shipped_students_load_with_their_sampler_and_masks():
    from jax_vdit.toy import TOY_STUDENT_MLCD_DIR, TOY_STUDENT_SPARSE_DIR, load_toy_student

    mlcd, sparse = load_toy_student(TOY_STUDENT_MLCD_DIR), load_toy_student(TOY_STUDENT_SPARSE_DIR)
    for student in (mlcd, sparse):
        assert student.model.cfg == get_preset("toy-teacher", compute_dtype="float32")
        assert student.plan.num_steps == 4 and student.info["guidance"] is None
    assert mlcd.attention.masks is None
    masks = sparse.attention.masks
    assert len(masks) == 6 and all(m.num_frames == 9 for m in masks)
    assert 0.5 < sum(m.density for m in masks) / 6 < 1.0  # the r=0.1 schedule: 15% of the tiles removed


def test_student_folder_errors_name_the_problem(tmp_path):
    from jax_vdit.toy import load_toy_student, write_student_info

    with pytest.raises(FileNotFoundError, match="student.json"):
        load_toy_student(TOY_TEACHER_DIR)
    folder = tmp_path / "s"
    folder.mkdir()
    for f in ("config.json", "diffusion_pytorch_model.safetensors"):
        (folder / f).write_bytes((TOY_STUDENT_SPARSE_DIR / f).read_bytes())
    write_student_info(folder, edges=(0, 500), guidance_distilled=4.0, teacher="t", mask_schedule=True)
    with pytest.raises(FileNotFoundError, match="mask_schedule.json"):
        load_toy_student(folder)
    (folder / "student.json").write_text('{"sampler": "ddim", "edges": [0]}')
    with pytest.raises(ValueError, match="consistency"):
        load_toy_student(folder)


def test_training_set_batches_are_pure_functions_of_the_step():
    world = get_config("toy-tiny-5x16x16")
    data = ToyTrainingSet.generate(world, 40, workers=1)
    a, b = data.batch_at(7, 8), data.batch_at(7, 8)
    np.testing.assert_array_equal(a["latents"], b["latents"])
    assert not np.array_equal(data.batch_at(8, 8)["latents"], a["latents"])
    epoch = np.concatenate([data.indices(s, 8) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(40))  # each epoch visits every sample once
    assert data.unconditional()["uncond_mask"].sum() == 1


def test_training_set_parallel_render_equals_serial_after_jax_started():
    """The worker pool (spawned, not forked: JAX's threads are running in this process) renders the same set."""
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # JAX initialised, as in a training script
    world = get_config("toy-tiny-5x16x16")
    serial = ToyTrainingSet.generate(world, 2000, workers=1)
    parallel = ToyTrainingSet.generate(world, 2000, workers=2)
    np.testing.assert_array_equal(parallel.latents, serial.latents)
    assert parallel.captions == serial.captions


def test_teacher_recipe_trains_and_continues_from_exported_weights(tmp_path, anchored_worlds):
    from jax_vdit.toy import export_release_folder

    world = get_config("toy-tiny-5x16x16")
    data = ToyTrainingSet.generate(world, 64, workers=1)
    recipe = TeacherRecipe(world="toy-tiny-5x16x16", model="toy-tiny", steps=6, batch_size=4, compute_dtype="float32",
                           log_every=3, checkpoint_every=3, warmup_steps=0)
    result = train_teacher(recipe, tmp_path / "run", data=data, show_progress=False)
    assert int(result.state.step) == 6 and (tmp_path / "run" / "metrics.png").is_file()
    export_release_folder(result.model("ema"), tmp_path / "export", dtype="float32", world=recipe.world)
    again = train_teacher(recipe, tmp_path / "run2", data=data, show_progress=False, init_from=tmp_path / "export",
                          stop_after=1)
    first = again.history[0]
    assert np.isfinite(first["loss"])
    # the export records its world; continuing it in another world is refused before any training
    assert world_for(tmp_path / "export").name == "toy-tiny-5x16x16"
    other = dataclasses.replace(recipe, world="toy-9x24x24")
    with pytest.raises(ValueError, match="trained on the toy world 'toy-tiny-5x16x16'"):
        train_teacher(other, tmp_path / "run3", data=data, show_progress=False, init_from=tmp_path / "export")
    # ... unless asked for: a fine-tune onto the anchored variant of the same world trains and records the new world
    anchored = dataclasses.replace(recipe, world="toy-tiny-5x16x16-anchored")
    anchored_data = ToyTrainingSet.generate(get_config(anchored.world), 64, workers=1)
    assert anchored_data.latents[:, 3, 0].mean() > data.latents[:, 3, 0].mean() + 0.5  # the marked first frame
    adapted = train_teacher(anchored, tmp_path / "run4", data=anchored_data, show_progress=False,
                            init_from=tmp_path / "export", adapt_to_world=True, stop_after=1)
    assert np.isfinite(adapted.history[0]["loss"])
    export_release_folder(adapted.model("ema"), tmp_path / "adapted", dtype="float32", world=anchored.world)
    assert world_for(tmp_path / "adapted").name == "toy-tiny-5x16x16-anchored"


def test_models_are_scored_in_the_world_they_were_trained_on(tmp_path, anchored_worlds):
    """toy_world.json: the shipped models record their world (the subframe world); --world must agree
    with a record; folders without one use the requested or the default world."""
    for folder in (TOY_TEACHER_DIR, TOY_STUDENT_MLCD_DIR, TOY_STUDENT_SPARSE_DIR):
        assert recorded_world(folder) == "toy-9x24x24-subframe"
    assert world_for(TOY_TEACHER_DIR).objectness_lead == 0.5
    assert world_for(TOY_TEACHER_DIR, "toy-9x24x24-subframe").name == "toy-9x24x24-subframe"
    with pytest.raises(ValueError, match="not 'toy-9x24x24'"):
        world_for(TOY_TEACHER_DIR, "toy-9x24x24")
    assert recorded_world(tmp_path) is None
    assert world_for(tmp_path).name == "toy-9x24x24"
    assert world_for(tmp_path, "toy-9x24x24-anchored").first_frame_offset > 0
    write_world_record(tmp_path, "toy-9x24x24-anchored")
    with pytest.raises(ValueError, match="drop --world or pass --world toy-9x24x24-anchored"):
        world_for(tmp_path, "toy-9x24x24")
    with pytest.raises(ValueError, match="unknown toy-world preset"):
        write_world_record(tmp_path, "no-such-world")
    # the demo refuses a student of another world than its teacher's
    student = tmp_path / "student"
    shutil.copytree(TOY_STUDENT_MLCD_DIR, student)
    write_world_record(student, "toy-9x24x24-anchored")
    with pytest.raises(ValueError, match="trained on the toy world 'toy-9x24x24-anchored'"):
        run_demo(tmp_path / "demo", prompts=1, steps=1, students={"other": student})


def test_random_model_for_benchmarks():
    cfg = get_preset("tiny")
    model = random_model(cfg, seed=1, scale=0.02)
    kernel = np.asarray(model.blocks[1].attn1.to_q.kernel[...])
    assert kernel.shape == (48, 48) and 0.015 < kernel.std() < 0.025
    assert not np.allclose(kernel, np.asarray(model.blocks[1].attn1.to_k.kernel[...]))
    out = model(jnp.ones((1, 4, 2, 8, 8)), jnp.ones((1,)), jnp.ones((1, 3, cfg.caption_channels)))
    assert out.shape == (1, 4, 2, 8, 8) and bool(jnp.isfinite(out).all())
