"""Mixing a curriculum world into a teacher's training (``MixedTrainingSet``, ``TeacherRecipe.mix_world``).

The shipped teacher was trained this way: the sign world first, then the full world with a quarter of every batch
from the sign world, so that "left" vs "right" is not forgotten."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jax_vdit.toy import TeacherRecipe, train_teacher
from jax_vdit.toy.world import encode_captions, get_config
from jax_vdit.toy.world import report_split, reserved_keys, validation_split
from jax_vdit.toy.world.spec import parse_caption
from jax_vdit.toy.world.training_set import MixedTrainingSet, ToyTrainingSet, side_world

MAIN = get_config("toy-tiny-5x16x16-subframe")
SIGN = get_config("toy-sign-5x16x16-subframe")


@pytest.fixture(scope="module")
def mixed() -> MixedTrainingSet:
    return MixedTrainingSet.generate(MAIN, SIGN, 0.25, 64, workers=1)


def test_batches_hold_the_fraction_of_each_world_as_a_pure_function_of_the_step(mixed):
    batch = mixed.batch_at(5, 8)
    assert batch["latents"].shape == (8,) + MAIN.latent_shape
    assert batch["text"].shape == (8, MAIN.max_text_len, MAIN.caption_channels)
    np.testing.assert_array_equal(batch["latents"][:6], mixed.main.batch_at(5, 6)["latents"])
    np.testing.assert_array_equal(batch["latents"][6:], mixed.side.batch_at(5, 2)["latents"])
    again = mixed.batch_at(5, 8)
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])
    assert not np.array_equal(mixed.batch_at(6, 8)["latents"], batch["latents"])
    assert mixed.side_count(64) == 16
    with pytest.raises(ValueError, match="leaves no sample"):
        mixed.side_count(1)


def test_side_samples_are_the_side_worlds_scenes_in_the_main_worlds_coordinates(mixed):
    assert len(mixed.side) == 1024
    # one quick object in one of the sign world's 4 directions, never a main-world-only word
    for caption in mixed.side.captions[:50]:
        spec = parse_caption(caption, SIGN)
        assert len(spec.objects) == 1 and spec.objects[0].direction in SIGN.directions
    # captions are encoded with the main world's text encoder: a word has one embedding in the mixed batches
    text, mask = encode_captions(mixed.side.captions[:4], MAIN)
    np.testing.assert_array_equal(mixed.side.text[:4], text)
    np.testing.assert_array_equal(mixed.side.text_mask[:4], mask)
    own, _ = encode_captions(mixed.side.captions[:4], SIGN)
    assert not np.array_equal(own, text)  # "quickly" has another token id in the sign world's vocabulary
    # latents normalised with the main world's channel statistics (same render, other affine map)
    plain = ToyTrainingSet.generate(SIGN, 4, seed=1, workers=1)
    assert plain.captions == mixed.side.captions[:4]
    raw = plain.latents * np.asarray(SIGN.channel_std)[:, None, None, None] + np.asarray(SIGN.channel_mean)[
        :, None, None, None]
    expected = (raw - np.asarray(MAIN.channel_mean)[:, None, None, None]) / np.asarray(MAIN.channel_std)[
        :, None, None, None]
    np.testing.assert_allclose(mixed.side.latents[:4], expected, atol=1e-4)


def test_side_world_never_yields_a_main_world_validation_or_test_prompt(mixed):
    """A validation or test prompt of the main world that the side world can produce is excluded from the side
    samples (those MixedTrainingSet draws, and any drawn with the main world's reserved keys excluded)."""
    reserved = reserved_keys(MAIN)
    assert reserved == validation_split(MAIN).keys | report_split(MAIN, "test").keys
    shared = [s for s in validation_split(MAIN).specs + report_split(MAIN, "test").specs if
              len(s.objects) == 1 and s.objects[0].speed == "quickly" and not s.objects[0].bounce and
              s.objects[0].direction in SIGN.directions and s.background in SIGN.backgrounds and
              s.objects[0].shape in SIGN.shapes and s.objects[0].colour in SIGN.colours]
    assert shared  # the sign world can draw some of them: the check below is not vacuous
    assert not {parse_caption(c, SIGN).key for c in mixed.side.captions} & reserved
    side_cfg = side_world(MAIN, SIGN)
    data = ToyTrainingSet.generate(side_cfg, 3000, workers=1, exclude_keys=reserved)
    keys = {parse_caption(c, SIGN).key for c in data.captions}
    assert not keys & reserved
    # and without the exclusion they would appear
    unfiltered = ToyTrainingSet.generate(side_cfg, 3000, workers=1)
    assert {parse_caption(c, SIGN).key for c in unfiltered.captions} & {s.key for s in shared}


def test_worlds_that_cannot_be_mixed_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="num_frames differs"):
        side_world(get_config("toy-9x24x24-subframe"), SIGN)
    with pytest.raises(ValueError, match="objectness_lead differs"):
        side_world(get_config("toy-tiny-5x16x16"), SIGN)
    with pytest.raises(ValueError, match="speed 'quickly'"):
        side_world(MAIN, dataclasses.replace(SIGN, speeds=(("quickly", 1.0),)))
    with pytest.raises(ValueError, match="not in"):
        side_world(dataclasses.replace(MAIN, directions=("up", "down")), SIGN)
    with pytest.raises(ValueError, match="side_fraction"):
        MixedTrainingSet.generate(MAIN, SIGN, 1.0, 8, workers=1)
    with pytest.raises(ValueError, match="go together"):
        TeacherRecipe(mix_world="toy-sign-9x24x24-subframe")
    with pytest.raises(ValueError, match=r"mix_fraction must be in \[0, 1\)"):
        TeacherRecipe(mix_world="toy-sign-9x24x24-subframe", mix_fraction=1.5)
    with pytest.raises(ValueError, match="unknown toy-world preset 'toy-sign'"):
        TeacherRecipe(mix_world="toy-sign", mix_fraction=0.25)


def test_recipe_with_a_mix_world_trains_and_records_it(tmp_path):
    recipe = TeacherRecipe(world=MAIN.name, model="toy-tiny", steps=2, batch_size=4, compute_dtype="float32",
                           warmup_steps=0, log_every=1, checkpoint_every=2, num_samples=16,
                           mix_world=SIGN.name, mix_fraction=0.25)
    data = recipe.training_data(workers=1)
    assert isinstance(data, MixedTrainingSet) and data.side_count(4) == 1
    result = train_teacher(recipe, tmp_path / "run", data=data, show_progress=False)
    assert int(result.state.step) == 2 and np.isfinite(result.history[-1]["loss"])
    meta = (tmp_path / "run" / "train_config.json").read_text()
    assert '"mix_world": "toy-sign-5x16x16-subframe"' in meta and '"mix_fraction": 0.25' in meta
