"""The toy-teacher studies in experiments/studies/: caption swaps, patch-order reversal, guidance-sweep bookkeeping."""

import dataclasses
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.studies.toy_caption_sensitivity import OPPOSITE, OTHER_AXIS, swapped_spec
from experiments.studies.toy_guidance_sweep import parse_teachers, summarise
from experiments.studies.toy_prior_contrast import BASE, contrast, renders, spec_of, x_centroid
from experiments.studies.toy_sign_study import parse_offsets, study_rows, table
from experiments.studies.toy_symmetry import reverse_patches, reverse_time
from jax_vdit import schedules
from jax_vdit.toy.world import DIRECTION_VECTORS, encode_captions, get_config, parse_caption

WORLD = get_config("toy-9x24x24")


def test_direction_swaps_flip_the_sign_or_turn_the_axis():
    for word, (dx, dy) in DIRECTION_VECTORS.items():
        ox, oy = DIRECTION_VECTORS[OPPOSITE[word]]
        assert np.allclose((ox, oy), (-dx, -dy)), word
        ax, ay = DIRECTION_VECTORS[OTHER_AXIS[word]]
        assert abs(dx * ax + dy * ay) < 1e-9, word  # perpendicular: the axis changes, not only the sign


def test_swapped_spec_changes_one_attribute_of_every_object():
    spec = parse_caption("a red circle moving left quickly and a blue square standing still", WORLD)
    sign = swapped_spec(spec, "direction-sign", WORLD)
    assert sign.caption == "a red circle moving right quickly and a blue square standing still"
    assert swapped_spec(spec, "direction-axis", WORLD).objects[0].direction == "up"
    assert swapped_spec(spec, "speed", WORLD).objects[0].speed == "slowly"
    colours = [o.colour for o in swapped_spec(spec, "colour", WORLD).objects]
    assert len(set(colours)) == 2 and not {"red", "blue"} & set(colours)
    still = parse_caption("a green triangle standing still", WORLD)
    assert swapped_spec(still, "direction-sign", WORLD) is None and swapped_spec(still, "speed", WORLD) is None
    # a world without another value for the word: nothing to swap (no row of +0.000 from an unchanged caption)
    one_speed = get_config("toy-sign-5x16x16")
    moving = parse_caption("a red circle moving left quickly", one_speed)
    assert swapped_spec(moving, "speed", one_speed) is None
    assert swapped_spec(moving, "direction-sign", one_speed).objects[0].direction == "right"
    two_directions = dataclasses.replace(one_speed, directions=("left", "right"))
    assert swapped_spec(moving, "direction-axis", two_directions) is None


def test_reversals_are_involutions_that_keep_the_pixels_inside_a_patch():
    x = jnp.arange(2 * 1 * 3 * 4 * 6, dtype=jnp.float32).reshape(2, 1, 3, 4, 6)
    rx = reverse_patches(x, -1, 2)
    np.testing.assert_array_equal(rx[..., 0:2], x[..., 4:6])  # the last patch comes first, in its own order
    np.testing.assert_array_equal(reverse_patches(rx, -1, 2), x)
    ry = reverse_patches(x, -2, 2)
    np.testing.assert_array_equal(ry[..., 0:2, :], x[..., 2:4, :])
    np.testing.assert_array_equal(reverse_time(x)[:, :, 0], x[:, :, -1])


def test_guidance_sweep_names_teachers_and_averages_over_seeds():
    assert parse_teachers(["a=/x/t", "/runs/deep/toy_teacher"]) == {"a": "/x/t", "deep": "/runs/deep/toy_teacher"}
    with pytest.raises(ValueError, match="twice"):
        parse_teachers(["a=/x", "a=/y"])
    attrs = {k: 0.5 for k in ("colour_acc", "shape_acc", "direction_acc", "speed_acc", "bounce_acc", "count_acc")}
    runs = [{"teacher": "a", "guidance": 4.0, "toybench": dict(attrs, alignment=v)} for v in (0.7, 0.9)]
    mean, std = summarise(runs)[("a", 4.0)]["alignment"]
    assert mean == pytest.approx(0.8) and std == pytest.approx(0.1)


def test_x_centroid_follows_an_object_across_frames():
    video = np.zeros((4, 3, 8, 10), np.float32)
    for f, x in enumerate((2, 5, 7)):
        video[3, f, 3:5, x] = 1.0
    np.testing.assert_allclose(x_centroid(video), [2.0, 5.0, 7.0])


