"""Named clip sizes of the Open-Sora-Plan v1.2 checkpoints: ``<frames>x<height>p`` -> (frames, height, width)."""

from __future__ import annotations

SIZE_PRESETS: dict[str, tuple[int, int, int]] = {
    "1x480p": (1, 480, 640),
    "1x720p": (1, 720, 1280),
    "29x480p": (29, 480, 640),
    "29x720p": (29, 720, 1280),
    "93x480p": (93, 480, 640),
    "93x720p": (93, 720, 1280),
}
"""720p is 1280 x 720 and 480p is 640 x 480, as in the release's training stages."""


def size_preset(name: str) -> tuple[int, int, int]:
    """(frames, height, width) of a named size; unknown names raise ValueError listing the known ones."""
    try:
        return SIZE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown size preset {name!r}; known: {', '.join(SIZE_PRESETS)}") from None

TILING_CHOICES = ("sample-script", "save-memory", "class-default", "none")
"""VAE tiling presets (:data:`jax_vdit.data.latents.TILING_PRESETS`): the release sample scripts' 512/64/29/8, the
``--save_memory`` 256/32/29/8, the class defaults 256/32/33/16, or untiled."""
POSTERIOR_CHOICES = ("sample", "mean")
DTYPE_CHOICES = ("float16", "bfloat16", "float32")
