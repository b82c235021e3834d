"""The training loop: loss decreases, checkpoints are atomic and a killed run resumes to the same state."""

from __future__ import annotations

import dataclasses

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit.config import get_preset
from jax_vdit.model import init_model
from jax_vdit.objectives import DiffusionObjective
from jax_vdit.training import TrainConfig, plot_metrics, read_metrics, train

CFG = get_preset("tiny").replace(num_layers=1)  # one block: the loop is what is tested, compile fast


def _batch_at(step: int) -> dict[str, np.ndarray]:
    """A tiny fixed dataset of 4 'videos' (smooth patterns) cycled in batches of 2."""
    rng = np.random.default_rng(1000 + step % 2)
    t, h, w = np.meshgrid(np.arange(2), np.arange(8), np.arange(8), indexing="ij")
    base = np.stack([np.sin(0.7 * w + c + t) * np.cos(0.5 * h - c) for c in range(4)])
    latents = np.stack([base * (1 + 0.5 * i) for i in range(2)]).astype(np.float32)
    text = rng.standard_normal((2, 5, CFG.caption_channels)).astype(np.float32)
    return {"latents": latents, "text": text, "text_mask": np.ones((2, 5), np.int32)}


FROZEN = {"uncond_text": jnp.zeros((5, CFG.caption_channels)), "uncond_mask": jnp.ones((5,), jnp.int32).at[1:].set(0)}


def test_loss_decreases(tmp_path):
    cfg = TrainConfig(steps=60, learning_rate=3e-3, warmup_steps=5, log_every=10, checkpoint_every=1000)
    result = train(init_model(CFG, seed=0), DiffusionObjective(caption_dropout=0.1), _batch_at, cfg, tmp_path,
                   frozen=FROZEN, show_progress=False)
    losses = [r["mse"] for r in result.history]
    assert len(losses) == 60
    assert np.mean(losses[-15:]) < 0.7 * np.mean(losses[:15])
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60] and "steps_per_s" in rows[0]
    assert plot_metrics(tmp_path, keys=("loss", "grad_norm")).is_file()
    # EMA differs from the raw parameters and the final model evaluates
    ema = jax.tree.leaves(result.state.emas["ema"])
    raw = jax.tree.leaves(result.state.params)
    assert any(not np.allclose(a, b) for a, b in zip(ema, raw))
    out = result.model("ema")(jnp.asarray(_batch_at(0)["latents"]), jnp.array([10.0, 900.0]),
                              jnp.asarray(_batch_at(0)["text"]))
    assert out.shape == (2, 4, 2, 8, 8)


