"""Distilled students: the ``student.json`` beside a student's weights says how it samples (consistency jumps at
its segment edges, no CFG because the teacher's guidance is baked in, and for a sparse student one tile mask per
layer in ``mask_schedule.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from jax_vdit import sampling
from jax_vdit.model import DENSE, AttentionConfig

STUDENT_FILE = "student.json"  # how a distilled student samples: {"sampler": "consistency", "edges": [...], ...}
MASK_SCHEDULE_FILE = "mask_schedule.json"
# a model folder's data-domain record ({"world": ...}: the toy world of a toy model), carried from teacher to students
DOMAIN_FILE = "toy_world.json"


@dataclass(frozen=True)
class Student:
    """A distilled student ready to sample: its model, its consistency plan (no CFG) and its attention."""

    model: object
    plan: sampling.SamplingPlan
    attention: AttentionConfig
    info: dict


def write_student_info(folder: str | Path, *, edges, guidance_distilled: float | None, teacher: str,
                       mask_schedule: bool, extra: dict | None = None) -> Path:
    """``student.json`` beside an exported student: the sampler it was distilled for (consistency jumps at the
    segment ``edges``; sampled without CFG because the teacher's guidance ``guidance_distilled`` is baked in)."""
    info = {"sampler": "consistency", "edges": [int(e) for e in edges], "guidance": None,
            "guidance_distilled": guidance_distilled, "teacher": teacher, "mask_schedule": bool(mask_schedule)}
    path = Path(folder) / STUDENT_FILE
    path.write_text(json.dumps(info | (extra or {}), indent=2) + "\n")
    return path


def is_student_folder(path: str | Path) -> bool:
    """Whether ``path`` is a distilled student folder (holds ``student.json``)."""
    return (Path(path) / STUDENT_FILE).is_file()


def read_student_info(path: str | Path) -> dict:
    """The checked ``student.json`` of a student folder: a consistency sampler with integer segment edges that
    start at 0, ``guidance`` None (distilled), and ``mask_schedule.json`` present when it says the student is
    sparse. Adds ``"mask_schedule_file"`` (its path, or None)."""
    path = Path(path)
    info_path = path / STUDENT_FILE
    if not info_path.is_file():
        raise FileNotFoundError(f"{path} has no {STUDENT_FILE}: not a distilled student folder (see distill_toy.py)")
    info = json.loads(info_path.read_text())
    edges = info.get("edges")
    if info.get("sampler") != "consistency" or not edges:
        raise ValueError(f"{info_path}: expected a consistency sampler with segment edges, got {info}")
    if not all(isinstance(e, int) for e in edges) or sorted(edges)[0] != 0:
        raise ValueError(f"{info_path}: edges must be integers starting at 0, got {edges}")
    if info.get("guidance") not in (None, 1, 1.0):
        raise ValueError(f"{info_path}: a distilled student samples without CFG (guidance null), got "
                         f"{info.get('guidance')!r}")
    schedule = None
    if info.get("mask_schedule"):
        schedule = path / MASK_SCHEDULE_FILE
        if not schedule.is_file():
            raise FileNotFoundError(f"{info_path} says the student is sparse but {schedule} is missing")
    return info | {"mask_schedule_file": None if schedule is None else str(schedule)}


def load_student(path: str | Path, compute_dtype: str = "float32", tile_backend: str = "auto",
                 num_frames: int | None = None, param_dtype: str = "float32") -> Student:
    """A student folder written by ``experiments/distill_toy.py``: release-format weights, ``student.json``, and
    for a sparse student ``mask_schedule.json`` (one tile mask per layer, run through ``tile_backend``, checked
    against ``num_frames`` latent frames, default the model's ``sample_size_t``)."""
    from jax_vdit.model.attention import attention_from_spec
    from jax_vdit.io import load_model

    path = Path(path)
    info = read_student_info(path)
    model = load_model(path, param_dtype=param_dtype, compute_dtype=compute_dtype)
    attention = DENSE
    if info["mask_schedule_file"]:
        frames = num_frames or model.cfg.sample_size_t
        attention = attention_from_spec(info["mask_schedule_file"], model.cfg.num_layers, frames,
                                        tile_backend=tile_backend)
    return Student(model, sampling.consistency(info["edges"]), attention, info)
