"""Toy world generator: determinism, resumable sharded stream, held-out exclusion, latent statistics, geometry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jax_vdit.toy.world import (
    ObjectSpec,
    SceneSpec,
    ToyWorldConfig,
    ToyWorldStream,
    get_config,
    heldout_batch,
    heldout_keys,
    heldout_specs,
    make_sample,
    parse_caption,
    render_spec,
    sample_spec,
)
from jax_vdit.toy.world.data import _STREAM_TAG, sample_scene
from jax_vdit.toy.world.shapes import shape_alpha

DEFAULT = get_config("toy-9x24x24")
TINY = get_config("toy-tiny-5x16x16")


def test_presets_shapes_and_token_grid():
    assert DEFAULT.latent_shape == (4, 9, 24, 24)
    # patch 2 -> 12 x 12 = 144 tokens per frame: deliberately not a multiple of 128
    assert (DEFAULT.height // 2) * (DEFAULT.width // 2) == 144
    assert TINY.latent_shape == (4, 5, 16, 16)
    assert len(DEFAULT.shapes) >= 3 and len(DEFAULT.colours) >= 4
    with pytest.raises(ValueError, match="unknown toy-world preset"):
        get_config("nope")


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("num_frames", 2, "num_frames"),
        ("colours", ("red", "mauve"), "unknown colour 'mauve'"),
        ("speeds", (("quickly", 1.25), ("slowly", 0.5)), "ascending"),
        ("max_text_len", 8, "max_text_len"),
        ("speeds", (("slowly", 0.5), ("quickly", 4.0)), "fit between walls"),
    ],
)
def test_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(DEFAULT, **{field: value})


@pytest.mark.parametrize("config", [DEFAULT, TINY], ids=lambda c: c.name)
def test_same_seed_and_index_give_identical_samples(config):
    for i in (0, 7, 123):
        x1, s1 = make_sample(config, i)
        x2, s2 = make_sample(config, i)
        assert x1.dtype == np.float32 and x1.shape == config.latent_shape
        np.testing.assert_array_equal(x1, x2)
        assert s1 == s2 and s1.caption == s2.caption
    # different indices and different seeds give different videos
    x0, _ = make_sample(config, 0)
    x1, _ = make_sample(config, 1)
    y0, _ = make_sample(config, 0, seed=config.seed + 1)
    assert not np.allclose(x0, x1)
    assert not np.allclose(x0, y0)
    other = [make_sample(config, i, seed=99)[1].caption for i in range(20)]
    ours = [make_sample(config, i)[1].caption for i in range(20)]
    assert other != ours


def test_spec_caption_grammar_and_parse_roundtrip():
    spec = SceneSpec(
        (ObjectSpec("square", "blue", "up-right", "slowly", True), ObjectSpec("triangle", "green", None, "static")),
        "textured",
    )
    assert spec.caption == "a blue square bouncing up-right slowly and a green triangle standing still"
    assert parse_caption(spec.caption, DEFAULT, background="textured") == spec
    assert SceneSpec((ObjectSpec("circle", "red", "left", "quickly"),)).caption == "a red circle moving left quickly"
    assert hash(spec) == hash(parse_caption(spec.caption, DEFAULT, background="textured"))
    # every sampled spec round-trips through its caption
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = sample_spec(rng, DEFAULT)
        assert parse_caption(s.caption, DEFAULT, s.background) == s
        assert len(s.caption.split()) <= DEFAULT.max_text_len - 1
    with pytest.raises(ValueError, match="distinct colours"):
        SceneSpec((ObjectSpec("circle", "red", None, "static"), ObjectSpec("ring", "red", None, "static")))
    with pytest.raises(ValueError, match="direction must be None"):
        ObjectSpec("circle", "red", "left", "static")
    with pytest.raises(ValueError, match="unknown speed word"):
        parse_caption("a red circle moving left slowlyish", DEFAULT)


def test_scene_variety():
    specs = [make_sample(DEFAULT, i)[1] for i in range(400)]
    objs = [o for s in specs for o in s.objects]
    assert {o.shape for o in objs} == set(DEFAULT.shapes)
    assert {o.colour for o in objs} == set(DEFAULT.colours)
    assert {o.direction for o in objs if o.moving} == set(DEFAULT.directions)
    assert {o.speed for o in objs} == {"static", "slowly", "quickly"}
    assert any(o.bounce for o in objs) and any(o.moving and not o.bounce for o in objs)
    n_two = sum(len(s.objects) == 2 for s in specs)
    assert 0.2 < n_two / len(specs) < 0.5  # p_two_objects = 0.35
    assert {s.background for s in specs} == {"plain", "textured"}


def test_objects_stay_in_frame_and_apart_and_bounce_as_specified():
    for i in range(150):
        rng = np.random.default_rng(np.random.SeedSequence([5, _STREAM_TAG, i]))
        spec, layout = sample_scene(rng, DEFAULT)
        pos = layout.positions  # (K, T, 2)
        if len(spec.objects) == 2:
            assert np.linalg.norm(pos[0] - pos[1], axis=-1).min() >= DEFAULT.min_separation - 1e-9
        for k, obj in enumerate(spec.objects):
            alpha = shape_alpha(obj.shape, pos[k, :, 0], pos[k, :, 1], 40, 40, DEFAULT.object_size)
            # nothing of the object may fall outside the 24 x 24 frame
            assert alpha[:, 24:, :].max() == 0 and alpha[:, :, 24:].max() == 0
            assert pos[k].min() > 0
            steps = np.diff(pos[k], axis=0)
            if not obj.bounce:  # constant velocity of the spec's speed (0 for static objects)
                speed = DEFAULT.speed_values[obj.speed]
                np.testing.assert_allclose(np.linalg.norm(steps, axis=1), speed, atol=1e-9, rtol=0.0)
            reversed_axis = np.any(steps[:-1] * steps[1:] < -1e-12)
            assert reversed_axis == obj.bounce, spec.caption
            if obj.bounce:
                lo, hi = (f * (DEFAULT.num_frames - 1) for f in DEFAULT.bounce_window)
                assert lo <= layout.bounce_times[k] <= hi


def test_shapes_are_placed_by_centroid_and_move_smoothly():
    for shape in DEFAULT.shapes:
        xs = 10.0 + np.linspace(0.0, 1.0, 11)
        a = shape_alpha(shape, xs, np.full(11, 11.3), 24, 24, 4.0)
        cx = (a * np.arange(24)[None, None, :]).sum((1, 2)) / a.sum((1, 2))
        cy = (a * np.arange(24)[None, :, None]).sum((1, 2)) / a.sum((1, 2))
        np.testing.assert_allclose(cx, xs, atol=0.1, err_msg=shape)
        np.testing.assert_allclose(cy, 11.3, atol=0.1, err_msg=shape)
        # a 0.1 px move changes every pixel by at most 0.1 / edge_width (anti-aliased, no popping)
        assert np.abs(np.diff(a, axis=0)).max() <= 0.1 + 1e-9
        # the area stays constant while moving
        assert a.sum((1, 2)).std() / a.sum((1, 2)).mean() < 0.01


@pytest.mark.parametrize(
    "config", [DEFAULT, TINY, get_config("toy-sign-5x16x16"), get_config("toy-sign-9x24x24-subframe")],
    ids=lambda c: c.name,
)
def test_latents_are_roughly_standardised(config):
    x = np.stack([make_sample(config, i, seed=1)[0] for i in range(300)])
    mean = x.mean(axis=(0, 2, 3, 4))
    std = x.std(axis=(0, 2, 3, 4))
    assert np.all(np.abs(mean) < 0.15), mean
    assert np.all((std > 0.85) & (std < 1.15)), std
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 8


def test_stream_batches_are_pure_functions_of_step_and_resume():
    s = ToyWorldStream(TINY, batch_size=4)
    first = [next(s) for _ in range(4)]
    assert s.state_dict()["step"] == 4
    b = first[0]
    assert b["latents"].shape == (4, 4, 5, 16, 16) and b["latents"].dtype == np.float32
    assert b["text_emb"].shape == (4, TINY.max_text_len, TINY.caption_channels) and b["text_emb"].dtype == np.float32
    assert b["text_mask"].shape == (4, TINY.max_text_len) and b["text_mask"].dtype == np.int32
    assert b["captions"] == [sp.caption for sp in b["specs"]]
    resumed = ToyWorldStream(TINY, batch_size=4, start_step=2)
    for want in first[2:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["latents"], want["latents"])
        np.testing.assert_array_equal(got["text_emb"], want["text_emb"])
        assert got["captions"] == want["captions"] and got["step"] == want["step"]
    restored = ToyWorldStream(TINY, batch_size=4)
    restored.load_state_dict({"step": 3})
    np.testing.assert_array_equal(next(restored)["latents"], first[3]["latents"])
    with pytest.raises(ValueError, match="batch_size"):
        restored.load_state_dict({"step": 1, "batch_size": 8})


def test_stream_sharding_is_disjoint_and_covers_the_global_batch():
    workers = [ToyWorldStream(TINY, batch_size=3, worker_index=w, num_workers=2) for w in range(2)]
    for step in (0, 5):
        idx = [w.indices(step) for w in workers]
        assert not set(idx[0]) & set(idx[1])
        assert sorted(np.concatenate(idx)) == list(range(step * 6, step * 6 + 6))
    b0, b1 = workers[0].batch(1), workers[1].batch(1)
    assert not np.allclose(b0["latents"], b1["latents"])
    # a worker's sample equals the stand-alone sample of the same global index
    np.testing.assert_array_equal(b1["latents"][2], make_sample(TINY, int(b1["indices"][2]))[0])
    with pytest.raises(ValueError, match="worker_index"):
        ToyWorldStream(TINY, 2, worker_index=2, num_workers=2)


def test_caption_dropout_encodes_empty_caption():
    s = ToyWorldStream(TINY, batch_size=16, caption_dropout=0.5)
    b = s.batch(0)
    assert 0 < b["dropped"].sum() < 16
    for cap, drop, m in zip(b["captions"], b["dropped"], b["text_mask"]):
        assert (cap == "") == drop
        assert (m.sum() == 1) == drop
    np.testing.assert_array_equal(b["dropped"], s.batch(0)["dropped"])
    assert ToyWorldStream(TINY, batch_size=8, caption_dropout=1.0).batch(0)["text_mask"].sum() == 8


@pytest.mark.parametrize("config", [DEFAULT, TINY], ids=lambda c: c.name)
def test_heldout_specs_never_appear_in_training_stream(config):
    held = heldout_specs(config)
    assert len(held) == config.num_heldout == 32
    assert len({s.key for s in held}) == 32
    assert held == heldout_specs(dataclasses.replace(config, seed=123))  # independent of the training seed
    keys = heldout_keys(config)
    stream = ToyWorldStream(config, batch_size=64)
    n = 0
    for _ in range(25):  # 1600 samples
        b = next(stream)
        for s in b["specs"]:
            assert s.key not in keys, s.caption
            assert s.caption not in {h.caption for h in held}
            n += 1
    # the check has power: without the exclusion the same draws would hit held-out prompts
    hits = 0
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_TAG, i]))
        hits += sample_spec(rng, config).key in keys
    assert hits >= 5, hits


def test_heldout_batch_and_render_spec():
    b = heldout_batch(TINY)
    assert b["latents"].shape == (32, 4, 5, 16, 16)
    assert [s.caption for s in b["specs"]] == b["captions"]
    np.testing.assert_array_equal(b["latents"], heldout_batch(TINY)["latents"])
    spec = b["specs"][0]
    x1, lay1 = render_spec(spec, TINY, seed=3)
    x2, _ = render_spec(spec, TINY, seed=3)
    x3, _ = render_spec(spec, TINY, seed=4)
    np.testing.assert_array_equal(x1, x2)
    assert not np.allclose(x1, x3)
    assert lay1.positions.shape == (len(spec.objects), 5, 2)


def test_config_is_hashable_and_frozen():
    assert hash(DEFAULT) == hash(get_config())
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.seed = 3  # type: ignore[misc]
    assert isinstance(DEFAULT, ToyWorldConfig)


def test_subframe_world_shows_the_direction_of_motion_inside_each_frame():
    """``objectness_lead``: channel 3 shows each object half a frame later than the colour channels, so one frame
    tells which way the object moves (and a time-reversed clip is not a clip of this world); same scenes."""
    from jax_vdit.toy.world.data import render_raw, sample_layout
    from jax_vdit.toy.world.spec import ObjectSpec, SceneSpec

    spec = SceneSpec((ObjectSpec("circle", "red", "right", "quickly"),), "plain")
    leads = {}
    for name in ("toy-9x24x24", "toy-9x24x24-subframe"):
        world = get_config(name)
        layout = sample_layout(spec, np.random.default_rng(5), world)
        raw = render_raw(spec, layout, world)
        xs = np.arange(world.width, dtype=np.float64)

        def centroid(channel):
            wgt = np.abs(raw[channel] - layout.background[channel][None])
            return (wgt * xs).sum(axis=(1, 2)) / wgt.sum(axis=(1, 2))

        leads[name] = centroid(3) - centroid(1)  # objectness centre minus red-green centre, per frame
    np.testing.assert_allclose(leads["toy-9x24x24"], 0.0, atol=1e-6)
    speed = dict(get_config("toy-9x24x24-subframe").speeds)["quickly"]
    np.testing.assert_allclose(leads["toy-9x24x24-subframe"], 0.5 * speed, atol=0.05)
    with pytest.raises(ValueError, match="objectness_lead"):
        get_config("toy-9x24x24", objectness_lead=1.5)