def test_kill_and_resume_is_identical(tmp_path):
    cfg = TrainConfig(steps=12, learning_rate=1e-3, log_every=2, checkpoint_every=4, keep_checkpoints=2)
    objective = DiffusionObjective()
    straight = train(init_model(CFG, seed=0), objective, _batch_at, cfg, tmp_path / "a", frozen=FROZEN,
                     show_progress=False)
    # interrupted after 6 steps: the newest checkpoint is step 4, steps 5-6 are lost and redone
    partial = train(init_model(CFG, seed=0), objective, _batch_at, cfg, tmp_path / "b", frozen=FROZEN,
                    stop_after=6, show_progress=False)
    assert int(partial.state.step) == 6 and partial.resumed_from is None
    resumed = train(init_model(CFG, seed=0), objective, _batch_at, cfg, tmp_path / "b", frozen=FROZEN,
                    show_progress=False)
    assert resumed.resumed_from == 4 and int(resumed.state.step) == 12
    for a, b in zip(jax.tree.leaves(straight.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ckpt_dirs = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir() if p.name.isdigit())
    assert ckpt_dirs == ["12", "8"] or ckpt_dirs == ["12", "8"][::-1]
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["train_config"]["steps"] == 12


def test_a_released_model_gives_its_buffers_up_and_the_same_run(tmp_path):
    """``release_model``: the model's parameter arrays are deleted once the state has its copy (those shared
    with ``frozen`` kept), a resumed run releases them too, and the run computes the same state."""
    from flax import nnx

    cfg = TrainConfig(steps=4, learning_rate=1e-3, log_every=2, checkpoint_every=2)
    objective = DiffusionObjective()
    kept = train(init_model(CFG, seed=0), objective, _batch_at, cfg, tmp_path / "a", frozen=FROZEN,
                 show_progress=False)
    model = init_model(CFG, seed=0)
    shared = model.proj_out.kernel[...]  # a weight that the frozen inputs also hold (as a teacher's would be)
    frozen = dict(FROZEN, teacher={"proj_out": shared})
    released = train(model, objective, _batch_at, cfg, tmp_path / "b", frozen=frozen, show_progress=False,
                     release_model=True, stop_after=2)
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert sum(x.is_deleted() for x in params) == len(params) - 1 and not shared.is_deleted()
    with pytest.raises(RuntimeError, match="deleted"):
        np.asarray(model.blocks[0].attn1.to_q.kernel[...])
    model = init_model(CFG, seed=0)  # resumed from step 2's checkpoint: released as well
    released = train(model, objective, _batch_at, cfg, tmp_path / "b", frozen=FROZEN, show_progress=False,
                     release_model=True)
    assert released.resumed_from == 2 and all(x.is_deleted() for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    for a, b in zip(jax.tree.leaves(kept.state), jax.tree.leaves(released.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_deadline_that_started_before_train_stops_it_at_once_with_a_checkpoint(tmp_path):
    """A time limit counts from its Deadline's start (a command's start), not from the first step: a deadline
    whose seconds had passed before ``train`` stops after one step with a checkpoint; the rerun finishes."""
    from jax_vdit.training import Deadline

    cfg = TrainConfig(steps=6, learning_rate=1e-3, log_every=3, checkpoint_every=6)
    t0 = time.perf_counter()
    deadline = Deadline(0.5, start=t0 - 1.0)  # started a second ago, half a second allowed
    assert deadline.passed() and not Deadline(3600.0).passed()
    stopped = train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN,
                    show_progress=False, time_limit_s=deadline)
    assert int(stopped.state.step) == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["1"]
    resumed = train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN,
                    show_progress=False, time_limit_s=3600.0)
    assert resumed.resumed_from == 1 and int(resumed.state.step) == 6
    assert Deadline.of(None) is None and Deadline.of(deadline) is deadline and Deadline.of(2).seconds == 2.0
    with pytest.raises(ValueError, match="time limit must be >= 0"):
        Deadline(-1.0)


def test_resume_with_another_model_is_refused(tmp_path):
    cfg = TrainConfig(steps=2, learning_rate=1e-3, checkpoint_every=1)
    train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN, show_progress=False)
    bigger = init_model(CFG.replace(num_layers=2), seed=0)
    with pytest.raises(ValueError, match="different train state structure|does not match|shape"):
        train(bigger, DiffusionObjective(), _batch_at, TrainConfig(steps=4, checkpoint_every=1), tmp_path,
              frozen=FROZEN, show_progress=False)


def _while_loops(cfg: TrainConfig, objective) -> int:
    """While loops in the lowered train step of a 2-block tiny model (a scan over the blocks is one)."""
    from jax_vdit.training import ModelParts, init_state, make_optimizer, make_train_step

    parts = ModelParts(init_model(CFG.replace(num_layers=2), seed=0))
    tx = make_optimizer(cfg)
    state = init_state(parts.params(), cfg, tx)
    batch = {k: jnp.asarray(v) for k, v in _batch_at(0).items()}
    return make_train_step(parts, objective, cfg, tx).lower(state, batch, FROZEN).as_text().count("stablehlo.while")


def test_the_train_step_unrolls_the_blocks_unless_told_to_scan(tmp_path):
    """TrainConfig.scan_layers (default False) decides the train step's loop over blocks, whatever the objective's
    AttentionConfig says (the scanned backward was 1.7x slower per step on an H100); a run resumes with the
    other setting (same function), and the setting is recorded with the run."""
    from jax_vdit.model import AttentionConfig

    scanning_objective = DiffusionObjective(attention=AttentionConfig(scan_layers=True))
    # (the CPU's chunked attention has loops of its own: compare the counts)
    unrolled = _while_loops(TrainConfig(steps=2), scanning_objective)
    plain = _while_loops(TrainConfig(steps=2), DiffusionObjective(attention=AttentionConfig(scan_layers=False)))
    scanned = _while_loops(TrainConfig(steps=2, scan_layers=True), DiffusionObjective())
    assert unrolled == plain < scanned
    with pytest.raises(ValueError, match="scan_layers"):
        TrainConfig(scan_layers="yes")
    # the teacher recipe, the distillation recipe and `vdit train-teacher --scan-layers` pass it through
    from jax_vdit.cli import build_parser
    from jax_vdit.distill.recipe import DistillConfig
    from jax_vdit.toy.recipes import TeacherRecipe

    assert not TeacherRecipe().train_config().scan_layers and TeacherRecipe(scan_layers=True).train_config().scan_layers
    assert not DistillConfig().kd_train_config().scan_layers
    assert DistillConfig(scan_layers=True).mlcd_train_config().scan_layers
    from jax_vdit.distill.recipe import apply_overrides

    assert apply_overrides(DistillConfig(), ["scan_layers=true"]).kd_train_config().scan_layers  # vdit distill --set
    assert build_parser().parse_args(["train-teacher", "--scan-layers"]).scan_layers is True
    model = init_model(CFG, seed=0)
    train(model, DiffusionObjective(), _batch_at, TrainConfig(steps=2, checkpoint_every=1, scan_layers=True),
          tmp_path, frozen=FROZEN, show_progress=False)
    assert json.loads((tmp_path / "train_config.json").read_text())["train_config"]["scan_layers"] is True
    result = train(model, DiffusionObjective(), _batch_at, TrainConfig(steps=3, checkpoint_every=1), tmp_path,
                   frozen=FROZEN, show_progress=False)
    assert result.resumed_from == 2 and [r["step"] for r in result.history] == [3]


def test_bad_train_config():
    with pytest.raises(ValueError, match="decay"):
        TrainConfig(emas=(("ema", 1.5),))
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10, lr_schedule="cosine")
    with pytest.raises(ValueError, match=r"adam_mu_dtype must be one of \('float32', 'bfloat16'\), got 'int8'"):
        TrainConfig(adam_mu_dtype="int8")


