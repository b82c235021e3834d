"""libx264's speed presets for the mp4s we write (no heavy imports: the CLI's flags read these names).

A faster preset spends less time searching for a compact encoding, so at the same constant quality setting (CRF
23, the encoder's default) the file is larger while the picture differs little (``experiments/results/mp4_preset/``).
"""

from __future__ import annotations

MP4_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_MP4_PRESET = "veryfast"  # ffmpeg's own default is "medium"


def check_mp4_preset(preset: str) -> str:
    """``preset`` if it is one of libx264's :data:`MP4_PRESETS`; ValueError naming the choices otherwise."""
    if preset not in MP4_PRESETS:
        raise ValueError(f"unknown mp4 preset {preset!r}: one of {', '.join(MP4_PRESETS)}")
    return preset
