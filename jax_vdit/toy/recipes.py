"""Toy-world recipes: teacher pre-training with the release objective (with periodic ToyBench checks), and the
three-stage efficiency pipeline (MLCD, mask-search calibration, sparse KD). Same code path as full size: the model
config and the data are the only differences."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit import sampling
from jax_vdit.config import get_preset
from jax_vdit.model import AttentionConfig, init_model
from jax_vdit.objectives import DiffusionObjective
from jax_vdit.toy.bench import sample_specs, toybench
from jax_vdit.toy.models import export_release_folder, world_for
from jax_vdit.toy.world import ToyWorldConfig, ValidationSplit, get_config, require_validation, validation_split
from jax_vdit.toy.world.training_set import MixedTrainingSet, ToyTrainingSet
from jax_vdit.training import Deadline, RunResult, TrainConfig, plot_metrics, train

if TYPE_CHECKING:
    from jax_vdit.distill.recipe import DistillConfig


@dataclass(frozen=True)
class TeacherRecipe:
    """Teacher pre-training on the toy world (the release objective; see ``objectives.DiffusionObjective``)."""

    world: str = "toy-9x24x24"
    model: str = "toy-teacher"
    steps: int = 8000
    batch_size: int = 64
    learning_rate: float = 3e-4
    warmup_steps: int = 300
    lr_schedule: str = "constant"
    final_lr_fraction: float = 0.0
    decay_fraction: float = 0.2  # "wsd": the share of the steps after warmup spent decaying
    adam_b2: float = 0.999
    qk_clip_max_gain: float | None = None
    ema_decay: float = 0.999
    num_samples: int = 100_000
    compute_dtype: str = "bfloat16"
    seed: int = 0
    checkpoint_every: int = 1000
    log_every: int = 50
    mix_world: str | None = None  # a curriculum world kept in every batch (e.g. "toy-sign-9x24x24-subframe")
    mix_fraction: float = 0.0  # its share of each batch
    scan_layers: bool = False  # TrainConfig.scan_layers: the train step's loop over blocks (unrolled is faster)

    def __post_init__(self) -> None:
        if (self.mix_world is None) != (self.mix_fraction == 0.0):
            raise ValueError(f"mix_world and mix_fraction go together (got {self.mix_world!r}, {self.mix_fraction})")
        if not 0.0 <= self.mix_fraction < 1.0:
            raise ValueError(f"mix_fraction must be in [0, 1), got {self.mix_fraction}")
        if self.mix_world is not None:
            get_config(self.mix_world)  # an unknown preset is named now, not after the main world is rendered

    def training_data(self, workers: int | None = None) -> ToyTrainingSet | MixedTrainingSet:
        """The pre-rendered training set of ``world`` (with ``mix_world`` mixed in when set)."""
        world = get_config(self.world)
        if self.mix_world is None:
            return ToyTrainingSet.generate(world, self.num_samples, seed=self.seed, workers=workers)
        return MixedTrainingSet.generate(world, get_config(self.mix_world), self.mix_fraction, self.num_samples,
                                         seed=self.seed, workers=workers)

    def model_config(self):
        return get_preset(self.model, compute_dtype=self.compute_dtype)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            steps=self.steps, learning_rate=self.learning_rate, warmup_steps=self.warmup_steps,
            lr_schedule=self.lr_schedule, final_lr_fraction=self.final_lr_fraction,
            decay_fraction=self.decay_fraction, b2=self.adam_b2,
            qk_clip_max_gain=self.qk_clip_max_gain, emas=(("ema", self.ema_decay),), seed=self.seed,
            log_every=self.log_every,
            checkpoint_every=self.checkpoint_every, scan_layers=self.scan_layers,
        )


@dataclass(frozen=True)
class TeacherCheck:
    """A ToyBench check of the EMA teacher during training: Euler-ancestral ``steps`` with guidance ``guidance`` on
    the first ``prompts`` validation prompts, every ``every`` steps. The best EMA by alignment is exported to
    ``run_dir/best_ema`` (release format, bf16), so a run that later degrades keeps its best weights. The check
    reads only the validation split (:func:`_teacher_check_fn` refuses any other), never the test split.

    ``seeds``: noise seeds per check (``seed``, ``seed + 1``, ...); the scores are their means. At 32 prompts one
    noise seed's alignment scatters by about 0.01-0.02 (the toy teachers' validation sd over seeds), as much as the
    differences a best-checkpoint choice is asked to separate; each extra seed costs one more sampling pass."""

    every: int = 2000
    prompts: int = 32
    steps: int = 100
    guidance: float = 4.0
    seed: int = 1234
    seeds: int = 1

    def __post_init__(self):
        for name in ("every", "prompts", "steps", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"TeacherCheck.{name} must be >= 1, got {getattr(self, name)}")

    def noise_seeds(self) -> tuple[int, ...]:
        """The noise seeds of one check, in order."""
        return tuple(range(self.seed, self.seed + self.seeds))


BEST_EMA = "best_ema"


CHECK_SETTINGS = "check_settings.json"


def _record_check_settings(check: TeacherCheck, run_dir: Path) -> None:
    """Write ``check``'s settings (all but ``every``) to ``run_dir/check_settings.json``, or, when a resumed run
    holds them already, refuse other settings: the best EMA is chosen by comparing every check's alignment, earlier
    calls' included, so they must all measure the same thing. A run folder from before this record is accepted."""
    from jax_vdit.data.shards import atomic_write_bytes

    settings = {k: v for k, v in asdict(check).items() if k != "every"}
    path = Path(run_dir) / CHECK_SETTINGS
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = {k: (recorded.get(k), v) for k, v in settings.items() if recorded.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"{run_dir} was checked with other settings ({what}); its best EMA was chosen by "
                             "them. Resume with the same --check-* flags, or start a new run folder")
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(settings, indent=2) + "\n").encode())


