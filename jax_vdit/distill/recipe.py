"""The run config of the distillation commands: every recipe setting of MLCD, the mask search and KD in one frozen
dataclass, stored as ``recipe.json`` in each run folder.

``vdit distill ... --config FILE --set key=value`` builds one (:func:`recipe_from_sources`); a run folder that
already holds a ``recipe.json`` is resumed only with the same recipe (:func:`check_resume` names every differing
field), except the bookkeeping fields in :data:`MAY_CHANGE_ON_RESUME` (logging, checks, device layout).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jax_vdit.training import ADAM_MU_DTYPES, LR_SCHEDULES, TrainConfig

RECIPE_FILE = "recipe.json"
DTYPES = ("float32", "bfloat16")
KD_TIMESTEPS = ("sampler", "uniform")
MLCD_EXPORTS = ("ema", "target", "student")
# settings that do not change what a run computes, so a resumed run may use other values
MAY_CHANGE_ON_RESUME = frozenset({"log_every", "check_every", "check_prompts", "mesh_data", "mesh_seq", "fsdp"})


@dataclass(frozen=True)
class DistillConfig:
    """All settings of the three stages (Efficient-vDiT: MLCD -> mask search -> sparse KD).

    MLCD: ``segments`` consistency segments with even lower edges, a DDIM solver grid of ``solver_points``,
    teacher CFG ``guidance`` baked into the target, pseudo-Huber ``huber_c``, a target-network EMA
    (``target_decay``) and an EMA of the student (``mlcd_ema_decay``) that becomes the student
    (``mlcd_export="ema"``); ``"target"`` exports the target EMA and ``"student"`` the trained weights, and both
    keep no third copy of the student, 10.3 GiB less at full size. Mask search: per layer the
    sparsest k:m mask whose attention-output error on ``calibration_clips`` clips (noised at the student's sampling
    timesteps) stays below ``threshold`` (r). KD: the masked student matches the dense MLCD student at the
    sampler's timesteps (``kd_timesteps="sampler"``) or at uniform ones; its EMA (``kd_ema_decay``) is exported.

    Numerics: the student keeps fp32 master weights and computes in ``compute_dtype`` with rematerialised blocks
    (``remat``); the frozen teacher is stored in ``teacher_dtype``. Optimiser: AdamW (``weight_decay``, ``b1``,
    ``b2``, global-norm clip ``grad_clip``), linear warmup then ``lr_schedule``; ``adam_mu_dtype="bfloat16"`` keeps
    its first moment in bf16 (5.2 GiB less at full size; the second moment stays fp32).
    Bookkeeping: metrics every ``log_every`` steps, checkpoints every ``checkpoint_every``, a sample/ToyBench check
    every ``check_every`` steps (0: none) on ``check_prompts`` prompts. Devices: a ``mesh_data`` x ``mesh_seq`` mesh
    (1 x 1: one device), ``fsdp`` shards parameters and optimiser state over the data axis.
    """

    seed: int = 0
    batch_size: int = 8
    compute_dtype: str = "bfloat16"
    teacher_dtype: str = "bfloat16"
    remat: bool = True
    scan_layers: bool = False  # the training steps' loop over blocks (TrainConfig.scan_layers; unrolled is faster)
    # MLCD
    segments: int = 4
    solver_points: int = 50
    guidance: float = 4.0
    huber_c: float = 1e-3
    target_decay: float = 0.95
    mlcd_ema_decay: float = 0.999
    mlcd_export: str = "ema"
    mlcd_steps: int = 3000
    mlcd_lr: float = 5e-5
    mlcd_warmup: int = 100
    # mask search
    threshold: float = 0.1
    calibration_clips: int = 2
    include_windows: bool = False
    search_tile_backend: str = "auto"
    # KD
    kd_steps: int = 1000
    kd_lr: float = 3e-5
    kd_warmup: int = 50
    kd_ema_decay: float = 0.99
    kd_timesteps: str = "sampler"
    kd_tile_backend: str = "gather"
    # optimiser (both training stages)
    lr_schedule: str = "constant"
    final_lr_fraction: float = 0.0
    decay_fraction: float = 0.2  # "wsd": the share of each stage's steps after warmup spent decaying
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0
    adam_mu_dtype: str = "float32"
    # bookkeeping
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    check_every: int = 0
    check_prompts: int = 4
    # devices
    mesh_data: int = 1
    mesh_seq: int = 1
    fsdp: bool = False

    def __post_init__(self) -> None:
        problems = []
        for name in ("compute_dtype", "teacher_dtype"):
            if getattr(self, name) not in DTYPES:
                problems.append(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        for name in ("batch_size", "segments", "solver_points", "mlcd_steps", "kd_steps", "calibration_clips",
                     "log_every", "checkpoint_every", "keep_checkpoints", "check_prompts", "mesh_data", "mesh_seq"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("mlcd_warmup", "kd_warmup", "check_every", "huber_c", "threshold", "weight_decay"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("mlcd_lr", "kd_lr", "grad_clip"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("target_decay", "mlcd_ema_decay", "kd_ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.mlcd_export not in MLCD_EXPORTS:
            problems.append(f"mlcd_export must be one of {MLCD_EXPORTS}, got {self.mlcd_export!r}")
        if self.adam_mu_dtype not in ADAM_MU_DTYPES:
            problems.append(f"adam_mu_dtype must be one of {ADAM_MU_DTYPES}, got {self.adam_mu_dtype!r}")
        if self.kd_timesteps not in KD_TIMESTEPS:
            problems.append(f"kd_timesteps must be one of {KD_TIMESTEPS}, got {self.kd_timesteps!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if 1000 % self.solver_points:
            problems.append(f"solver_points ({self.solver_points}) must divide 1000")
        if self.segments > self.solver_points:
            problems.append(f"segments ({self.segments}) must be <= solver_points ({self.solver_points})")
        if self.batch_size % self.mesh_data:
            problems.append(f"batch_size ({self.batch_size}) must be a multiple of mesh_data ({self.mesh_data})")
        if problems:
            raise ValueError("invalid distillation recipe: " + "; ".join(problems))

    # -- the stages' training configs -------------------------------------------------------------------------
    def _train(self, steps: int, lr: float, warmup: int, emas: tuple) -> TrainConfig:
        return TrainConfig(steps=steps, learning_rate=lr, warmup_steps=warmup, lr_schedule=self.lr_schedule,
                           final_lr_fraction=self.final_lr_fraction, decay_fraction=self.decay_fraction,
                           weight_decay=self.weight_decay, b1=self.b1,
                           b2=self.b2, grad_clip=self.grad_clip, emas=emas, seed=self.seed,
                           log_every=self.log_every, checkpoint_every=self.checkpoint_every,
                           keep_checkpoints=self.keep_checkpoints, scan_layers=self.scan_layers,
                           adam_mu_dtype=self.adam_mu_dtype)

    def mlcd_train_config(self) -> TrainConfig:
        """AdamW on the student with a ``target`` EMA (read by the loss) and, where ``mlcd_export`` is "ema", an
        exported ``ema`` (another fp32 copy of the student: 10.3 GiB at 2.77B parameters)."""
        emas = (("target", self.target_decay),)
        if self.mlcd_export == "ema":
            emas += (("ema", self.mlcd_ema_decay),)
        return self._train(self.mlcd_steps, self.mlcd_lr, self.mlcd_warmup, emas)

    def mlcd_exported_weights(self) -> str | None:
        """Which weights of the MLCD run become the student: the name of an EMA of the state, or None for the
        trained parameters themselves (``mlcd_export="student"``)."""
        return None if self.mlcd_export == "student" else self.mlcd_export

    def kd_train_config(self) -> TrainConfig:
        return self._train(self.kd_steps, self.kd_lr, self.kd_warmup, (("ema", self.kd_ema_decay),))

    # -- files ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "recipe") -> DistillConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown recipe fields {unknown}; known: {sorted(known)}")
        return cls(**{k: _coerce(k, v, where) for k, v in d.items()})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> DistillConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recipe file at {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a recipe file holds one JSON object of settings")
        return cls.from_dict(raw.get("recipe", raw), str(path))


_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(DistillConfig)}


def _coerce(name: str, value: Any, where: str) -> Any:
    """``value`` as the field's type (ints for int fields, ...); strings (``--set``) are parsed."""
    kind = _FIELD_TYPES[name]
    try:
        if kind == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} must be a {kind}, got {value!r}") from None


