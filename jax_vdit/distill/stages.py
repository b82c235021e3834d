"""The three distillation stages as runnable steps: one path for the product commands (``vdit distill``) and the
toy recipes (``jax_vdit.toy.recipes``).

Core functions work on models and a step-indexed batch source:

* :func:`run_mlcd` (student, teacher, batches) -> ``training.RunResult`` (EMAs ``target`` and ``ema``);
* :func:`calibration_batches` + :func:`search_stage` -> the per-layer ``MaskSchedule``;
* :func:`run_kd` (dense model, mask schedule, batches) -> ``RunResult`` (EMA ``ema``).

Folder functions (:func:`mlcd_folder`, :func:`search_masks_folder`, :func:`kd_folder`) read a teacher/student
folder and a prepared dataset (``vdit prepare-data`` or :mod:`jax_vdit.data.toy`), record the recipe in
``RUN/recipe.json`` (a resume with another recipe is refused), train resumably, and export ``RUN/student``:
release-format weights + ``student.json`` (+ ``mask_schedule.json``), which ``load_model``,
``jax_vdit.student.load_student``, ``vdit sample`` and ``vdit toybench`` read.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit import parallel, sampling, schedules
from jax_vdit.distill.kd import SparseKDObjective
from jax_vdit.distill.mask_search import search_masks
from jax_vdit.distill.mlcd import MLCDObjective, segment_edges
from jax_vdit.distill.recipe import DistillConfig, write_run_record
from jax_vdit.model.attention import AttentionConfig
from jax_vdit.student import DOMAIN_FILE
from jax_vdit.training import Deadline, ModelParts, RunResult, plot_metrics, train

STUDENT_SUBDIR = "student"
SEARCH_REPORT = "mask_search.json"
BatchAt = Callable[[int], Mapping[str, np.ndarray]]
Evaluate = Callable[[int, RunResult], Mapping[str, float]]


def student_plan(recipe: DistillConfig) -> sampling.SamplingPlan:
    """The consistency sampler the student is distilled for (one jump per segment)."""
    return sampling.consistency(segment_edges(recipe.segments))


def sampler_timesteps(recipe: DistillConfig) -> list[int]:
    """The model timesteps of :func:`student_plan` (e.g. [999, 749, 499, 249] for 4 segments)."""
    plan = student_plan(recipe)
    return [int(t) for t in plan.t_model[:plan.num_steps]]


@dataclass(frozen=True)
class Devices:
    """Where a stage trains: ``mesh`` None = one device; ``rules`` places parameters (FSDP rules shard them over
    the data axis); ``place_batch`` turns this process's host batch into the global device batch."""

    mesh: jax.sharding.Mesh | None = None
    rules: parallel.ShardingRules | None = None
    place_batch: Callable | None = None


def devices_for(recipe: DistillConfig, model) -> Devices:
    """A ``mesh_data x mesh_seq`` mesh over all processes' devices (``jax.distributed.initialize()`` first for
    multi-host), with the model's annotated parameter axes and, with ``fsdp``, parameters split over ``data``."""
    if recipe.mesh_data * recipe.mesh_seq == 1 and not recipe.fsdp and jax.process_count() == 1:
        return Devices()
    mesh = parallel.make_mesh(seq=recipe.mesh_seq, data=recipe.mesh_data)
    rules = parallel.DEFAULT_RULES.fsdp() if recipe.fsdp else parallel.DEFAULT_RULES
    rules = rules.for_model(model)
    return Devices(mesh, rules, lambda b: parallel.shard_local_batch(b, mesh, rules))


def _train(model, objective, batch_at, cfg, run_dir, frozen, devices: Devices, **kw) -> RunResult:
    return train(model, objective, batch_at, cfg, run_dir, frozen=frozen, mesh=devices.mesh,
                 sharding_rules=devices.rules, place_batch=devices.place_batch, **kw)


# ---------------------------------------------------------------------------------------------------------------
# core stages on models


