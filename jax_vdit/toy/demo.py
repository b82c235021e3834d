"""The demo: the shipped toy teacher and its distilled students sample validation prompts (the original held-out
set) on a CPU, side by side in a GIF grid, with ToyBench scores and timings per row. A showcase, not a report:
honest numbers come from ``vdit toybench`` on the test split.

Rows: the teacher with the release's Euler-ancestral sampler (CFG), the teacher with 4 DDIM steps (the few-step
baseline that distillation must beat), the 4-step consistency (MLCD) student, and the 4-step sparse student (per-layer
tile masks after KD). The students sample without CFG: the teacher's guidance is distilled into them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from jax_vdit.model import DENSE, AttentionConfig
from jax_vdit.records import write_json
from jax_vdit.sampling import SamplingPlan, plan_from_name
from jax_vdit.student import STUDENT_FILE
from jax_vdit.toy.bench import heldout, sample_specs, toybench
from jax_vdit.toy.models import (
    TOY_STUDENT_MLCD_DIR, TOY_STUDENT_SPARSE_DIR, TOY_TEACHER_DIR, load_toy_student, load_toy_teacher, world_for,
)
from jax_vdit.toy.world import format_table, save_grid_gif


@dataclass(frozen=True)
class DemoSetting:
    """One row of the demo: a model, its sampler plan, guidance (None: no CFG) and attention."""

    name: str
    model: object
    plan: SamplingPlan
    guidance: float | None
    attention: AttentionConfig = DENSE


def default_settings(teacher, steps: int, guidance: float,
                     students: dict[str, Path] | None = None) -> list[DemoSetting]:
    """The teacher rows, then one row per student folder (name -> folder; a folder that is not a student raises)."""
    rows = [
        DemoSetting(f"teacher euler-a {steps} steps, cfg {guidance}", teacher, plan_from_name("euler_ancestral", steps),
                    guidance),
        DemoSetting(f"teacher ddim 4 steps, cfg {guidance}", teacher, plan_from_name("ddim", 4), guidance),
    ]
    for name, folder in (students or {}).items():
        student = load_toy_student(folder)
        rows.append(DemoSetting(f"{name} {student.plan.num_steps} steps, no cfg", student.model, student.plan, None,
                                student.attention))
    return rows


SHIPPED_STUDENTS = {"MLCD student": TOY_STUDENT_MLCD_DIR, "sparse student": TOY_STUDENT_SPARSE_DIR}


def run_demo(out_dir: str | Path = "outputs/demo", *, prompts: int = 8, steps: int = 10, guidance: float = 4.0,
             teacher: str | Path | None = None, students: dict[str, Path] | None = None, seed: int = 0) -> dict:
    """Sample the first ``prompts`` validation prompts with each setting; write ``grid.gif`` and ``toybench.json``.
    ``students``: name -> student folder (default: the shipped MLCD and sparse students; ``{}``: teacher only)."""
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = world_for(teacher or TOY_TEACHER_DIR)
    t0 = time.perf_counter()
    model = load_toy_teacher(teacher or TOY_TEACHER_DIR, compute_dtype="float32")
    if students is None:  # the shipped students, those present (a checkout may lack them)
        students = {name: folder for name, folder in SHIPPED_STUDENTS.items() if (folder / STUDENT_FILE).is_file()}
    for folder in students.values():  # every row is sampled and scored in the teacher's world
        world_for(folder, world.name)
    settings = default_settings(model, steps, guidance, students)
    load_s = time.perf_counter() - t0
    specs = heldout(world, prompts)
    key = jax.random.key(seed)
    results, videos = {}, []
    for setting in settings:
        run = dict(guidance_scale=setting.guidance, key=key, batch_size=len(specs), attention=setting.attention)
        # a 1-step run of the same sampler compiles it, so the timed run below is pure sampling
        t0 = time.perf_counter()
        sample_specs(setting.model, specs, world, plan=setting.plan.truncated(1), **run)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lat = sample_specs(setting.model, specs, world, plan=setting.plan, **run)
        sample_s = time.perf_counter() - t0
        videos.append(lat)
        results[setting.name] = toybench(lat, specs, world) | {
            "compile_s": round(compile_s, 2), "sampling_s": round(sample_s, 2),
            "s_per_video": round(sample_s / len(specs), 3)}
    grid = np.concatenate([v[:, None] for v in videos], axis=1).reshape((-1,) + videos[0].shape[1:])
    captions = [f"{s.caption} [{name.split(',')[0]}]" for s in specs for name in results]
    save_grid_gif(grid, out / "grid.gif", captions=captions, config=world, scale=4, ncols=len(results))
    summary = {"results": results, "split": "validation", "prompts": [s.caption for s in specs], "load_s": round(load_s, 2),
               "total_s": round(time.perf_counter() - t_start, 1), "device": jax.devices()[0].device_kind}
    write_json(out / "toybench.json", summary)
    keys = ["alignment", "overall", "smoothness", "consistency", "dynamic_degree", "compile_s", "sampling_s",
            "s_per_video"]
    summary["table"] = format_table(results, keys=keys)
    return summary