def _teacher_check_fn(check: TeacherCheck, split: ValidationSplit, run_dir: Path):
    """The evaluation hook of :func:`train_teacher`: ToyBench on the first ``check.prompts`` prompts of ``split``
    and best-EMA export. ``split`` must be the validation split (TypeError otherwise): selection never sees test."""
    from jax_vdit.io.checkpoints import atomic_directory
    from jax_vdit.training import read_evals

    split = require_validation(split)
    world = split.world
    specs = split.take(check.prompts)
    plan = sampling.euler_ancestral(check.steps)
    _record_check_settings(check, run_dir)
    best = [max((r["alignment"] for r in read_evals(run_dir)), default=-1.0)]  # checks of earlier calls count

    def run_check(step: int, result: RunResult) -> dict:
        model = result.model("ema")
        t0 = time.perf_counter()
        per_seed = [toybench(sample_specs(model, specs, world, plan=plan, guidance_scale=check.guidance,
                                          key=jax.random.key(seed)), specs, world)
                    for seed in check.noise_seeds()]
        scores = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
        is_best = scores["alignment"] > best[0]
        if is_best:
            best[0] = scores["alignment"]
            with atomic_directory(run_dir / BEST_EMA, overwrite=True) as tmp:
                export_release_folder(model, tmp, dtype="bfloat16", world=world.name)
                (tmp / "check.json").write_text(json.dumps(
                    {"step": step, **scores, "noise_seeds": list(check.noise_seeds()),
                     "alignment_per_seed": [s["alignment"] for s in per_seed]}, indent=2, default=float))
        row = {"alignment": scores["alignment"], "direction_acc": scores["direction_acc"],
               "overall": scores["overall"], "is_best": float(is_best),
               "check_s": round(time.perf_counter() - t0, 2)}
        if len(per_seed) > 1:  # evals.jsonl holds numbers only: one column per seed
            row.update({f"alignment_seed{seed}": s["alignment"] for seed, s in zip(check.noise_seeds(), per_seed)})
        return row

    return run_check