def test_learning_rate_schedules():
    from jax_vdit.training import learning_rate_schedule

    const = learning_rate_schedule(TrainConfig(steps=100, learning_rate=1e-3, warmup_steps=10))
    assert float(const(0)) == 0.0 and float(const(5)) == pytest.approx(5e-4)
    assert float(const(10)) == pytest.approx(1e-3) and float(const(99)) == pytest.approx(1e-3)
    cos = learning_rate_schedule(TrainConfig(steps=110, learning_rate=1e-3, warmup_steps=10, lr_schedule="cosine",
                                             final_lr_fraction=0.1))
    assert float(cos(10)) == pytest.approx(1e-3)
    assert float(cos(60)) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)  # half-way down the cosine
    assert float(cos(110)) == pytest.approx(1e-4) and float(cos(500)) == pytest.approx(1e-4)
    assert all(float(cos(s)) >= float(cos(s + 1)) - 1e-12 for s in range(10, 120))
    # warmup-stable-decay: constant until the last 20% of the 100 steps after warmup, then the same cosine
    wsd = learning_rate_schedule(TrainConfig(steps=110, learning_rate=1e-3, warmup_steps=10, lr_schedule="wsd",
                                             final_lr_fraction=0.1, decay_fraction=0.2))
    assert float(wsd(5)) == pytest.approx(5e-4) and float(wsd(10)) == pytest.approx(1e-3)
    assert float(wsd(90)) == pytest.approx(1e-3)  # the decay starts at 110 - 20
    assert float(wsd(100)) == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-5)  # half-way down its 20 steps
    assert float(wsd(110)) == pytest.approx(1e-4) and float(wsd(500)) == pytest.approx(1e-4)
    assert all(float(wsd(s)) >= float(wsd(s + 1)) - 1e-12 for s in range(10, 120))


@pytest.mark.parametrize("fields, message", [
    ({"lr_schedule": "wsd", "decay_fraction": 0.0}, "decay_fraction must be in"),
    ({"lr_schedule": "wsd", "decay_fraction": 1.5}, "decay_fraction must be in"),
    ({"lr_schedule": "wsd", "warmup_steps": 100}, "wsd schedule needs warmup_steps"),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
])
def test_bad_schedules_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(steps=100, **fields)


