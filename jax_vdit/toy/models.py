"""The shipped toy models and their folders: where they live, the toy world each was trained on, release-format
export, and loading a teacher or a distilled student."""

from __future__ import annotations

import json
from pathlib import Path


from jax_vdit.student import DOMAIN_FILE, Student, load_student
from jax_vdit.toy.world import ToyWorldConfig, get_config

ASSETS = Path(__file__).parent / "assets"
TOY_TEACHER_DIR = ASSETS / "toy_teacher"
TOY_STUDENT_MLCD_DIR = ASSETS / "toy_student_mlcd"  # 4-step consistency student of the shipped teacher
TOY_STUDENT_SPARSE_DIR = ASSETS / "toy_student_sparse"  # the same after mask search + KD into tile attention
WORLD_FILE = DOMAIN_FILE  # {"world": <ToyWorldConfig preset>}: the world a toy model's weights were trained on
DEFAULT_WORLD = "toy-9x24x24"


def write_world_record(folder: str | Path, world: str) -> None:
    """Record in a teacher or student folder the toy-world preset its weights were trained on."""
    get_config(world)  # an unknown preset raises here, not when the folder is read back
    (Path(folder) / WORLD_FILE).write_text(json.dumps({"world": world}) + "\n")


def recorded_world(folder: str | Path) -> str | None:
    """The toy-world preset recorded in ``folder`` (None for folders written before worlds were recorded)."""
    path = Path(folder) / WORLD_FILE
    return json.loads(path.read_text())["world"] if path.is_file() else None


def world_for(folder: str | Path, requested: str | None = None) -> ToyWorldConfig:
    """The toy world in which to sample and score the model in ``folder``: the recorded one. ``requested`` (e.g. a
    ``--world`` flag) must agree with the record: a model scored in another world than its own gets wrong scores
    (e.g. the first-frame mark of ``toy-9x24x24-anchored`` read as content). Unrecorded folders use ``requested``,
    else the default world."""
    recorded = recorded_world(folder)
    if recorded is not None and requested is not None and requested != recorded:
        raise ValueError(f"{folder} was trained on the toy world {recorded!r} ({WORLD_FILE}), not {requested!r}: "
                         f"drop --world or pass --world {recorded}")
    return get_config(recorded or requested or DEFAULT_WORLD)


def export_release_folder(model, folder: str | Path, *, dtype: str = "bfloat16", world: str | None = None) -> Path:
    """Write ``model`` as a release-format folder (config.json + diffusion_pytorch_model.safetensors), plus the
    toy world it was trained on (``toy_world.json``) when ``world`` is given."""
    from jax_vdit.io.release import write_release_folder

    folder = write_release_folder(model, folder, dtype=dtype)
    if world is not None:
        write_world_record(folder, world)
    return folder


def load_toy_teacher(path: str | Path | None = None, compute_dtype: str = "float32"):
    """The shipped toy teacher (or another checkpoint trained by :func:`train_teacher`)."""
    from jax_vdit.io import load_model

    path = Path(path) if path else TOY_TEACHER_DIR
    if not path.exists():
        raise FileNotFoundError(
            f"no toy teacher at {path}; train one with `vdit train-teacher` (see README) or pass --teacher"
        )
    return load_model(path, param_dtype="float32", compute_dtype=compute_dtype)




def load_toy_student(path: str | Path, compute_dtype: str = "float32", tile_backend: str = "auto",
                     num_frames: int | None = None) -> Student:
    """A toy student folder (see :func:`jax_vdit.student.load_student`)."""
    return load_student(path, compute_dtype=compute_dtype, tile_backend=tile_backend, num_frames=num_frames)