def run_mlcd(student, teacher, batch_at: BatchAt, unconditional: Mapping[str, np.ndarray], recipe: DistillConfig,
             run_dir: str | Path, *, devices: Devices = Devices(), evaluate: Evaluate | None = None,
             time_limit_s: float | Deadline | None = None, stop_after: int | None = None, show_progress: bool = True,
             extra_meta: dict | None = None, release_student: bool = False) -> RunResult:
    """Stage 1 (MLCD): train ``student`` (usually the teacher's weights, fp32 master copy) to jump to its segment
    edges, against the frozen ``teacher``'s CFG DDIM steps. ``batch_at(step)``: ``latents`` (B,C,T,H,W), ``text``
    (B,L,C), ``text_mask`` (B,L); ``unconditional``: ``uncond_text`` (L,C), ``uncond_mask`` (L,). Resumes from
    ``run_dir/checkpoints``. ``result.model(recipe.mlcd_exported_weights())`` is the student to export.
    ``release_student``: ``student``'s weights are deleted once the training state has its copy
    (:func:`jax_vdit.training.train`'s ``release_model``)."""
    teacher_parts, student_parts = ModelParts(teacher), ModelParts(student)
    frozen = {k: jnp.asarray(v) for k, v in unconditional.items()}
    frozen["teacher"] = teacher_parts.params()
    objective = MLCDObjective(teacher=teacher_parts, student=student_parts, edges=segment_edges(recipe.segments),
                              num_solver_points=recipe.solver_points, guidance=recipe.guidance,
                              huber_c=recipe.huber_c)
    result = _train(student, objective, batch_at, recipe.mlcd_train_config(), run_dir, frozen, devices,
                    stop_after=stop_after, show_progress=show_progress, time_limit_s=time_limit_s,
                    extra_meta={"stage": "mlcd", "distill_recipe": recipe.to_dict(), **(extra_meta or {})},
                    evaluate=evaluate, evaluate_every=recipe.check_every if evaluate else None,
                    release_model=release_student)
    plot_metrics(run_dir, keys=("loss", "mse_to_target", "grad_norm"))
    return result


def calibration_batches(latents: np.ndarray, text: np.ndarray, text_mask: np.ndarray, timesteps: Sequence[int],
                        seed: int, dtype=jnp.float32) -> list[dict[str, jax.Array]]:
    """Mask-search inputs: the clean ``latents`` (N,C,T,H,W) noised at each of ``timesteps`` (one batch per
    timestep, noise ``fold_in(key(seed), i)``), with their ``text`` (N,L,C) / ``text_mask`` (N,L)."""
    key = jax.random.key(seed)
    x0 = jnp.asarray(latents, jnp.float32)
    out = []
    for i, t in enumerate(timesteps):
        noise = jax.random.normal(jax.random.fold_in(key, i), x0.shape)
        tt = jnp.full((x0.shape[0],), t)
        out.append({"latents": schedules.add_noise(x0, noise, tt).astype(dtype), "timestep": tt.astype(jnp.float32),
                    "text": jnp.asarray(text), "text_mask": jnp.asarray(text_mask)})
    return out


def search_stage(model, calibration: Sequence[dict], recipe: DistillConfig, *, num_frames: int,
                 tile_backend: str | None = None):
    """Stage 2: ``(MaskSchedule, per-layer reports, error matrix)`` at threshold ``recipe.threshold``."""
    return search_masks(model, calibration, recipe.threshold, num_frames=num_frames,
                        tile_backend=tile_backend or recipe.search_tile_backend,
                        include_windows=recipe.include_windows)