def test_a_wsd_run_cannot_resume_with_another_length_or_decay():
    """Only a constant schedule may grow ``steps`` on resume: a wsd run's decay starts from ``steps``."""
    from jax_vdit.training import run_config_mismatches

    cfg = TrainConfig(steps=100, lr_schedule="wsd")
    stored = {"train_config": cfg.to_dict()}
    assert run_config_mismatches(stored, dataclasses.replace(cfg, steps=200)) == ["train_config.steps: 100 -> 200"]
    assert run_config_mismatches(stored, dataclasses.replace(cfg, decay_fraction=0.3)) == [
        "train_config.decay_fraction: 0.2 -> 0.3"]
    # a checkpoint written before decay_fraction existed resumes (the field is absent there)
    old = {"train_config": {k: v for k, v in cfg.to_dict().items() if k != "decay_fraction"}}
    assert run_config_mismatches(old, cfg) == []


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    """A NaN loss stops training with an error naming the step; no non-finite state is ever checkpointed."""
    from jax_vdit.training import StateCheckpoints

    def objective(model, batch, key, context):
        w = model.blocks[0].attn1.to_q.kernel[...]
        loss = jnp.mean(jnp.square(w)) * jnp.where(batch["bad"], jnp.nan, 1.0)
        return loss, {}

    cfg = TrainConfig(steps=20, learning_rate=1e-3, log_every=2, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match="step 5"):
        train(init_model(CFG, seed=0), objective, lambda s: {"bad": np.asarray(s >= 4)}, cfg, tmp_path,
              show_progress=False)
    assert StateCheckpoints(tmp_path / "checkpoints", 2).latest_step() == 4


def test_timestep_band_mse_splits_the_unweighted_error():
    from jax_vdit.objectives import timestep_band_mse

    per_sample = jnp.array([1.0, 2.0, 3.0, 4.0, 10.0])
    t = jnp.array([0, 249, 250, 999, 998])
    bands = {k: float(v) for k, v in timestep_band_mse(per_sample, t, 1000).items()}
    assert list(bands) == ["mse_t0-249", "mse_t250-499", "mse_t500-749", "mse_t750-999"]
    assert bands["mse_t0-249"] == 1.5 and bands["mse_t250-499"] == 3.0 and bands["mse_t750-999"] == 7.0
    assert np.isnan(bands["mse_t500-749"])  # no sample drew that band
    # the objective reports them; the loop's interval rows average them NaN-aware
    _, metrics = DiffusionObjective()(init_model(CFG, seed=0), jax.tree.map(jnp.asarray, _batch_at(0)),
                                      jax.random.key(0), {"frozen": FROZEN})
    assert {"mse", "mse_t0-249", "mse_t750-999"} <= set(metrics)


def test_evaluate_hook_runs_on_schedule_with_the_current_ema(tmp_path):
    from flax import nnx

    from jax_vdit.training import read_evals

    seen = []

    def evaluate(step, result):
        ema_leaf = jax.tree.leaves(result.state.emas["ema"])[0]
        model_leaf = jax.tree.leaves(nnx.state(result.model("ema"), nnx.Param))[0]
        seen.append((step, int(result.state.step), bool(np.array_equal(ema_leaf, model_leaf))))
        return {"score": float(step) / 10}

    cfg = TrainConfig(steps=7, learning_rate=1e-3, log_every=1, checkpoint_every=100)
    train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN,
          show_progress=False, evaluate=evaluate, evaluate_every=3)
    assert [(s, st) for s, st, _ in seen] == [(3, 3), (6, 6)] and all(same for *_, same in seen)
    assert read_evals(tmp_path) == [{"step": 3, "score": 0.3}, {"step": 6, "score": 0.6}]
    rows = read_metrics(tmp_path)
    assert "mse_t0-249" in rows[0]  # NaN-aware interval means: a band may be empty in a 2-sample batch
    assert plot_metrics(tmp_path, keys=("loss", "mse_t*")).is_file()
    with pytest.raises(ValueError, match="evaluate_every"):
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "x", frozen=FROZEN,
              show_progress=False, evaluate=evaluate)