def train_teacher(recipe: TeacherRecipe, run_dir: str | Path, *, stop_after: int | None = None,
                  show_progress: bool = True, data: ToyTrainingSet | MixedTrainingSet | None = None,
                  time_limit_s: float | Deadline | None = None, init_from: str | Path | None = None,
                  check: TeacherCheck | None = None, adapt_to_world: bool = False) -> RunResult:
    """Train (or resume) a toy teacher in ``run_dir``; writes metrics.jsonl, metrics.png and checkpoints.

    ``init_from``: start from these weights (e.g. the shipped teacher) instead of a random init; a checkpoint
    already in ``run_dir`` still takes precedence (resume). Weights recorded in another toy world are refused
    unless ``adapt_to_world`` (a deliberate fine-tune onto ``recipe.world``, e.g. the anchored variant of the
    same world; the model config must still match). ``check``: periodic ToyBench of the EMA teacher
    (``run_dir/evals.jsonl``) keeping the best one in ``run_dir/best_ema``. ``time_limit_s`` (seconds) counts
    from this call, rendering the training set included."""
    time_limit_s = Deadline.of(time_limit_s)
    run_dir = Path(run_dir)
    world = get_config(recipe.world)
    cfg = recipe.model_config()
    if cfg.caption_channels != world.caption_channels:
        raise ValueError(f"model caption_channels={cfg.caption_channels} != world's {world.caption_channels}")
    if init_from is not None and not adapt_to_world:
        world_for(init_from, recipe.world)  # weights of another toy world are refused before data is generated
    # a resume with other check settings is refused before that too
    evaluate = None if check is None else _teacher_check_fn(check, validation_split(world), run_dir)
    t0 = time.perf_counter()
    data = data or recipe.training_data()
    gen_s = time.perf_counter() - t0
    frozen = jax.tree.map(jnp.asarray, data.unconditional())
    if init_from is not None:
        from jax_vdit.io import load_model

        model = load_model(init_from, param_dtype=cfg.param_dtype, compute_dtype=cfg.compute_dtype)
        if model.cfg.replace(compute_dtype=cfg.compute_dtype) != cfg:
            raise ValueError(f"{init_from} holds a {model.cfg} model, the recipe asks for {cfg}")
    else:
        model = init_model(cfg, seed=recipe.seed)
    result = train(
        model, DiffusionObjective(), lambda s: data.batch_at(s, recipe.batch_size),
        recipe.train_config(), run_dir, frozen=frozen, stop_after=stop_after, show_progress=show_progress,
        extra_meta={"recipe": asdict(recipe), "data_generation_s": round(gen_s, 1)}, time_limit_s=time_limit_s,
        evaluate=evaluate, evaluate_every=None if check is None else check.every,
    )
    plot_metrics(run_dir, keys=("loss", "mse", "mse_t*", "grad_norm", "qk_gain_max", "rope_odd_t"))
    return result



# ---------------------------------------------------------------------------------------------------------------
# the three-stage efficiency pipeline on the toy world


@dataclass(frozen=True)
class DistillRecipe:
    """MLCD (stage 1) and sparse KD (stage 3) settings for the toy world; mask search threshold (stage 2)."""

    world: str = "toy-9x24x24"
    segments: int = 4
    solver_points: int = 50
    guidance: float = 4.0
    mlcd_steps: int = 3000
    mlcd_lr: float = 5e-5
    target_decay: float = 0.95
    kd_steps: int = 1000
    kd_lr: float = 3e-5
    batch_size: int = 64
    num_samples: int = 50_000
    threshold: float = 0.1
    calibration_prompts: int = 16
    compute_dtype: str = "bfloat16"
    seed: int = 1


def distill_check(world: str, recipe: DistillConfig, plan: sampling.SamplingPlan, attention: AttentionConfig,
                  weights: str | None = "ema"):
    """The periodic check of ``vdit distill`` stages for a toy student (``jax_vdit.distill.stages.DomainCheck``):
    ToyBench alignment of the student the stage exports (``weights``: an EMA's name, None: the trained weights),
    sampled with its own plan and attention and no CFG, on the first ``recipe.check_prompts`` validation prompts of
    ``world`` (never the test split)."""
    split = validation_split(get_config(world))
    specs = split.take(recipe.check_prompts)

    def check(step: int, result: RunResult) -> dict:
        videos = sample_specs(result.model(weights), specs, split.world, plan=plan, guidance_scale=None,
                              key=jax.random.key(recipe.seed + 7), attention=attention)
        scores = toybench(videos, specs, split.world)
        return {"alignment": scores["alignment"], "overall": scores["overall"]}

    return check