def test_prior_contrast_is_one_for_an_exact_prior_and_zero_for_a_caption_blind_model():
    """An oracle whose x0-prediction is the data's conditional mean captures everything; a model that ignores the
    caption captures nothing."""
    a, b = BASE, {**BASE, "direction": "right"}
    count = 4
    means = {}
    for fields in (a, b):
        text, _ = encode_captions([spec_of(fields).caption], WORLD)
        means[text.tobytes()] = jnp.asarray(renders(fields, WORLD, count).mean(0))

    def oracle(x_t, t, text, mask):
        m = means[np.asarray(text[:1]).tobytes()]
        a_t, s_t = schedules.vp_coefficients(t)
        return (x_t - a_t[:, None, None, None, None] * m[None]) / s_t[:, None, None, None, None]

    def blind(x_t, t, text, mask):
        return jnp.zeros_like(x_t)

    import jax

    exact = contrast(oracle, WORLD, a, b, 999, count, 2, jax.random.key(0))
    assert exact["captured"] == pytest.approx(1.0, abs=1e-3) and exact["data_energy"] > 0.1
    assert exact["data_x_centroid_a"][0] > exact["data_x_centroid_a"][-1]  # "left": from right to left
    assert contrast(blind, WORLD, a, b, 999, count, 2, jax.random.key(0))["captured"] == pytest.approx(0.0, abs=1e-6)


def test_sign_study_pairs_each_check_with_the_rope_share_logged_last_before_it(tmp_path):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 50, "loss": 1.0, "rope_odd_t": 0.5}, {"step": 100, "loss": 0.5, "rope_odd_t": 0.4})))
    (run / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 75, "alignment": 0.6, "direction_acc": 0.5, "overall": 0.7},
        {"step": 100, "alignment": 0.8, "direction_acc": 0.9, "overall": 0.85})))
    rows = study_rows({"subframe": run})
    assert [(r["step"], r["rope_odd_t"], r["direction_acc"]) for r in rows] == [(75, 0.5, 0.5), (100, 0.4, 0.9)]
    assert "| subframe | 100 | 0.800 | 0.900 | 0.850 | 0.400 |" in table(rows)
    # a run continued from another run's 9,000-step export: its checks move to 9,075 and 9,100, while the rope
    # share is still looked up at the run's own steps
    shifted = study_rows({"subframe": run}, {"subframe": 9000})
    assert [(r["step"], r["rope_odd_t"]) for r in shifted] == [(9075, 0.5), (9100, 0.4)]
    assert parse_offsets(["subframe=9000"], {"subframe": run}) == {"subframe": 9000}
    with pytest.raises(SystemExit, match="NAME one of"):
        parse_offsets(["plain=9000"], {"subframe": run})
    with pytest.raises(SystemExit, match="integer"):
        parse_offsets(["subframe=9k"], {"subframe": run})


def test_direction_confusion_scores_a_teacher_in_its_recorded_world(tmp_path, monkeypatch):
    """A teacher recorded in one world is never sampled with another world's prompts: a disagreeing --world is
    refused before any model is loaded (until 2026-12-04 the script silently used toy-9x24x24)."""
    from experiments.studies import toy_direction_confusion

    from jax_vdit.toy import write_world_record

    write_world_record(tmp_path, "toy-sign-5x16x16")
    monkeypatch.setattr(sys, "argv", ["toy_direction_confusion.py", "--teacher", str(tmp_path),
                                      "--world", "toy-9x24x24"])
    with pytest.raises(ValueError, match="trained on the toy world 'toy-sign-5x16x16'"):
        toy_direction_confusion.main()


def test_toy_teacher_hd96_has_the_release_head_dim_at_the_toy_width():
    from experiments.studies.presets import register
    from jax_vdit.config import get_preset

    register()
    from jax_vdit.config import PRESET_LATENT_SHAPES
    from jax_vdit.model.rope import rope_angles

    base, hd96 = get_preset("toy-teacher"), get_preset("toy-teacher-hd96")
    assert hd96.inner_dim == base.inner_dim == 192 and hd96.attention_head_dim == 96
    assert rope_angles((9, 12, 12), hd96.attention_head_dim, (1.0, 1.0, 1.0)).shape == (9 * 12 * 12, 48)  # 16/axis
    assert PRESET_LATENT_SHAPES["toy-teacher-hd96"] == PRESET_LATENT_SHAPES["toy-teacher"]


def test_prefetch_import_study_times_the_imports_with_and_without_the_prefetch(tmp_path):
    from experiments.studies.prefetch_import import main

    main(["--tensors", "4", "--tensor-mb", "0.01", "--runs", "1", "--threads", "2", "--out", str(tmp_path)])
    import json

    record = json.loads((tmp_path / "prefetch_import.json").read_text())
    assert set(record["runs"]) == {"none", "prefetch, 2 threads"}
    (plain,), (read,) = record["runs"]["none"], record["runs"]["prefetch, 2 threads"]
    assert plain["read_s"] is None and read["read_s"] is not None and read["read_s"] >= 0
    assert 0 < plain["jax_import_s"] <= plain["imports_s"]
    assert "| prefetch, 2 threads |" in (tmp_path / "prefetch_import.md").read_text()