def test_out_of_memory_names_the_step_the_size_and_the_settings_that_help(tmp_path, monkeypatch):
    """An allocation failure in a step becomes a DeviceMemoryError that says how much XLA asked for, what is kept,
    and which settings lower a step's memory (not a raw XLA error from wherever it surfaced)."""
    from jax_vdit import training

    real = training.make_train_step

    def failing_after_two(*args, **kwargs):
        step = real(*args, **kwargs)
        calls = []

        def run(state, batch, frozen):
            calls.append(1)
            if len(calls) == 3:
                raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 42956094504 bytes.")
            return step(state, batch, frozen)

        return run

    monkeypatch.setattr(training, "make_train_step", failing_after_two)
    cfg = TrainConfig(steps=6, learning_rate=1e-3, log_every=1, checkpoint_every=2)
    with pytest.raises(training.DeviceMemoryError) as info:
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN,
              show_progress=False)
    message = str(info.value)
    assert "training ran out of memory by step 3 on cpu" in message and "40.0 GiB at once" in message
    assert "last checkpoint (step 2) is intact" in message and "--set remat=true" in message
    assert "--set scan_layers=true" in message
    assert isinstance(info.value, MemoryError)


def test_a_cpu_step_that_cannot_fit_in_host_memory_is_refused_before_it_runs(tmp_path, monkeypatch):
    """On the CPU (no allocator limit) the compiled step's new allocations (outputs and temporaries beyond its
    arguments) are compared with the host's available memory: too much stops with a DeviceMemoryError naming both,
    before any step runs (XLA:CPU failed only at the first log step, after every step up to it was dispatched).
    Every other CPU training test of the suite runs through the same check with the real MemAvailable and trains."""
    from jax_vdit import training

    import os

    if os.path.exists("/proc/meminfo"):  # Linux: the real reading is a positive byte count
        assert training.host_bytes_available() > 2**20
    cfg = TrainConfig(steps=2, learning_rate=1e-3, log_every=1, checkpoint_every=2)
    monkeypatch.setattr(training, "device_bytes_limit", lambda: None)
    monkeypatch.setattr(training, "host_bytes_available", lambda: 1000)
    with pytest.raises(training.DeviceMemoryError) as info:
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "tight", frozen=FROZEN,
              show_progress=False)
    message = str(info.value)
    assert "does not fit in this host's memory (cpu)" in message and "GiB available (MemAvailable)" in message
    assert "Nothing ran" in message and "--batch N" in message
    assert not (tmp_path / "tight" / "metrics.jsonl").exists()
    # on a mesh of CPU devices each device's new allocations come out of the same host memory
    needed = {"arguments": 1000, "outputs": 1000, "aliased": 0, "temporaries": 2000, "peak": 4000}
    assert training.host_step_bytes(needed) == 3000 and training.host_step_bytes(needed, devices=2) == 6000
    assert "on each of 2 CPU devices" in training.step_does_not_fit_host_message(needed, 5000, None, devices=2)


