"""Research presets of the toy-teacher studies, kept out of the product's preset tables.

:func:`register` adds them back to ``jax_vdit.config.PRESETS`` / ``PRESET_LATENT_SHAPES`` (model presets) and
``jax_vdit.toy.world.config.PRESETS`` (toy worlds), so that ``get_preset`` / ``get_config`` and the tools that read a
model's recorded world (``toy_world.json``) find them. Calling it again changes nothing. The definitions are the
ones the recorded runs used (``experiments/results/toy_teacher/``, ``experiments/studies/README.md``).

Model presets:

* ``toy-teacher-deep``: the toy teacher with 10 layers instead of 6, same width (more layers to compose "which
  frame" with "which way" for the direction of motion).
* ``toy-teacher-hd96``: the release's head dim (96) at the toy teacher's width (2 heads x 96 = 192): 16 rotary
  frequencies per axis instead of 8 (prepared, never trained).

Toy worlds (the same scenes, layouts and held-out set as their base, with latent frame 0 marked through
``first_frame_offset``, in raw units of channel 3):

* ``toy-9x24x24-anchored``: a mark of 0.5 (1.16 latent std).
* ``toy-9x24x24-anchored-strong``: a mark of 2.0 (4.6 latent std): the mean over a frame's 144 tokens shows it at
  2 sigma up to t = 800 and at 4.6 sigma at t = 700; the 1.16-std mark reaches 2 sigma only below t ~ 600.
* ``toy-tiny-5x16x16-anchored``: the small unit-test world with a mark of 0.5.
"""

from __future__ import annotations

import dataclasses

from jax_vdit import config as model_config
from jax_vdit.toy.world import config as world_config

MODEL_PRESETS = {
    # name: (base preset, fields replaced)
    "toy-teacher-deep": ("toy-teacher", {"num_layers": 10}),
    "toy-teacher-hd96": ("toy-teacher", {"num_attention_heads": 2, "attention_head_dim": 96}),
}

WORLD_PRESETS = {
    # name: (base world, fields replaced; the name is set to the key)
    "toy-9x24x24-anchored": ("toy-9x24x24", {"first_frame_offset": 0.5}),
    "toy-9x24x24-anchored-strong": ("toy-9x24x24", {"first_frame_offset": 2.0}),
    "toy-tiny-5x16x16-anchored": ("toy-tiny-5x16x16", {"first_frame_offset": 0.5}),
}


def register() -> None:
    """Add the research presets to the product's preset tables (idempotent)."""
    for name, (base, changes) in MODEL_PRESETS.items():
        if name not in model_config.PRESETS:
            model_config.PRESETS[name] = model_config.PRESETS[base].replace(**changes)
        model_config.PRESET_LATENT_SHAPES.setdefault(name, model_config.PRESET_LATENT_SHAPES[base])
    for name, (base, changes) in WORLD_PRESETS.items():
        if name not in world_config.PRESETS:
            world_config.PRESETS[name] = dataclasses.replace(world_config.PRESETS[base], name=name, **changes)