def run_kd(student, teacher, schedule, batch_at: BatchAt, recipe: DistillConfig, run_dir: str | Path, *,
           devices: Devices = Devices(), evaluate: Evaluate | None = None,
           time_limit_s: float | Deadline | None = None, stop_after: int | None = None, show_progress: bool = True,
           extra_meta: dict | None = None, timesteps: Sequence[int] | None = None,
           release_student: bool = False) -> RunResult:
    """Stage 3 (KD): ``student`` (the dense MLCD weights, fp32) learns, with one tile mask per layer
    (``schedule``, run through ``recipe.kd_tile_backend``), the frozen dense ``teacher``'s noise prediction at the
    sampler's timesteps (or uniform ones, ``recipe.kd_timesteps``; ``timesteps`` overrides). The result's ``ema``
    EMA is the sparse student. ``release_student``: as :func:`run_mlcd`'s."""
    parts = ModelParts(teacher)
    attention = AttentionConfig(masks=tuple(schedule), tile_backend=recipe.kd_tile_backend)
    if timesteps is None and recipe.kd_timesteps == "sampler":
        timesteps = sampler_timesteps(recipe)
    timesteps = tuple(int(t) for t in timesteps) if timesteps else None
    objective = SparseKDObjective(teacher=parts, student_attention=attention, timesteps=timesteps)
    result = _train(student, objective, batch_at, recipe.kd_train_config(), run_dir, {"teacher": parts.params()},
                    devices, stop_after=stop_after, show_progress=show_progress, time_limit_s=time_limit_s,
                    extra_meta={"stage": "kd", "distill_recipe": recipe.to_dict(), **(extra_meta or {})},
                    evaluate=evaluate, evaluate_every=recipe.check_every if evaluate else None,
                    release_model=release_student)
    plot_metrics(run_dir, keys=("loss", "rel_err", "grad_norm"))
    return result


# ---------------------------------------------------------------------------------------------------------------
# folders: teacher/student folder + prepared data -> run folder -> student folder


def load_student_weights(path: str | Path, recipe: DistillConfig):
    """A trainable copy: fp32 master weights, ``compute_dtype`` activations, rematerialised blocks."""
    from jax_vdit.io import load_model

    model = load_model(path, param_dtype="float32", compute_dtype=recipe.compute_dtype)
    model.cfg = model.cfg.replace(remat=recipe.remat)
    return model


def load_frozen(path: str | Path, recipe: DistillConfig):
    """The frozen teacher: weights stored in ``teacher_dtype``, activations in ``compute_dtype``."""
    from jax_vdit.io import load_model

    return load_model(path, param_dtype=recipe.teacher_dtype, compute_dtype=recipe.compute_dtype)


def _loader(data_dir: str | Path, recipe: DistillConfig):
    from jax_vdit.data import ShardLoader

    return ShardLoader(data_dir, recipe.batch_size, seed=recipe.seed)


def _check_shapes(model, loader, what: str) -> None:
    c, t, h, w = loader.source.manifest.latent_shape
    cfg = model.cfg
    if c != cfg.in_channels or h % cfg.patch_size or w % cfg.patch_size:
        raise ValueError(f"{what}: the data's latents {tuple(loader.source.manifest.latent_shape)} do not fit a "
                         f"model with in_channels={cfg.in_channels}, patch_size={cfg.patch_size}")
    text_c = loader.source.manifest.text_shape[-1]
    if text_c != cfg.caption_channels:
        raise ValueError(f"{what}: the data's text embeddings have {text_c} channels, the model expects "
                         f"{cfg.caption_channels} (prepare the data with the model's text encoder)")


# (world, recipe, plan, attention, weights) -> a periodic check of the student that will be exported (``weights``:
# the name of an EMA of the run's state, or None for its trained parameters) for models with a domain record; the
# toy wing provides one (ToyBench on validation prompts), passed in by the command line
DomainCheck = Callable[[str, DistillConfig, Any, AttentionConfig, "str | None"], Evaluate]


def _recorded_world(folder: Path) -> str | None:
    """The data domain recorded with a model folder (the toy world of a toy model), or None."""
    path = Path(folder) / DOMAIN_FILE
    return json.loads(path.read_text())["world"] if path.is_file() else None