def product_recipe(recipe: DistillRecipe, tile_backend: str = "gather") -> DistillConfig:
    """The toy recipe as the product's run config (``vdit distill``): the same stage functions train both."""
    from jax_vdit.distill.recipe import DistillConfig

    return DistillConfig(
        seed=recipe.seed, batch_size=recipe.batch_size, compute_dtype=recipe.compute_dtype,
        teacher_dtype="float32", remat=False, segments=recipe.segments, solver_points=recipe.solver_points,
        guidance=recipe.guidance, target_decay=recipe.target_decay, mlcd_ema_decay=0.999,
        mlcd_steps=recipe.mlcd_steps, mlcd_lr=recipe.mlcd_lr, mlcd_warmup=100, threshold=recipe.threshold,
        calibration_clips=recipe.calibration_prompts, kd_steps=recipe.kd_steps, kd_lr=recipe.kd_lr, kd_warmup=50,
        kd_ema_decay=0.99, kd_tile_backend=tile_backend, weight_decay=0.0, log_every=50, checkpoint_every=1000)


def distill_mlcd(teacher, recipe: DistillRecipe, run_dir: str | Path, *, data: ToyTrainingSet | None = None,
                 time_limit_s: float | Deadline | None = None, show_progress: bool = True) -> RunResult:
    """Stage 1: a multi-step consistency student initialised from the teacher (dense attention); runs
    ``jax_vdit.distill.stages.run_mlcd``, the function behind ``vdit distill mlcd``."""
    from jax_vdit.distill.stages import run_mlcd
    from jax_vdit.training import ModelParts

    world = get_config(recipe.world)
    data = data or ToyTrainingSet.generate(world, recipe.num_samples, seed=recipe.seed)
    parts = ModelParts(teacher)
    return run_mlcd(parts.merge(parts.params()), teacher, lambda s: data.batch_at(s, recipe.batch_size),
                    data.unconditional(), product_recipe(recipe), run_dir, time_limit_s=time_limit_s,
                    show_progress=show_progress, extra_meta={"toy_recipe": asdict(recipe)})


def calibration_batches(world: ToyWorldConfig, recipe: DistillRecipe, timesteps: list[int], dtype=jnp.float32):
    """Noisy held-in inputs at the student's sampling timesteps, for the mask search: the first
    ``recipe.calibration_prompts`` training-stream samples of ``world``, which never include a validation or a test
    scene (the stream rejects both), so calibration cannot read the test split. One dict per timestep: ``latents``
    (N, 4, T, H, W) ``dtype``, ``timestep`` (N,) float32, ``text`` (N, L, C), ``text_mask`` (N, L)."""
    from jax_vdit import schedules

    data = ToyTrainingSet.generate(world, recipe.calibration_prompts, seed=recipe.seed + 100, workers=1)
    key = jax.random.key(recipe.seed)
    out = []
    for i, t in enumerate(timesteps):
        x0 = jnp.asarray(data.latents)
        noise = jax.random.normal(jax.random.fold_in(key, i), x0.shape)
        tt = jnp.full((x0.shape[0],), t)
        out.append({"latents": schedules.add_noise(x0, noise, tt).astype(dtype), "timestep": tt.astype(jnp.float32),
                    "text": jnp.asarray(data.text), "text_mask": jnp.asarray(data.text_mask)})
    return out


def distill_sparse(dense_student, schedule, recipe: DistillRecipe, run_dir: str | Path, *,
                   data: ToyTrainingSet | None = None, tile_backend: str = "auto", timesteps=None,
                   time_limit_s: float | Deadline | None = None, show_progress: bool = True) -> RunResult:
    """Stage 3: knowledge distillation of the dense MLCD student into the same model with tile masks; runs
    ``jax_vdit.distill.stages.run_kd``, the function behind ``vdit distill kd``."""
    from jax_vdit.distill.stages import run_kd
    from jax_vdit.training import ModelParts

    world = get_config(recipe.world)
    data = data or ToyTrainingSet.generate(world, recipe.num_samples, seed=recipe.seed)
    parts = ModelParts(dense_student)
    config = product_recipe(recipe, tile_backend)
    if not timesteps:
        config = dataclasses.replace(config, kd_timesteps="uniform")
    return run_kd(parts.merge(parts.params()), dense_student, schedule, lambda s: data.batch_at(s, recipe.batch_size),
                  config, run_dir, timesteps=[int(t) for t in timesteps] if timesteps else None,
                  time_limit_s=time_limit_s, show_progress=show_progress, extra_meta={"toy_recipe": asdict(recipe)})
