"""The 4-channel latent encoding of the toy world and its (approximate) inverse.

Raw channels (per pixel, before normalisation), for linear RGB ``(R, G, B)`` in [0, 1]:

====  ==============  =======================================================
ch    name            definition
====  ==============  =======================================================
0     luma            ``L = (R + G + B) / 3``
1     red-green       ``A = R - G``
2     yellow-blue     ``Bc = (R + G) / 2 - B``
3     objectness      ``config.object_x`` on objects, ``config.background_x`` (+ static texture) on the background
====  ==============  =======================================================

Channels 0-2 are an opponent colour space (exactly invertible to RGB); channel 3 plays the role of a
luminance/texture-like detail channel that marks where objects are. Objects are opaque and alpha-composited over
the background, so every raw channel is ``(1 - alpha) * background + alpha * object``.

With ``config.first_frame_offset`` != 0, channel 3 of time index 0 carries that extra raw offset in the latent (a
marked first frame, like the CausalVAE's separately encoded first frame); :func:`latent_to_raw` removes it again.

The latent is ``(raw - config.channel_mean) / config.channel_std`` per channel, which makes a video roughly
zero-mean and unit-variance per channel (like Open-Sora-Plan latents times the VAE scale factor). The channel axis
is axis -4 of any ``(..., 4, T, H, W)`` array.
"""

from __future__ import annotations

import numpy as np

from .config import COLOUR_RGB, ToyWorldConfig


def rgb_to_opponent(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) linear RGB -> (..., 3) (luma, red-green, yellow-blue)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([(r + g + b) / 3.0, r - g, (r + g) / 2.0 - b], axis=-1)


def opponent_to_rgb(opp: np.ndarray) -> np.ndarray:
    """(..., 3) (luma, red-green, yellow-blue) -> (..., 3) linear RGB (unclipped); exact inverse of rgb_to_opponent."""
    opp = np.asarray(opp, dtype=np.float64)
    lum, a, bc = opp[..., 0], opp[..., 1], opp[..., 2]
    rg = 2.0 * lum + 2.0 * bc / 3.0  # R + G
    return np.stack([(rg + a) / 2.0, (rg - a) / 2.0, lum - 2.0 * bc / 3.0], axis=-1)


def colour_raw(colour: str, config: ToyWorldConfig) -> np.ndarray:
    """Raw 4-vector (luma, red-green, yellow-blue, objectness) of an object of the named colour. (4,) float64."""
    if colour not in COLOUR_RGB:
        raise ValueError(f"unknown colour {colour!r}; known: {tuple(COLOUR_RGB)}")
    return np.concatenate([rgb_to_opponent(np.array(COLOUR_RGB[colour])), [config.object_x]])


def colour_table(config: ToyWorldConfig) -> np.ndarray:
    """(len(config.colours), 3) float64: opponent coordinates of the config's colours, in config order."""
    return np.stack([colour_raw(c, config)[:3] for c in config.colours])


def _normalisation(x: np.ndarray, config: ToyWorldConfig) -> tuple[np.ndarray, np.ndarray]:
    """(shift (4, T, 1, 1), std (4, 1, 1, 1)) float64 with latent = (raw - shift) / std for a (..., 4, T, H, W)
    array: shift is the channel mean, less the first-frame mark at time index 0 of channel 3."""
    if x.ndim < 4 or x.shape[-4] != 4:
        raise ValueError(f"expected a (..., 4, T, H, W) array with 4 channels on axis -4, got shape {x.shape}")
    shift = np.repeat(np.asarray(config.channel_mean, dtype=np.float64).reshape(4, 1, 1, 1), x.shape[-3], axis=1)
    shift[3, 0] -= config.first_frame_offset
    return shift, np.asarray(config.channel_std, dtype=np.float64).reshape(4, 1, 1, 1)


def raw_to_latent(raw: np.ndarray, config: ToyWorldConfig) -> np.ndarray:
    """(..., 4, T, H, W) raw channels -> normalised latents, float32 (time index 0 marked if
    ``config.first_frame_offset``)."""
    raw = np.asarray(raw)
    shift, std = _normalisation(raw, config)
    return ((raw - shift) / std).astype(np.float32)


def latent_to_raw(latents: np.ndarray, config: ToyWorldConfig) -> np.ndarray:
    """(..., 4, T, H, W) normalised latents -> raw channels, float64 (the first-frame mark removed)."""
    lat = np.asarray(latents, dtype=np.float64)
    shift, std = _normalisation(lat, config)
    return lat * std + shift