def _check_fn(recipe: DistillConfig, world: str | None, loader, run_dir: Path, attention: AttentionConfig,
              vae_dir: str | Path | None, domain_check: DomainCheck | None = None,
              weights: str | None = "ema") -> Evaluate | None:
    """The periodic check of the weights the stage exports (``weights``: an EMA's name, or None for the trained
    parameters): ``domain_check`` for a model with a domain record (ToyBench alignment for toy models), else a
    consistency sample of the first ``check_prompts`` captions of the data, saved as latents (and an mp4 with
    ``vae_dir``)."""
    if not recipe.check_every:
        return None
    plan = student_plan(recipe)
    if world is not None and domain_check is not None:
        return domain_check(world, recipe, plan, attention, weights)

    n = min(recipe.check_prompts, len(loader.source))
    examples = [loader.source[i] for i in range(n)]
    text = jnp.asarray(np.stack([e["text"] for e in examples]))
    mask = jnp.asarray(np.stack([e["text_mask"] for e in examples]))
    latent_shape = tuple(int(x) for x in examples[0]["latents"].shape)
    vae = None
    if vae_dir is not None:
        from jax_vdit.io import load_vae

        vae = load_vae(vae_dir)

    def sample_check(step: int, result: RunResult) -> dict:
        t0 = time.perf_counter()
        z = sampling.sample(result.model(weights), text, mask, key=jax.random.key(recipe.seed + 7),
                            latent_shape=latent_shape, plan=plan, attention=attention, latent_dtype=jnp.float32)
        folder = run_dir / "samples"
        folder.mkdir(exist_ok=True)
        z = np.asarray(z, np.float32)
        np.save(folder / f"step{step:07d}.npy", z)
        if vae is not None:
            from jax_vdit.vae import decode_latents_to_video, write_video

            for i in range(z.shape[0]):
                write_video(decode_latents_to_video(vae, jnp.asarray(z[i:i + 1]))[0],
                            folder / f"step{step:07d}_{i}.mp4", fps=8)
        return {"sample_std": float(z.std()), "sample_s": round(time.perf_counter() - t0, 2)}

    return sample_check


def export_student(model, folder: str | Path, *, recipe: DistillConfig, stage: str, teacher: str, steps: int,
                   world: str | None = None, schedule=None, extra: dict | None = None) -> Path:
    """Write ``folder`` atomically: release-format weights (float32 when the recipe computes in float32, else
    bfloat16), ``student.json`` (sampler, edges, distilled guidance, mask flag, teacher, recipe, stage, steps),
    ``mask_schedule.json`` for a sparse student and ``toy_world.json`` for a toy-world student."""
    from jax_vdit.io.checkpoints import atomic_directory
    from jax_vdit.student import MASK_SCHEDULE_FILE, write_student_info
    from jax_vdit.io.release import write_release_folder

    dtype = "float32" if recipe.compute_dtype == "float32" else "bfloat16"
    with atomic_directory(folder, overwrite=True) as tmp:
        write_release_folder(model, tmp, dtype=dtype)
        if world is not None:
            (tmp / DOMAIN_FILE).write_text(json.dumps({"world": world}) + "\n")
        if schedule is not None:
            schedule.save(tmp / MASK_SCHEDULE_FILE)
        write_student_info(tmp, edges=segment_edges(recipe.segments), guidance_distilled=recipe.guidance,
                           teacher=teacher, mask_schedule=schedule is not None,
                           extra={"stage": stage, "steps": int(steps), "recipe": recipe.to_dict(), **(extra or {})})
    return Path(folder)


@dataclass(frozen=True)
class StageOutput:
    """``student``: the exported folder (None while the stage is unfinished: rerun to resume); ``steps``: steps
    done; ``result``: the training result (None for the mask search)."""

    student: Path | None
    steps: int
    result: RunResult | None = None


def recipe_of_student(folder: str | Path) -> DistillConfig | None:
    """The recipe recorded in a student folder's ``student.json`` (None for a plain teacher folder)."""
    from jax_vdit.student import STUDENT_FILE

    path = Path(folder) / STUDENT_FILE
    if not path.is_file():
        return None
    recipe = json.loads(path.read_text()).get("recipe")
    return None if recipe is None else DistillConfig.from_dict(recipe, str(path))


def _check_world(model_dir: Path, loader, what: str) -> str | None:
    """The toy world recorded with a toy model; data rendered in another toy world is refused (its latents have
    the same shape, so nothing else would notice). Returns the model's world (None for real models)."""
    world = _recorded_world(model_dir)
    data_world = loader.source.manifest.settings.get("world")
    if world is not None and data_world is not None and data_world != world:
        raise ValueError(f"{what}: {model_dir} was trained on the toy world {world!r} but the data was written for "
                         f"{data_world!r}: write it with `vdit distill toy-data --world {world}`")
    return world