def test_a_step_that_cannot_fit_is_refused_before_it_runs(tmp_path, monkeypatch):
    """Where the device reports its allocator limit (GPU, TPU), the step is compiled first and XLA's memory analysis
    compared with the limit: a step that needs more stops with a DeviceMemoryError that names both sizes, before
    any step runs or any checkpoint is written. A step that fits trains as before, compiled once."""
    from jax._src import monitoring

    from jax_vdit import training

    cfg = TrainConfig(steps=3, learning_rate=1e-3, log_every=1, checkpoint_every=3)
    check_state = training.refuse_state_that_cannot_fit
    monkeypatch.setattr(training, "refuse_state_that_cannot_fit", lambda *a: None)  # the step's check alone first
    monkeypatch.setattr(training, "device_bytes_limit", lambda: 1000)
    with pytest.raises(training.DeviceMemoryError) as info:
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "small", frozen=FROZEN,
              show_progress=False)
    message = str(info.value)
    assert "does not fit on cpu" in message and "may use 0.0 GiB" in message and "Nothing ran" in message
    assert "--set fsdp=true" in message and "no checkpoint written" in message
    assert "--set adam_mu_dtype=bfloat16" in message and "--set mlcd_export=student" in message
    assert not (tmp_path / "small" / "metrics.jsonl").exists()
    assert not (tmp_path / "small" / "checkpoints").exists() or not any((tmp_path / "small" / "checkpoints").iterdir())

    compiles = []
    monitoring.register_event_duration_secs_listener(
        lambda name, secs, **kw: compiles.append(kw.get("fun_name"))
        if name == "/jax/core/compile/backend_compile_duration" and "step_fn" in str(kw.get("fun_name")) else None)
    seen = []
    real = training.step_memory_bytes
    monkeypatch.setattr(training, "step_memory_bytes", lambda *a: seen.append(real(*a)) or seen[-1])
    monkeypatch.setattr(training, "device_bytes_limit", lambda: None)  # no allocator limit and ...
    monkeypatch.setattr(training, "host_bytes_available", lambda: None)  # ... no /proc/meminfo: no check
    before = len(compiles)
    reference = train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "plain",
                      frozen=FROZEN, show_progress=False)
    reference_compiles = len(compiles) - before
    assert not seen and reference_compiles == 1
    monkeypatch.setattr(training, "device_bytes_limit", lambda: 2**40)
    before = len(compiles)
    fitted = train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "big", frozen=FROZEN,
                   show_progress=False)
    assert len(compiles) - before == 1  # the checked step is the one that runs: no second compile
    assert len(seen) == 1 and seen[0]["peak"] > seen[0]["temporaries"] > 0
    monkeypatch.setattr(training, "refuse_state_that_cannot_fit", check_state)
    monkeypatch.setattr(training, "device_bytes_in_use", lambda: 2**40 - 1000)  # a state of > 1000 bytes is refused
    with pytest.raises(training.DeviceMemoryError, match=r"training state does not fit on cpu .* EMAs: 1\) "
                       r"beside the 1024.0 GiB already held .* Nothing was allocated"):
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "state", frozen=FROZEN,
              show_progress=False)
    assert len(seen) == 1 and not (tmp_path / "state" / "metrics.jsonl").exists()
    monkeypatch.setattr(training, "device_bytes_in_use", lambda: 0)
    from jax_vdit import parallel

    before = len(compiles)  # on a mesh the check lowers under the mesh, as the step's call does
    on_mesh = train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path / "mesh", frozen=FROZEN,
                    show_progress=False, mesh=parallel.make_mesh(seq=1, data=1, devices=jax.devices()[:1]))
    assert len(compiles) - before == 1 and len(seen) == 2
    for a, b in zip(jax.tree.leaves(on_mesh.state.params), jax.tree.leaves(reference.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(fitted.state.params), jax.tree.leaves(reference.state.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_out_of_memory_before_the_first_step_is_named_too(tmp_path):
    """Placing the first batch (or compiling the step ahead) can run out of memory before the loop: the same
    DeviceMemoryError, not a raw XLA error."""
    from jax_vdit import training

    def place(batch):
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 2147483648 bytes.")

    cfg = TrainConfig(steps=2, learning_rate=1e-3, log_every=1, checkpoint_every=2)
    with pytest.raises(training.DeviceMemoryError, match=r"by step 1 on cpu .*2.0 GiB at once; no checkpoint"):
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN,
              show_progress=False, place_batch=place)


def test_other_runtime_errors_pass_through(tmp_path, monkeypatch):
    from jax_vdit import training

    def broken(*args, **kwargs):
        def run(state, batch, frozen):
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")
        return run

    monkeypatch.setattr(training, "make_train_step", broken)
    cfg = TrainConfig(steps=2, learning_rate=1e-3, log_every=1, checkpoint_every=2)
    with pytest.raises(jax.errors.JaxRuntimeError, match="something else"):
        train(init_model(CFG, seed=0), DiffusionObjective(), _batch_at, cfg, tmp_path, frozen=FROZEN,
              show_progress=False)


def test_the_cli_reports_a_memory_error_as_an_error_line(monkeypatch, capsys):
    from jax_vdit.cli import main, toy

    def out_of_memory(args):
        raise MemoryError("training step 1 ran out of memory on cpu (cpu)")

    monkeypatch.setattr(toy, "_cmd_toybench", out_of_memory)
    assert main(["toybench"]) == 2
    assert "vdit toybench: error: training step 1 ran out of memory" in capsys.readouterr().err
