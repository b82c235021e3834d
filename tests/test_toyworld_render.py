"""Renderer: latents -> RGB inverts the colour encoding; GIF grids are written and readable."""

from __future__ import annotations

import numpy as np
import pytest

from jax_vdit.toy.world import COLOUR_RGB, get_config, heldout_batch, latents_to_rgb, save_grid_gif, video_grid
from jax_vdit.toy.world.data import render_raw, sample_scene
from jax_vdit.toy.world.encoding import opponent_to_rgb, raw_to_latent, rgb_to_opponent
from jax_vdit.toy.world.shapes import shape_alpha

CFG = get_config("toy-9x24x24")


def test_opponent_transform_is_exactly_invertible():
    rgb = np.random.default_rng(0).random((100, 3))
    np.testing.assert_allclose(opponent_to_rgb(rgb_to_opponent(rgb)), rgb, atol=1e-12)


def test_rendered_object_colour_matches_its_spec_colour():
    checked = 0
    for i in range(40):
        spec, layout = sample_scene(np.random.default_rng(np.random.SeedSequence([8, i])), CFG)
        lat = raw_to_latent(render_raw(spec, layout, CFG), CFG)
        frames = latents_to_rgb(lat, CFG, scale=3)  # (T, 72, 72, 3)
        assert frames.shape == (9, 72, 72, 3) and frames.dtype == np.uint8
        for k, obj in enumerate(spec.objects):
            pos = layout.positions[k]
            alpha = shape_alpha(obj.shape, pos[:, 0], pos[:, 1], 24, 24, CFG.object_size)
            t, y, x = np.nonzero(alpha >= 1.0)  # fully covered pixels (not occluded: objects stay apart)
            assert t.size > 0
            got = frames[t, 3 * y + 1, 3 * x + 2].astype(np.float64)  # any pixel of the 3 x 3 upscaled block
            want = np.array(COLOUR_RGB[obj.colour]) * 255.0
            assert np.abs(got - want).max() <= 1.0, (obj.colour, got.mean(0), want)
            checked += 1
    assert checked >= 40


def test_latents_to_rgb_shapes_and_errors():
    x = np.zeros((2, 4, 9, 24, 24), np.float32)
    assert latents_to_rgb(x, CFG).shape == (2, 9, 24, 24, 3)
    assert latents_to_rgb(x[0], CFG, scale=2).shape == (9, 48, 48, 3)
    with pytest.raises(ValueError, match="4, T, H, W"):
        latents_to_rgb(np.zeros((2, 3, 9, 24, 24)), CFG)


def test_save_grid_gif_roundtrip(tmp_path):
    import imageio.v3 as iio

    tiny = get_config("toy-tiny-5x16x16")
    b = heldout_batch(tiny)
    path = save_grid_gif(b["latents"][:5], tmp_path / "sub" / "grid.gif", b["captions"][:5], fps=5, config=tiny,
                         scale=4)
    assert path.exists() and not [p for p in path.parent.iterdir() if p.name != "grid.gif"]  # no temp files left
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 5 and frames.shape[-1] in (3, 4)
    grid = video_grid(b["latents"][:5], b["captions"][:5], config=tiny, scale=4)
    assert frames.shape[1:3] == grid.shape[1:3]
    assert iio.immeta(path)["duration"] == 200
    # frames differ over time (things move), captions drawn under tiles
    assert not np.array_equal(grid[0], grid[-1])
    with pytest.raises(ValueError, match=".gif"):
        save_grid_gif(b["latents"][:1], tmp_path / "x.mp4", config=tiny)
    with pytest.raises(ValueError, match="captions"):
        video_grid(b["latents"][:2], ["one"], config=tiny)
