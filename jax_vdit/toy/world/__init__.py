"""A small procedural text-to-video world in which the whole method (teacher training, few-step consistency
distillation, sparse attention) can be trained and judged end to end on a CPU-sized budget.

* ``config``: :class:`ToyWorldConfig` and presets (``"toy-9x24x24"`` default, ``"toy-tiny-5x16x16"`` for tests).
* ``spec``: :class:`SceneSpec` / :class:`ObjectSpec` (hashable scene descriptions) and captions.
* ``data``: rendering to 4-channel latents (C=4, T, H, W), the resumable sharded :class:`ToyWorldStream`, the
  reserved validation and test prompt sets (never in the stream).
* ``splits``: those two sets as typed splits (:func:`validation_split` for selection, :func:`report_split` for
  final reports).
* ``text``: deterministic mT5 stand-in (word table + position code, EOS, padding mask).
* ``toybench``: metrics parsed back from generated latent videos; ``teacher_error``; ``format_table``.
* ``render``: latents -> RGB frames, animated GIF grids.
* ``calibrate``: latent statistics and metric-resolution report (``python -m jax_vdit.toy.world.calibrate``).

Pure NumPy; no JAX needed.
"""

from .config import COLOUR_RGB, DIRECTION_VECTORS, PRESETS, STATIC, ToyWorldConfig, get_config
from .data import (
    SceneLayout,
    ToyWorldStream,
    generate_dataset,
    heldout_batch,
    heldout_keys,
    heldout_specs,
    make_sample,
    render_raw,
    reserved_keys,
    scenes_batch,
    render_spec,
    sample_scene,
    sample_spec,
)
from .encoding import latent_to_raw, raw_to_latent
from .render import latents_to_rgb, save_grid_gif, video_grid
from .splits import SPLIT_NAMES, PromptSplit, ValidationSplit, report_split, require_validation, validation_split
from .spec import ObjectSpec, SceneSpec, caption_vocabulary, parse_caption
from .text import ToyTextEncoder, encode_captions, tokenize, vocabulary
from .toybench import direction_confusion, evaluate, format_table, teacher_error

__all__ = [
    "COLOUR_RGB",
    "DIRECTION_VECTORS",
    "PRESETS",
    "PromptSplit",
    "SPLIT_NAMES",
    "STATIC",
    "ObjectSpec",
    "SceneLayout",
    "SceneSpec",
    "ToyTextEncoder",
    "ToyWorldConfig",
    "ToyWorldStream",
    "ValidationSplit",
    "caption_vocabulary",
    "encode_captions",
    "direction_confusion",
    "evaluate",
    "format_table",
    "generate_dataset",
    "get_config",
    "heldout_batch",
    "heldout_keys",
    "heldout_specs",
    "latent_to_raw",
    "latents_to_rgb",
    "make_sample",
    "parse_caption",
    "raw_to_latent",
    "render_raw",
    "render_spec",
    "report_split",
    "require_validation",
    "reserved_keys",
    "sample_scene",
    "sample_spec",
    "save_grid_gif",
    "scenes_batch",
    "teacher_error",
    "tokenize",
    "validation_split",
    "video_grid",
    "vocabulary",
]
