"""The toy wing: a procedural text-to-video world (``world``) in which the whole method is trained and judged end to
end at CPU size, its recipes (teacher pre-training and the three-stage distillation), ToyBench sampling and
scoring, the shipped toy models, and the demo.

* ``world``: scenes, rendering to latents, the text stand-in, validation and test prompt splits, ToyBench metrics
  (pure NumPy).
* ``models``: the shipped teacher and students (``assets/``), world records, release-format export.
* ``bench``: sample prompts with any sampler and score them (one noise seed, or mean +/- sd over several).
* ``recipes``: :class:`TeacherRecipe` / :func:`train_teacher`, :class:`DistillRecipe` / :func:`distill_mlcd` /
  :func:`distill_sparse`.
* ``demo``: ``vdit demo``.
"""

from jax_vdit.student import STUDENT_FILE, Student, write_student_info
from jax_vdit.toy.bench import encode_specs, heldout, sample_specs, toybench
from jax_vdit.toy.models import (
    ASSETS,
    DEFAULT_WORLD,
    TOY_STUDENT_MLCD_DIR,
    TOY_STUDENT_SPARSE_DIR,
    TOY_TEACHER_DIR,
    WORLD_FILE,
    export_release_folder,
    load_toy_student,
    load_toy_teacher,
    recorded_world,
    world_for,
    write_world_record,
)
from jax_vdit.toy.recipes import (
    BEST_EMA,
    DistillRecipe,
    TeacherCheck,
    TeacherRecipe,
    calibration_batches,
    distill_mlcd,
    distill_sparse,
    train_teacher,
)

__all__ = [
    "ASSETS", "BEST_EMA", "DEFAULT_WORLD", "STUDENT_FILE", "TOY_STUDENT_MLCD_DIR", "TOY_STUDENT_SPARSE_DIR",
    "TOY_TEACHER_DIR", "WORLD_FILE", "DistillRecipe", "Student", "TeacherCheck", "TeacherRecipe",
    "calibration_batches", "distill_mlcd", "distill_sparse", "encode_specs", "export_release_folder", "heldout",
    "load_toy_student", "load_toy_teacher", "recorded_world", "sample_specs", "toybench", "train_teacher",
    "world_for", "write_student_info", "write_world_record",
]
