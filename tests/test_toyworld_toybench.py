"""ToyBench: ground truth scores ~perfectly, controlled degradations lower the score that should drop.

Thresholds come from the resolution table measured on 300 default-preset videos (see
``python -m jax_vdit.toy.world.calibrate``): ground truth alignment 1.000 (also 1.000 on 3000 videos; tiny preset
0.9999), smoothness 0.95, consistency 0.98; GT + N(0, 0.5^2) alignment 0.999, smoothness 0.82; pure noise 0.000
(nothing object-like is found: the objectness channel of N(0, 1) latents essentially never exceeds half the object
contrast after 3 x 3 averaging); shuffled prompts alignment 0.28 (chance level of the attributes).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from jax_vdit.toy.world import (
    direction_confusion,
    evaluate,
    format_table,
    get_config,
    latent_to_raw,
    make_sample,
    raw_to_latent,
    teacher_error,
)
from jax_vdit.toy.world.toybench import SUMMARY_KEYS

DEFAULT = get_config("toy-9x24x24")
TINY = get_config("toy-tiny-5x16x16")


def _batch(config, n, seed=11):
    pairs = [make_sample(config, i, seed) for i in range(n)]
    return np.stack([x for x, _ in pairs]), [s for _, s in pairs]


@pytest.fixture(scope="module")
def gt():
    x, specs = _batch(DEFAULT, 300)
    return x, specs, evaluate(x, specs, DEFAULT)


def test_ground_truth_scores_near_perfect(gt):
    x, specs, res = gt
    m = res["mean"]
    assert set(SUMMARY_KEYS) <= set(m)
    assert m["alignment"] >= 0.97, m
    for k in ("colour_acc", "shape_acc", "direction_acc", "speed_acc", "bounce_acc", "dynamic_degree", "count_acc"):
        assert m[k] >= 0.97, (k, m[k])
    assert m["smoothness"] >= 0.9 and m["consistency"] >= 0.93 and m["overall"] >= 0.95, m
    assert abs(m["speed_ratio"] - 1.0) < 0.05
    # two-object scenes are recovered too (object matching by colour / position)
    two = np.array([len(s.objects) == 2 for s in specs])
    assert two.sum() > 50 and res["per_video"]["alignment"][two].mean() >= 0.97
    # what the parser saw reads back as the prompt
    agree = np.mean([seen == s.caption for seen, s in zip(res["seen_captions"], specs)])
    assert agree >= 0.95
    for k, v in res["per_video"].items():
        assert v.shape == (300,), k


def test_direction_confusion_of_ground_truth_and_time_reversed_videos(gt):
    x, specs, res = gt
    moving = sum(o.moving for s in specs for o in s.objects)
    assert len(res["directions"]) == moving
    counts = direction_confusion(res["directions"])
    assert sum(counts.values()) == moving and counts["correct"] >= 0.97 * moving, counts
    # played backwards, every straight (non-bouncing) mover goes the opposite way
    straight = [i for i, s in enumerate(specs) if all(o.moving and not o.bounce for o in s.objects)]
    rev = evaluate(x[straight][:, :, ::-1], [specs[i] for i in straight], DEFAULT)
    flipped = direction_confusion(rev["directions"])
    assert flipped["opposite"] >= 0.9 * len(rev["directions"]) and flipped["correct"] == 0, flipped
    assert direction_confusion([("left", "up-left"), ("left", "up"), ("up", "down-right"), ("up", None)]) == {
        "correct": 0, "45 deg": 1, "90 deg": 1, "135 deg": 1, "opposite": 0, "not moving": 1}


@pytest.mark.parametrize(
    "name",
    ["toy-9x24x24-subframe", "toy-tiny-5x16x16-subframe", "toy-sign-5x16x16", "toy-sign-5x16x16-subframe",
     "toy-sign-9x24x24", "toy-sign-9x24x24-subframe"],
)
def test_world_variants_ground_truth_scores_like_the_plain_world_and_reversal_flips_every_direction(name):
    world = get_config(name)
    x, specs = _batch(world, 40)
    m = evaluate(x, specs, world)["mean"]
    assert m["alignment"] >= 0.97 and m["direction_acc"] >= 0.97 and m["consistency"] > 0.9, m
    if name.startswith("toy-sign"):  # one object, always moving: a time-reversed clip has every direction wrong
        assert {s.objects[0].direction for s in specs} == {"left", "right", "up", "down"}
        assert evaluate(x[:, :, ::-1], specs, world)["mean"]["direction_acc"] == 0.0


@pytest.mark.parametrize("offset", [0.5, 2.0])
def test_anchored_world_marks_only_the_first_frame_and_scores_like_the_plain_one(offset):
    """``first_frame_offset``: the same scenes, with channel 3 of time index 0 raised by offset / std; decoding
    removes the mark, so ToyBench reads ground truth as well as in the plain world (a teacher of either world can
    be judged)."""
    anchored = dataclasses.replace(DEFAULT, name=f"toy-9x24x24-anchored-{offset}", first_frame_offset=offset)
    assert anchored.first_frame_offset > 0
    x, specs = _batch(DEFAULT, 40)
    xa, specs_a = _batch(anchored, 40)
    assert [s.caption for s in specs] == [s.caption for s in specs_a]
    diff = xa - x
    np.testing.assert_allclose(diff[:, 3, 0], anchored.first_frame_offset / anchored.channel_std[3], rtol=1e-5)
    assert np.abs(diff[:, :3]).max() == 0 and np.abs(diff[:, :, 1:]).max() == 0
    np.testing.assert_allclose(latent_to_raw(xa, anchored), latent_to_raw(x, DEFAULT), atol=1e-6)
    np.testing.assert_allclose(raw_to_latent(latent_to_raw(xa, anchored), anchored), xa, atol=1e-5)
    m = evaluate(xa, specs_a, anchored)["mean"]
    assert m["alignment"] >= 0.97 and m["direction_acc"] >= 0.97, m
    # read with the wrong world, the marked first frame is taken for an object-filled frame: a real difference
    wrong = evaluate(xa, specs_a, DEFAULT)["mean"]
    assert wrong["consistency"] < m["consistency"] - 0.05, (wrong, m)
    with pytest.raises(ValueError, match="first_frame_offset"):
        get_config("toy-9x24x24", first_frame_offset=float("nan"))


def test_tiny_preset_ground_truth():
    x, specs = _batch(TINY, 200)
    m = evaluate(x, specs, TINY)["mean"]
    assert m["alignment"] >= 0.97 and m["smoothness"] >= 0.9 and m["consistency"] >= 0.9, m


def test_pure_noise_and_empty_videos_score_low(gt):
    x, specs, _ = gt
    rng = np.random.default_rng(0)
    noise = evaluate(rng.standard_normal(x.shape).astype(np.float32), specs, DEFAULT)["mean"]
    # observed 0.0: no object is found in noise, so every attribute counts as missed
    assert noise["alignment"] <= 0.1 and noise["overall"] <= 0.1, noise
    zeros = evaluate(np.zeros_like(x), specs, DEFAULT)["mean"]
    assert zeros["alignment"] <= 0.1 and zeros["overall"] <= 0.1


def test_wrong_prompts_lower_alignment(gt):
    x, specs, res = gt
    perm = np.random.default_rng(1).permutation(len(specs))
    wrong = evaluate(x, [specs[j] for j in perm], DEFAULT)["mean"]
    # chance level of the attributes (1/6 colour, 1/5 shape, 1/8 direction, ~1/3 speed, 1/2 bounce): observed 0.28
    assert wrong["alignment"] <= 0.45
    assert res["mean"]["alignment"] - wrong["alignment"] >= 0.5
    assert wrong["colour_acc"] <= 0.35 and wrong["shape_acc"] <= 0.4 and wrong["direction_acc"] <= 0.3


def test_gaussian_noise_degrades_gracefully_and_monotonically(gt):
    x, specs, res = gt
    x, specs = x[:150], specs[:150]
    rng = np.random.default_rng(2)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    scores = [evaluate(x, specs, DEFAULT)["mean"]]
    for sigma in (0.5, 2.0):
        scores.append(evaluate(x + sigma * eps, specs, DEFAULT)["mean"])
    # attributes survive moderate noise (the parser averages over pixels and frames) ...
    assert scores[1]["alignment"] >= 0.95
    # ... while the track-based quality scores resolve the noise level
    for k in ("smoothness", "consistency", "overall"):
        assert scores[0][k] > scores[1][k] + 0.05 > scores[2][k] + 0.1, (k, [s[k] for s in scores])
    assert scores[2]["alignment"] < scores[0]["alignment"] - 0.1


def test_motion_failures_are_caught(gt):
    x, specs, res = gt
    x, specs = x[:150], specs[:150]
    moving = np.array([any(o.moving for o in s.objects) for s in specs])
    # frozen video (first frame repeated): no motion where the prompt asks for it
    frozen = evaluate(np.repeat(x[:, :, :1], x.shape[2], axis=2), specs, DEFAULT)
    assert frozen["mean"]["dynamic_degree"] <= 0.3 and frozen["mean"]["speed_ratio"] <= 0.05
    assert frozen["per_video"]["direction_acc"][moving].mean() <= 0.05
    # shuffled frames: appearance is fine, motion is not smooth and directions are wrong
    rng = np.random.default_rng(3)
    shuf = evaluate(np.stack([v[:, rng.permutation(v.shape[1])] for v in x]), specs, DEFAULT)["mean"]
    assert shuf["smoothness"] < res["mean"]["smoothness"] - 0.4
    assert shuf["consistency"] >= 0.9
    assert shuf["direction_acc"] <= 0.6
    # half the motion: the speed ratio halves and "quickly" is no longer recovered
    slow_cfg = dataclasses.replace(DEFAULT, speeds=tuple((n, v / 2) for n, v in DEFAULT.speeds))
    xs, specs_s = _batch(slow_cfg, 100)
    half = evaluate(xs, specs_s, DEFAULT)["mean"]  # judged as if made for the default world
    assert 0.4 <= half["speed_ratio"] <= 0.6 and half["speed_acc"] <= 0.5


def test_teacher_error():
    rng = np.random.default_rng(4)
    t = rng.standard_normal((3, 4, 5, 16, 16)).astype(np.float32)
    same = teacher_error(t, t)
    assert same["mean"]["teacher_mse"] == 0.0 and same["mean"]["teacher_rel_err"] == 0.0
    s = t + 0.1
    r = teacher_error(s, t)
    np.testing.assert_allclose(r["per_video"]["teacher_mse"], 0.01, rtol=1e-4)
    np.testing.assert_allclose(
        r["per_video"]["teacher_rel_err"], 0.1 * math.sqrt(t[0].size) / np.linalg.norm(t.reshape(3, -1), axis=1),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="same"):
        teacher_error(t, t[:2])


def test_format_table_and_input_checks(gt):
    x, specs, res = gt
    terr = teacher_error(x[:4], x[:4])
    table = format_table({"gt": res, "student 4-step": {**res["mean"], **terr["mean"], "direction_acc": float("nan")}})
    lines = table.splitlines()
    assert lines[0].startswith("| setting | overall | alignment")
    assert "teacher_mse" in lines[0] and len(lines) == 4
    assert lines[2].startswith("| gt | ") and "| 1.000 |" in lines[2]
    assert "|  |" in lines[3]  # NaN shows as an empty cell
    with pytest.raises(ValueError, match="videos must be"):
        evaluate(x[:, :, :3], specs, DEFAULT)
    with pytest.raises(ValueError, match="specs"):
        evaluate(x[:2], specs[:3], DEFAULT)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full_like(x[:1], np.nan), specs[:1], DEFAULT)