def mlcd_folder(teacher_dir: str | Path, data_dir: str | Path, run_dir: str | Path, recipe: DistillConfig, *,
                vae_dir: str | Path | None = None, time_limit_s: float | Deadline | None = None,
                stop_after: int | None = None, show_progress: bool = True,
                domain_check: DomainCheck | None = None) -> StageOutput:
    """``vdit distill mlcd``: teacher folder + prepared data -> ``run_dir/student`` (dense consistency student).
    ``time_limit_s`` (seconds) counts from this call, loading included."""
    time_limit_s = Deadline.of(time_limit_s)
    run_dir = Path(run_dir)
    write_run_record(run_dir, "mlcd", {"teacher": teacher_dir, "data": data_dir}, recipe)
    loader = _loader(data_dir, recipe)
    student = load_student_weights(teacher_dir, recipe)
    _check_shapes(student, loader, "mlcd")
    teacher = load_frozen(teacher_dir, recipe)
    world = _check_world(Path(teacher_dir), loader, "mlcd")
    check = _check_fn(recipe, world, loader, run_dir, AttentionConfig(), vae_dir, domain_check,
                      weights=recipe.mlcd_exported_weights())
    result = run_mlcd(student, teacher, loader.batch_at, loader.unconditional(), recipe, run_dir,
                      devices=devices_for(recipe, student), evaluate=check, time_limit_s=time_limit_s,
                      stop_after=stop_after, show_progress=show_progress, release_student=True)
    steps = int(result.state.step)
    if steps < recipe.mlcd_steps:
        return StageOutput(None, steps, result)
    out = export_student(result.model(recipe.mlcd_exported_weights()), run_dir / STUDENT_SUBDIR, recipe=recipe,
                         stage="mlcd", teacher=str(teacher_dir), steps=steps, world=world,
                         extra={"data": str(data_dir)})
    return StageOutput(out, steps, result)


def search_masks_folder(student_dir: str | Path, data_dir: str | Path, run_dir: str | Path,
                        recipe: DistillConfig, *, tile_backend: str | None = None) -> StageOutput:
    """``vdit distill search-masks``: a dense student + calibration clips (the first ``calibration_clips`` records
    of the data, noised at the sampler's timesteps) -> ``run_dir/student``: the same weights (copied) with
    ``mask_schedule.json``; ``run_dir/mask_search.json`` has every layer's error per candidate."""
    from jax_vdit.data import ShardDataSource
    from jax_vdit.student import STUDENT_FILE

    student_dir, run_dir = Path(student_dir), Path(run_dir)
    write_run_record(run_dir, "search-masks", {"student": student_dir, "data": data_dir}, recipe)
    source = ShardDataSource(data_dir)
    n = min(recipe.calibration_clips, len(source))
    examples = [source[i] for i in range(n)]
    model = load_student_weights(student_dir, recipe)
    frames = int(examples[0]["latents"].shape[1])
    calib = calibration_batches(np.stack([e["latents"] for e in examples]), np.stack([e["text"] for e in examples]),
                                np.stack([e["text_mask"] for e in examples]), sampler_timesteps(recipe),
                                recipe.seed, dtype=model.cfg.compute_jnp_dtype)
    t0 = time.perf_counter()
    schedule, reports, errors = search_stage(model, calib, recipe, num_frames=frames, tile_backend=tile_backend)
    seconds = time.perf_counter() - t0
    density = float(np.mean([r.density for r in reports]))
    report = {"threshold": recipe.threshold, "calibration_clips": n, "timesteps": sampler_timesteps(recipe),
              "search_s": round(seconds, 2), "mean_density": density,
              "layers": [{"layer": r.layer, "mask": "dense" if r.mask is None else r.mask.label(),
                          "density": r.density, "error": r.error} for r in reports],
              "errors": np.asarray(errors).tolist()}
    (run_dir / SEARCH_REPORT).write_text(json.dumps(report, indent=1) + "\n")
    from jax_vdit.io.checkpoints import atomic_directory
    from jax_vdit.student import MASK_SCHEDULE_FILE, write_student_info

    info = json.loads((student_dir / STUDENT_FILE).read_text()) if (student_dir / STUDENT_FILE).is_file() else {}
    with atomic_directory(run_dir / STUDENT_SUBDIR, overwrite=True) as tmp:
        for f in student_dir.iterdir():
            if f.is_file() and f.name not in (STUDENT_FILE, MASK_SCHEDULE_FILE):
                shutil.copy2(f, tmp / f.name)
        schedule.save(tmp / MASK_SCHEDULE_FILE)
        write_student_info(tmp, edges=segment_edges(recipe.segments), guidance_distilled=recipe.guidance,
                           teacher=info.get("teacher", str(student_dir)), mask_schedule=True,
                           extra={"stage": "search-masks", "dense_student": str(student_dir),
                                  "threshold": recipe.threshold, "mean_density": density,
                                  "recipe": recipe.to_dict()})
    return StageOutput(run_dir / STUDENT_SUBDIR, 0)