def apply_overrides(recipe: DistillConfig, overrides: Sequence[str]) -> DistillConfig:
    """``["mlcd_steps=10", "guidance=4.5", ...]`` applied to ``recipe`` (values parsed as the field's type)."""
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in _FIELD_TYPES:
            raise ValueError(f"--set {item!r}: unknown recipe field {key!r}; known: {sorted(_FIELD_TYPES)}")
        changes[key] = _coerce(key, value.strip(), "--set")
    return dataclasses.replace(recipe, **changes)


def recipe_from_sources(config_file: str | Path | None, overrides: Sequence[str], run_dir: str | Path | None = None,
                        base: DistillConfig | None = None) -> DistillConfig:
    """The recipe of a command: ``config_file`` (else the run folder's own ``recipe.json`` when resuming, else
    ``base`` or the defaults), then ``--set`` overrides."""
    recorded = None if run_dir is None else Path(run_dir) / RECIPE_FILE
    if config_file is not None:
        recipe = DistillConfig.load(config_file)
    elif recorded is not None and recorded.is_file():
        recipe = DistillConfig.load(recorded)
    else:
        recipe = base or DistillConfig()
    return apply_overrides(recipe, overrides)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], ignore=frozenset()) -> list[str]:
    """``"field: old -> new"`` for every differing key (sorted), skipping ``ignore``."""
    keys = sorted((set(old) | set(new)) - set(ignore))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def check_resume(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Refuse to continue ``run_dir`` with another recipe or other inputs: ``record`` is ``{"stage", "inputs",
    "recipe"}`` as :func:`write_run_record` stores it. Raises ``ValueError`` naming each differing field."""
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    problems = []
    if old.get("stage") != record["stage"]:
        problems.append(f"stage: {old.get('stage')!r} -> {record['stage']!r}")
    problems += [f"inputs.{d}" for d in differences(old.get("inputs", {}), record["inputs"])]
    # a field newer than the run's record counts as its default there (the run was made with that behaviour)
    recorded = {**DistillConfig().to_dict(), **old.get("recipe", {})}
    problems += differences(recorded, record["recipe"], MAY_CHANGE_ON_RESUME)
    if problems:
        raise ValueError(f"cannot resume {run_dir} with a different recipe ({path}): " + "; ".join(problems)
                         + ". Use a new run folder, or rerun with the recorded settings.")


def write_run_record(run_dir: str | Path, stage: str, inputs: Mapping[str, Any], recipe: DistillConfig) -> dict:
    """Check ``run_dir`` against its recorded recipe (:func:`check_resume`), then (re)write ``recipe.json``:
    ``{"stage", "inputs", "recipe"}``. The ``recipe`` part is itself a valid ``--config`` file."""
    record = {"stage": stage, "inputs": {k: str(v) for k, v in inputs.items()}, "recipe": recipe.to_dict()}
    check_resume(run_dir, record)
    path = Path(run_dir) / RECIPE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
