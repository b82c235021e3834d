"""Toy-world prompt splits: training stream, validation and test are disjoint by scene key; the test split is
reproducible, independent of the training seed, and reachable only through the report path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jax_vdit.toy.world import (
    ToyWorldStream,
    ValidationSplit,
    get_config,
    heldout_specs,
    make_sample,
    report_split,
    require_validation,
    reserved_keys,
    sample_spec,
    validation_split,
)
from jax_vdit.toy.world import splits as splits_mod
from jax_vdit.toy.world.data import _STREAM_TAG

DEFAULT = get_config("toy-9x24x24-subframe")
TINY = get_config("toy-tiny-5x16x16")
SIGN = get_config("toy-sign-5x16x16")  # 120 distinct scenes: the exclusion is hit often


@pytest.mark.parametrize("config", [DEFAULT, TINY, SIGN], ids=lambda c: c.name)
def test_validation_and_test_splits_are_disjoint_fixed_and_sized(config):
    val, test = validation_split(config), report_split(config, "test")
    assert isinstance(val, ValidationSplit) and isinstance(test, splits_mod.TestSplit)
    assert not isinstance(test, ValidationSplit)
    assert len(val) == config.num_heldout == 32 and len(val.keys) == 32
    assert len(test) == config.num_test == len(test.keys)  # distinct scenes
    assert config.num_test == (16 if config.name.startswith("toy-sign") else 128)
    assert not val.keys & test.keys
    assert reserved_keys(config) == val.keys | test.keys
    # validation is exactly the original held-out set; neither split depends on the training seed
    assert val.specs == heldout_specs(config)
    other = dataclasses.replace(config, seed=123)
    assert report_split(other, "test").specs == test.specs and validation_split(other).specs == val.specs
    # the test split comes from its own reserved seed
    moved = report_split(dataclasses.replace(config, test_seed=config.test_seed + 1), "test")
    assert moved.specs != test.specs and not moved.keys & val.keys


@pytest.mark.parametrize("config", [DEFAULT, SIGN], ids=lambda c: c.name)
def test_training_stream_never_yields_a_validation_or_test_scene(config):
    val, test = validation_split(config).keys, report_split(config, "test").keys
    n = 400
    seen = [make_sample(config, i)[1].key for i in range(n)]
    assert not set(seen) & (val | test)
    stream = ToyWorldStream(config, batch_size=16, num_workers=2, worker_index=1)
    assert not {s.key for _ in range(5) for s in next(stream)["specs"]} & (val | test)
    # the check has power: the same draws without the exclusion hit both sets
    raw = [sample_spec(np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_TAG, i])), config).key
           for i in range(n)]
    assert sum(k in val for k in raw) >= 2 and sum(k in test for k in raw) >= 2


def test_split_take_batch_and_errors():
    test = report_split(TINY, "test")
    assert test.take() == test.specs and test.take(3) == test.specs[:3]
    with pytest.raises(ValueError, match="test split of 'toy-tiny-5x16x16' has 128 prompts; asked for 129"):
        test.take(129)
    with pytest.raises(ValueError, match="has 32 prompts; asked for 0"):
        validation_split(TINY).take(0)
    with pytest.raises(ValueError, match="unknown prompt split 'train'"):
        report_split(TINY, "train")
    b = test.batch()
    assert b["latents"].shape == (128, 4, 5, 16, 16) and b["latents"].dtype == np.float32
    assert b["captions"] == [s.caption for s in test.specs] and b["text_emb"].shape[0] == 128


def test_require_validation_refuses_the_test_split():
    assert require_validation(validation_split(TINY)).name == "validation"
    with pytest.raises(TypeError, match="read only the validation split, got the test split"):
        require_validation(report_split(TINY, "test"))
    with pytest.raises(TypeError, match="got tuple"):
        require_validation(heldout_specs(TINY))


def test_config_rejects_bad_test_split_settings():
    with pytest.raises(ValueError, match="num_test must be >= 1"):
        dataclasses.replace(TINY, num_test=0)
    with pytest.raises(ValueError, match="test_seed and heldout_seed"):
        dataclasses.replace(TINY, test_seed=TINY.heldout_seed)