def kd_folder(student_dir: str | Path, data_dir: str | Path, run_dir: str | Path, recipe: DistillConfig, *,
              vae_dir: str | Path | None = None, time_limit_s: float | Deadline | None = None,
              stop_after: int | None = None, show_progress: bool = True,
              domain_check: DomainCheck | None = None) -> StageOutput:
    """``vdit distill kd``: a student folder with ``mask_schedule.json`` (from search-masks) + data ->
    ``run_dir/student`` (the sparse student, same masks). ``time_limit_s`` (seconds) counts from this call,
    loading included."""
    time_limit_s = Deadline.of(time_limit_s)
    import pallas_kernels
    from jax_vdit.student import MASK_SCHEDULE_FILE

    student_dir, run_dir = Path(student_dir), Path(run_dir)
    mask_file = student_dir / MASK_SCHEDULE_FILE
    if not mask_file.is_file():
        raise FileNotFoundError(f"{student_dir} has no {MASK_SCHEDULE_FILE}: run `vdit distill search-masks` first")
    write_run_record(run_dir, "kd", {"student": student_dir, "data": data_dir}, recipe)
    schedule = pallas_kernels.MaskSchedule.load(mask_file)
    loader = _loader(data_dir, recipe)
    student = load_student_weights(student_dir, recipe)
    if len(tuple(schedule)) != student.cfg.num_layers:
        raise ValueError(f"{mask_file} has {len(tuple(schedule))} masks for a {student.cfg.num_layers}-layer model")
    _check_shapes(student, loader, "kd")
    teacher = load_frozen(student_dir, recipe)
    world = _check_world(student_dir, loader, "kd")
    attention = AttentionConfig(masks=tuple(schedule), tile_backend=recipe.kd_tile_backend)
    check = _check_fn(recipe, world, loader, run_dir, attention, vae_dir, domain_check)
    result = run_kd(student, teacher, schedule, loader.batch_at, recipe, run_dir,
                    devices=devices_for(recipe, student), evaluate=check, time_limit_s=time_limit_s,
                    stop_after=stop_after, show_progress=show_progress, release_student=True)
    steps = int(result.state.step)
    if steps < recipe.kd_steps:
        return StageOutput(None, steps, result)
    info = json.loads((student_dir / "student.json").read_text()) if (student_dir / "student.json").is_file() else {}
    out = export_student(result.model("ema"), run_dir / STUDENT_SUBDIR, recipe=recipe, stage="kd",
                         teacher=info.get("teacher", str(student_dir)), steps=steps, world=world,
                         schedule=schedule, extra={"data": str(data_dir), "dense_student": str(student_dir),
                                                   "threshold": info.get("threshold", recipe.threshold)})
    return StageOutput(out, steps, result)


__all__ = ["Devices", "StageOutput", "calibration_batches", "devices_for", "export_student", "kd_folder",
           "load_frozen", "load_student_weights", "mlcd_folder", "recipe_of_student", "run_kd", "run_mlcd",
           "sampler_timesteps", "search_masks_folder", "search_stage", "student_plan"]
