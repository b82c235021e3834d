"""One training loop (optax + orbax, resumable) for teacher training and every distillation stage.

A run is: a model (its graph definition and trainable parameters), an :class:`Objective` (the loss), a batch
source that is a pure function of the step index, and a :class:`TrainConfig`. The loop jits one step
(``value_and_grad`` -> clip -> AdamW -> EMAs), shows a progress bar with ETA, appends metrics to
``<run>/metrics.jsonl``, writes orbax checkpoints atomically every ``checkpoint_every`` steps, and on restart
resumes from the newest checkpoint so that a killed run ends in the same state as an uninterrupted one (the
step's PRNG key is ``fold_in(seed, step)`` and batch i is a pure function of i). The checkpoints are
:class:`~jax_vdit.training_checkpoints.StateCheckpoints`; the checks that refuse a state or a step too large for
the device, and the out-of-memory messages, are in :mod:`jax_vdit.training_memory`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_vdit import parallel
from jax_vdit.host_memory import host_bytes_available
from jax_vdit.model.attention import AttentionConfig, sequence_parallel
from jax_vdit.training_checkpoints import StateCheckpoints
from jax_vdit.training_memory import (  # noqa: F401 - DeviceMemoryError and MEMORY_HINTS are public here too
    MEMORY_HINTS,
    DeviceMemoryError,
    device_bytes_in_use,
    device_bytes_limit,
    host_step_bytes,
    is_out_of_memory,
    out_of_memory_message,
    step_does_not_fit_host_message,
    step_does_not_fit_message,
    step_memory_bytes,
)

PyTree = Any


LR_SCHEDULES = ("constant", "cosine", "wsd")
ADAM_MU_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, EMA, schedule and bookkeeping settings of a run.

    ``emas``: name -> decay of exponential moving averages of the trained parameters kept in the state (e.g.
    ``{"ema": 0.999}``; MLCD adds a fast ``"target"`` EMA that its loss reads).

    ``scan_layers``: how the training step runs the model's blocks; it replaces ``scan_layers`` in every
    ``AttentionConfig`` of the objective (:func:`objective_with_layer_loop`). False (default): an unrolled loop,
    one compiled block per layer. The scanned loop compiles one block per run of layers but its backward pass
    stacks every layer's residuals and weight gradients through dynamic-update-slices, copies and transposes: on
    an H100 the toy teacher's step (batch 64, bf16) ran 26.4 steps/s scanned and 45.9 unrolled
    (``experiments/results/train_step/``). True: for very deep models where compile time matters more. The
    result is the same function either way (float rounding), so a run may resume with the other setting.
    """

    steps: int = 1000
    learning_rate: float = 1e-4
    warmup_steps: int = 0
    # after warmup: "constant"; "cosine" decay to final_lr_fraction at ``steps``; "wsd" (warmup-stable-decay):
    # constant, then the cosine decay over the last ``decay_fraction`` of the steps after warmup
    lr_schedule: str = "constant"
    final_lr_fraction: float = 0.0
    decay_fraction: float = 0.2
    qk_clip_max_gain: float | None = None  # cap self-attention q/k gains after each update (jax_vdit.qk_clip)
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float = 1.0
    emas: tuple[tuple[str, float], ...] = (("ema", 0.999),)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    scan_layers: bool = False
    adam_mu_dtype: str = "float32"  # AdamW's first moment; "bfloat16" halves it (the second stays fp32)

    def __post_init__(self) -> None:
        if self.adam_mu_dtype not in ADAM_MU_DTYPES:
            raise ValueError(f"adam_mu_dtype must be one of {ADAM_MU_DTYPES}, got {self.adam_mu_dtype!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be a bool, got {self.scan_layers!r}")
        if self.steps < 1 or self.learning_rate <= 0 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError(f"invalid TrainConfig: {self}")
        if self.qk_clip_max_gain is not None and self.qk_clip_max_gain <= 0:
            raise ValueError(f"qk_clip_max_gain must be > 0 or None, got {self.qk_clip_max_gain}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.lr_schedule in ("cosine", "wsd") and self.warmup_steps >= self.steps:
            raise ValueError(f"{self.lr_schedule} schedule needs warmup_steps ({self.warmup_steps}) < steps "
                             f"({self.steps})")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        for name, decay in self.emas:
            if not 0.0 <= decay < 1.0:
                raise ValueError(f"EMA {name!r} decay must be in [0, 1), got {decay}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Objective(Protocol):
    """A loss: ``(model, batch, key, context) -> (scalar loss, dict of scalar metrics)``.

    ``context`` holds ``{"emas": {name: params}, "frozen": <objective-specific frozen arrays>}``.
    """

    def __call__(self, model: nnx.Module, batch: Mapping[str, jax.Array], key: jax.Array,
                 context: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]: ...


def wsd_decay_steps(cfg: TrainConfig) -> int:
    """The steps of a "wsd" schedule's decay: ``decay_fraction`` of the steps after warmup (at least 1)."""
    return max(1, round(cfg.decay_fraction * (cfg.steps - cfg.warmup_steps)))


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Step -> learning rate: linear warmup from 0 over ``warmup_steps``, then constant, or a cosine decay that
    reaches ``final_lr_fraction * learning_rate`` at step ``steps`` (and stays there): over all the steps after
    warmup ("cosine"), or over the last :func:`wsd_decay_steps` of them after a constant rate ("wsd")."""
    if cfg.lr_schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps - cfg.warmup_steps, cfg.final_lr_fraction)
    elif cfg.lr_schedule == "wsd":
        decay = wsd_decay_steps(cfg)
        stable = cfg.steps - cfg.warmup_steps - decay
        after = optax.join_schedules(
            [optax.constant_schedule(cfg.learning_rate),
             optax.cosine_decay_schedule(cfg.learning_rate, decay, cfg.final_lr_fraction)], [stable])
    else:
        after = optax.constant_schedule(cfg.learning_rate)
    if cfg.warmup_steps > 0:
        warm = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
        return optax.join_schedules([warm, after], [cfg.warmup_steps])
    return after


def make_optimizer(cfg: TrainConfig, head_dim: int | None = None) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with the learning rate of :func:`learning_rate_schedule`, then (with
    ``cfg.qk_clip_max_gain``) QK-clip, which needs the model's attention ``head_dim``."""
    lr = learning_rate_schedule(cfg)
    parts = [
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                    mu_dtype=None if cfg.adam_mu_dtype == "float32" else jnp.dtype(cfg.adam_mu_dtype)),
    ]
    if cfg.qk_clip_max_gain is not None:
        if head_dim is None:
            raise ValueError("qk_clip_max_gain is set but the model's attention head_dim is unknown")
        from jax_vdit.qk_clip import qk_clip

        parts.append(qk_clip(cfg.qk_clip_max_gain, head_dim))
    return optax.chain(*parts)


@jax.tree_util.register_dataclass
@dataclass
class TrainState:
    """Everything that changes during training: step, parameters, optimiser state, EMAs."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    emas: dict[str, PyTree] = field(default_factory=dict)


def init_state(params: PyTree, cfg: TrainConfig, tx: optax.GradientTransformation) -> TrainState:
    """A fresh state. Parameters are copied: the step donates the state's buffers, and the caller's arrays may be
    shared with other models (a student initialised from its teacher) or with ``frozen`` inputs."""
    params = jax.tree.map(jnp.copy, params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        emas={name: jax.tree.map(jnp.copy, params) for name, _ in cfg.emas},
    )


class ModelParts:
    """A model split into its graph, its trainable parameters (a pure nested dict) and everything else."""

    def __init__(self, model: nnx.Module):
        self.graphdef, self._params_state, self._rest = nnx.split(model, nnx.Param, ...)

    def params(self) -> dict:
        return nnx.to_pure_dict(self._params_state)

    def merge(self, pure_params: dict) -> nnx.Module:
        """A model carrying ``pure_params`` (works on traced arrays inside jit)."""
        state = jax.tree.map(lambda x: x, self._params_state)
        nnx.replace_by_pure_dict(state, pure_params)
        return nnx.merge(self.graphdef, state, self._rest)


def make_train_step(parts: ModelParts, objective: Objective, cfg: TrainConfig, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh | None = None):
    """The jitted step ``(state, batch, frozen) -> (state, metrics)``; the state buffers are donated.

    With ``mesh`` the step runs under ``jax.set_mesh(mesh)``: place the state, batch and frozen arrays on it first
    (``jax_vdit.parallel.shard_tree`` / ``shard_batch``) and give the objective's ``AttentionConfig`` a
    ``sequence_axis`` (``parallel.objective_for_mesh``); ``train(..., mesh=)`` does all of this.
    """
    decays = dict(cfg.emas)
    base_key = jax.random.key(cfg.seed)
    objective = objective_with_layer_loop(objective, cfg.scan_layers)

    def step_fn(state: TrainState, batch, frozen):
        key = jax.random.fold_in(base_key, state.step)
        context = {"emas": state.emas, "frozen": frozen}

        def loss_of(params):
            return objective(parts.merge(params), batch, key, context)

        (loss, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        emas = {
            name: jax.tree.map(lambda e, p, d=decays[name]: (d * e + (1 - d) * p).astype(e.dtype), ema, params)
            for name, ema in state.emas.items()
        }
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads))
        return TrainState(state.step + 1, params, opt_state, emas), metrics

    jitted = jax.jit(step_fn, donate_argnums=(0,))
    if mesh is None:
        return jitted

    def step_on_mesh(state, batch, frozen):
        with jax.set_mesh(mesh):
            return jitted(state, batch, frozen)

    class _LoweredOnMesh:
        def __init__(self, lowered):
            self.lowered = lowered

        def compile(self):
            with jax.set_mesh(mesh):
                return self.lowered.compile()

    def lower_on_mesh(state, batch, frozen):
        with jax.set_mesh(mesh):
            return _LoweredOnMesh(jitted.lower(state, batch, frozen))

    step_on_mesh.lower = lower_on_mesh  # ahead-of-time compile under the mesh, as the call does
    return step_on_mesh


# ------------------------------------------------------------------------------------------------------------
# resuming: the run's settings against its checkpoint's


RESUMABLE_FIELDS = frozenset({"log_every", "checkpoint_every", "keep_checkpoints", "data_generation_s",
                              "scan_layers"})


def _flat_dict(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat_dict(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def run_config_mismatches(stored_meta: Mapping[str, Any], cfg: TrainConfig,
                          extra_meta: Mapping[str, Any] | None = None) -> list[str]:
    """``"field: stored -> now"`` for every run setting (``cfg`` and ``extra_meta``) that differs from the one a
    checkpoint was written with. Bookkeeping fields (``RESUMABLE_FIELDS``) may change, and so may ``steps`` when
    the schedule is constant (extending a run); fields absent on either side are not compared."""
    now = json.loads(json.dumps({"train_config": cfg.to_dict(), **(extra_meta or {})}, default=str))
    then = json.loads(json.dumps({k: stored_meta[k] for k in now if k in stored_meta}, default=str))
    flat_now, flat_then = _flat_dict(now), _flat_dict(then)
    free = set(RESUMABLE_FIELDS) | ({"steps"} if cfg.lr_schedule == "constant" else set())
    return [f"{k}: {flat_then[k]!r} -> {flat_now[k]!r}" for k in sorted(flat_now)
            if k in flat_then and k.rsplit(".", 1)[-1] not in free and flat_then[k] != flat_now[k]]


def check_resume_config(run_dir: str | Path, cfg: TrainConfig, extra_meta: Mapping[str, Any] | None = None) -> None:
    """Raise ValueError naming every field where ``cfg``/``extra_meta`` differ from the settings the newest readable
    checkpoint in ``run_dir/checkpoints`` was written with (nothing to check for a new run). Cheap: reads JSON only,
    so a command line can call it before preparing data."""
    directory = Path(run_dir) / "checkpoints"
    if not directory.is_dir():
        return
    ckpts = StateCheckpoints(directory, cfg.keep_checkpoints)
    try:
        for step in ckpts.all_steps():
            try:
                meta = ckpts.read_meta(step)
            except ValueError:
                continue  # a damaged checkpoint: train() reports it and falls back
            _raise_on_mismatch(meta, cfg, extra_meta, f"{directory} (step {step})")
            return
    finally:
        ckpts.close()


def _raise_on_mismatch(meta: Mapping[str, Any], cfg: TrainConfig, extra_meta: Mapping[str, Any] | None,
                       where: str) -> None:
    diffs = run_config_mismatches(meta, cfg, extra_meta)
    if diffs:
        raise ValueError(
            f"cannot resume from {where}: the run was started with other settings ({'; '.join(diffs)}). Use the "
            "original settings, or a new run directory.")


# ------------------------------------------------------------------------------------------------------------
# the loop


def _to_host_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


@dataclass(frozen=True)
class Deadline:
    """A wall-time budget: ``seconds`` counted from ``start`` (a ``time.perf_counter()`` reading; default: now).

    ``vdit`` commands start theirs when the command starts, so a ``--time-limit`` below a job's limit covers the
    data preparation, checkpoint restore and compiling that come before the first step, not only the steps.
    """

    seconds: float
    start: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        if not self.seconds >= 0:
            raise ValueError(f"a time limit must be >= 0 seconds, got {self.seconds!r}")

    def passed(self) -> bool:
        return time.perf_counter() - self.start > self.seconds

    @classmethod
    def of(cls, limit: "float | Deadline | None") -> "Deadline | None":
        """``limit`` as a deadline: seconds count from now; a deadline or None is returned unchanged."""
        return limit if limit is None or isinstance(limit, Deadline) else cls(float(limit))


@dataclass
class RunResult:
    state: TrainState
    parts: ModelParts
    resumed_from: int | None
    history: list[dict] = field(default_factory=list)

    def model(self, ema: str | None = None) -> nnx.Module:
        """The trained model (raw parameters, or those of the named EMA)."""
        return self.parts.merge(self.state.params if ema is None else self.state.emas[ema])


def release_arrays(tree: PyTree, keep: PyTree = None) -> int:
    """Delete the device buffers of ``tree``'s arrays, except those that are also leaves of ``keep``; returns how
    many were deleted. For weights that a caller has handed over once a copy of them exists."""
    kept = {id(x) for x in jax.tree.leaves(keep)}
    deleted = 0
    for x in jax.tree.leaves(tree):
        if isinstance(x, jax.Array) and id(x) not in kept and not x.is_deleted():
            x.delete()
            deleted += 1
    return deleted


def train(
    model: nnx.Module,
    objective: Objective,
    batch_at: Callable[[int], Mapping[str, np.ndarray]],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    frozen: PyTree = None,
    stop_after: int | None = None,
    show_progress: bool = True,
    place_batch: Callable[[Mapping[str, np.ndarray]], Any] | None = None,
    extra_meta: dict | None = None,
    time_limit_s: float | Deadline | None = None,
    mesh: jax.sharding.Mesh | None = None,
    sharding_rules: Any = None,
    evaluate: Callable[[int, RunResult], Mapping[str, float]] | None = None,
    evaluate_every: int | None = None,
    release_model: bool = False,
) -> RunResult:
    """Train ``model``'s parameters with ``objective`` on ``batch_at(step)`` batches for ``cfg.steps`` steps.

    Resumes from the newest intact checkpoint in ``run_dir/checkpoints`` if one exists (a damaged newer one is
    moved aside with a warning naming both); the run's settings (``cfg`` and ``extra_meta``) must match the ones
    the checkpoint was written with, except bookkeeping (``RESUMABLE_FIELDS``; see :func:`run_config_mismatches`). ``stop_after`` ends the call
    early after that many steps of this call (a stand-in for an interrupted run in tests). ``frozen`` is passed
    to the objective unchanged (e.g. teacher parameters). ``place_batch`` moves a host batch to devices
    (default: ``jnp.asarray`` of every entry). ``time_limit_s``: stop (after writing a checkpoint) once this
    much wall time has passed since ``train`` was called (restoring and compiling included), or at a
    :class:`Deadline` that started earlier, e.g. before a preemption or a job time limit; rerun to continue.
    Returns the final state (params and EMAs).

    ``mesh`` (``jax_vdit.parallel.make_mesh``): data- and sequence-parallel training on it: the state is placed by
    ``sharding_rules`` (default ``parallel.DEFAULT_RULES``: replicated parameters), batches are split over
    ``"data"`` on their leading axis, and the objective's ``AttentionConfig`` fields get ``sequence_axis="seq"``.
    The result is the single-device result up to float rounding.

    ``evaluate(step, result)`` runs every ``evaluate_every`` steps (after that step's checkpoint, if any) with a
    :class:`RunResult` of the current state (``result.model("ema")`` is the EMA model); the numbers it returns are
    appended to ``run_dir/evals.jsonl`` with the step. Use it for sample-quality checks during long runs (e.g.
    keeping the best checkpoint of a run that later degrades).

    ``release_model``: the caller hands ``model``'s parameters over. Once the state holds its own copy (or a
    checkpoint's), the model's parameter arrays are deleted (those shared with ``frozen`` are kept), so a run does
    not hold a second copy of the weights for its whole length: 10.3 GiB on the device for the 2.77B student in
    fp32. ``model`` must not be used afterwards; the result's ``model(...)`` builds models from the state.
    """
    deadline = Deadline.of(time_limit_s)
    if (evaluate is None) != (evaluate_every is None) or (evaluate_every is not None and evaluate_every < 1):
        raise ValueError("evaluate and evaluate_every go together, and evaluate_every must be >= 1")
    from tqdm import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    given_frozen = frozen  # before any placement on a mesh: the arrays a released model may share with it
    parts = ModelParts(model)
    head_dim = getattr(getattr(model, "cfg", None), "attention_head_dim", None)
    tx = make_optimizer(cfg, head_dim=head_dim)
    if mesh is None:
        refuse_state_that_cannot_fit(parts.params(), cfg, tx)
    state = init_state(parts.params(), cfg, tx)
    if mesh is not None:

        rules = sharding_rules or parallel.DEFAULT_RULES
        mesh = parallel.as_auto_mesh(mesh)
        objective = objective_for_mesh(objective, mesh, rules)
        state = parallel.shard_tree(state, mesh, rules)
        frozen = parallel.shard_tree(frozen, mesh, rules)  # e.g. teacher parameters: placed like parameters
        place_batch = place_batch or (lambda b: parallel.shard_batch(b, mesh, rules))
    ckpts = StateCheckpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    resumed_from = None
    try:
        found = ckpts.restore_newest_intact(state)
        if found is not None:
            stored_state, stored_meta, resumed_from = found
            _raise_on_mismatch(stored_meta, cfg, extra_meta, f"{ckpts.directory} (step {resumed_from})")
            state = stored_state
    except BaseException:
        ckpts.close()
        raise
    if release_model:
        release_arrays(parts.params(), keep=(given_frozen, frozen))
    meta = {"train_config": cfg.to_dict(), **(extra_meta or {})}
    (run_dir / "train_config.json").write_text(json.dumps(meta, indent=2, default=str))

    step_fn = make_train_step(parts, objective, cfg, tx, mesh=mesh)
    health_fn = _model_health_fn(parts, model)
    place = place_batch or (lambda b: {k: jnp.asarray(v) for k, v in b.items()})
    start = int(state.step)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    history: list[dict] = []
    pending: list[tuple[int, dict]] = []
    try:
        first_batch = place(batch_at(start)) if start < end else None
        limit = device_bytes_limit()
        host = host_bytes_available() if limit is None and jax.local_devices()[0].platform == "cpu" else None
        if first_batch is not None and (limit is not None or host is not None):
            # compile the step now (the jitted call below reuses it) and refuse a step that cannot fit, before it
            # runs: on a GPU an over-full step can crawl through allocator retries for minutes instead of failing;
            # on the CPU the failure surfaced only at the first log step, after every step up to it was dispatched
            needed = step_memory_bytes(step_fn, state, first_batch, frozen)
            if needed is not None and limit is not None and needed["peak"] > limit:
                raise DeviceMemoryError(step_does_not_fit_message(needed, limit, ckpts.latest_step()))
            devices = 1 if mesh is None else max(1, len(mesh.local_devices))
            if needed is not None and host is not None and host_step_bytes(needed, devices) > host:
                raise DeviceMemoryError(step_does_not_fit_host_message(needed, host, ckpts.latest_step(), devices))
    except BaseException as err:  # out of memory placing the first batch or compiling the step: named as such
        oom = isinstance(err, jax.errors.JaxRuntimeError) and is_out_of_memory(err)
        message = out_of_memory_message(err, start + 1, ckpts.latest_step()) if oom else None
        ckpts.close()
        if message is not None:
            raise DeviceMemoryError(message) from err
        raise
    bar = tqdm(total=cfg.steps, initial=start, desc="train", unit="step", disable=not show_progress)
    t_last = time.perf_counter()
    try:
        with open(run_dir / "metrics.jsonl", "a") as metrics_file:
            for step in range(start, end):
                batch = first_batch if step == start else place(batch_at(step))
                state, metrics = step_fn(state, batch, frozen)
                pending.append((step, metrics))
                done = step + 1
                out_of_time = deadline is not None and deadline.passed()
                if done % cfg.log_every == 0 or done == end or out_of_time:
                    now = time.perf_counter()
                    rate = len(pending) / max(now - t_last, 1e-9)
                    t_last = now
                    # model-health numbers of the current parameters, once per interval (not in the step)
                    health = {} if health_fn is None else _to_host_metrics(health_fn(state.params))
                    rows = [{"step": s + 1, **_to_host_metrics(m), **health} for s, m in pending]
                    history.extend(rows)
                    _raise_if_diverged(rows, ckpts.latest_step())
                    # one row per interval: the mean of each metric over the interval's steps (NaN-aware: a
                    # per-timestep-band metric is NaN in a step whose batch drew no timestep of that band)
                    row = {k: _nanmean([r[k] for r in rows]) for k in rows[-1] if k != "step"}
                    row = dict(row, step=rows[-1]["step"], steps_per_s=rate, time=time.time())
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                    pending.clear()
                bar.update(1)
                if done % cfg.checkpoint_every == 0 or done == cfg.steps or out_of_time:
                    ckpts.save(state, meta)  # refuses (NonFiniteStateError) a state with NaN/Inf anywhere
                if evaluate is not None and done % evaluate_every == 0:
                    scores = evaluate(done, RunResult(state=state, parts=parts, resumed_from=resumed_from))
                    with open(run_dir / "evals.jsonl", "a") as f:
                        f.write(json.dumps({"step": done, **{k: float(v) for k, v in scores.items()}}) + "\n")
                if out_of_time:
                    break
    except jax.errors.JaxRuntimeError as err:
        if is_out_of_memory(err):
            raise DeviceMemoryError(out_of_memory_message(err, step + 1, ckpts.latest_step())) from err
        raise
    finally:
        bar.close()
        ckpts.close()
    return RunResult(state=state, parts=parts, resumed_from=resumed_from, history=history)


def refuse_state_that_cannot_fit(params: PyTree, cfg: TrainConfig, tx: optax.GradientTransformation) -> None:
    """Raise DeviceMemoryError, before allocating, when the fresh training state (a copy of the parameters, the
    optimiser state, the EMAs) does not fit beside what the device already holds (one device; the allocator's
    limit must be known). Without it an over-full GPU crawls through allocator retries instead of failing."""
    limit = device_bytes_limit()
    if limit is None:
        return
    shapes = jax.eval_shape(lambda p: init_state(p, cfg, tx), params)
    state_bytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(shapes))
    in_use = device_bytes_in_use()
    if in_use + state_bytes > limit:
        device = jax.local_devices()[0]
        gib = 2**30
        raise DeviceMemoryError(
            f"the training state does not fit on {device.platform} ({device.device_kind}): it needs "
            f"{state_bytes / gib:.1f} GiB (parameters, optimiser state, EMAs: {len(cfg.emas)}) beside the "
            f"{in_use / gib:.1f} GiB already held (the models), and the device's allocator may use "
            f"{limit / gib:.1f} GiB (XLA_PYTHON_CLIENT_MEM_FRACTION sets that share of the card). Nothing was "
            "allocated. " + MEMORY_HINTS)


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def read_evals(run_dir: str | Path) -> list[dict]:
    """The rows of ``evals.jsonl`` written by ``train(..., evaluate=...)``."""
    return _read_jsonl(Path(run_dir) / "evals.jsonl")


def _model_health_fn(parts: ModelParts, model: nnx.Module):
    """A jitted ``params -> {"qk_gain_max": ..., "rope_odd_t": ...}`` for models with self-attention blocks (see
    :mod:`jax_vdit.diagnostics`: the first warns of attention-logit blow-up; the second, the mean share of the
    heads' rotary forms that can tell forwards from backwards in time, 0.5 at init, falls when training makes the
    model time-symmetric); None for other models."""
    from jax_vdit.diagnostics import has_self_attention_blocks, rope_odd_fraction, self_attention_qk_gain

    if not has_self_attention_blocks(model):
        return None
    cfg = getattr(model, "cfg", None)
    grid = None
    if cfg is not None and hasattr(cfg, "sample_size_t"):
        grid = (cfg.sample_size_t, cfg.sample_size[0] // cfg.patch_size, cfg.sample_size[1] // cfg.patch_size)

    def health(params):
        m = parts.merge(params)
        out = {"qk_gain_max": jnp.max(self_attention_qk_gain(m))}
        if grid is not None:
            out["rope_odd_t"] = jnp.mean(rope_odd_fraction(m, grid)[..., 0])
        return out

    return jax.jit(health)


def _raise_if_diverged(rows: list[dict], last_checkpoint: int | None) -> None:
    """FloatingPointError naming the first step whose loss is NaN or infinite (the run stops; checkpoints stay)."""
    for row in rows:
        if not np.isfinite(row["loss"]):
            raise FloatingPointError(
                f"training diverged: loss is {row['loss']} at step {row['step']} (grad_norm {row.get('grad_norm')}); "
                f"last good checkpoint: step {last_checkpoint}. Lower the learning rate or set qk_clip_max_gain, "
                "then resume from that checkpoint.")


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of ``metrics.jsonl`` (one per logging interval)."""
    return _read_jsonl(Path(run_dir) / "metrics.jsonl")


def plot_metrics(run_dir: str | Path, keys: tuple[str | tuple[str, ...], ...] = ("loss",),
                 out: str | Path | None = None) -> Path:
    """Save a PNG of metrics against step, one panel per entry of ``keys`` (log-scaled y where positive). An
    entry may be a tuple of keys drawn in one panel with a legend, or a prefix ending in ``*`` (e.g. ``"mse_t*"``
    for the per-timestep-band errors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    out = Path(out) if out else Path(run_dir) / "metrics.png"
    names = sorted({k for r in rows for k in r})
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, entry in zip(axes[0], keys):
        if isinstance(entry, str) and entry.endswith("*"):
            group = tuple(n for n in names if n.startswith(entry[:-1]))
        else:
            group = (entry,) if isinstance(entry, str) else tuple(entry)
        all_values = []
        for key in group:
            points = [(r["step"], r[key]) for r in rows if key in r and np.isfinite(r[key])]
            all_values += [v for _, v in points]
            ax.plot([p[0] for p in points], [p[1] for p in points], lw=1, label=key)
        if all_values and min(all_values) > 0:
            ax.set_yscale("log")
        if len(group) > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(entry if isinstance(entry, str) else ", ".join(group))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

__all__ = [
    "Deadline", "ModelParts", "Objective", "RunResult", "StateCheckpoints", "TrainConfig", "TrainState", "check_resume_config",
    "init_state", "make_optimizer", "run_config_mismatches", "make_train_step", "plot_metrics", "read_evals", "read_metrics", "train",
]


def _map_attention_configs(objective: Any, change: Callable[[AttentionConfig], AttentionConfig]) -> Any:
    """A dataclass objective with ``change`` applied to every ``AttentionConfig`` field (other objectives are
    returned unchanged)."""
    if not dataclasses.is_dataclass(objective) or isinstance(objective, type):
        return objective
    changes = {f.name: change(getattr(objective, f.name))
               for f in dataclasses.fields(objective) if isinstance(getattr(objective, f.name), AttentionConfig)}
    return dataclasses.replace(objective, **changes) if changes else objective


def objective_with_layer_loop(objective: Any, scan_layers: bool) -> Any:
    """The objective with ``scan_layers`` set in every ``AttentionConfig`` field; see ``TrainConfig.scan_layers``."""
    return _map_attention_configs(objective, lambda a: dataclasses.replace(a, scan_layers=scan_layers))


def objective_for_mesh(objective: Any, mesh: jax.sharding.Mesh, rules: Any = None) -> Any:
    """The objective with every ``AttentionConfig`` field passed through :func:`sequence_parallel`."""
    return _map_attention_configs(objective, lambda a: sequence_parallel(a, mesh, rules or parallel.DEFAULT_RULES))
