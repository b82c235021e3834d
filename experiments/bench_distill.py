"""Distillation cost: one MLCD step and one KD step (time, peak memory), the mask search over all layers with 2
calibration clips, and XLA's memory analysis of the full-size steps without allocating.

Usage::

    python -m experiments.bench_distill --size tiny               # CPU smoke run (seconds)
    python -m experiments.bench_distill --size 29x720p            # one GPU: random 2.77B weights, batch 1
    python -m experiments.bench_distill --size 29x720p --analyze-only   # any machine: lower + compile with
                                                                        # abstract inputs, memory_analysis()
    python -m experiments.bench_distill --size 29x720p --set mlcd_export=student --set adam_mu_dtype=bfloat16
                                                  # the smaller training state of those recipe settings

Writes ``<out>/<size>_<run|analysis>_<stages>_<platform>.json`` (command, device, date, numbers); the measured
files and their README are in ``experiments/results/bench_distill/``.
The student keeps fp32 master weights with bf16 compute and rematerialised blocks; the frozen teacher is bf16.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "bench_distill"

SIZES = {  # model preset, latent (C, T, H, W), text length
    "tiny": ("tiny", (4, 3, 8, 8), 8),
    "29x720p": ("osp-v1.2-29x720p", (4, 8, 90, 160), 512),
}


def configs(size: str):
    from jax_vdit.config import get_preset

    preset, latent, text_len = SIZES[size]
    compute = "float32" if size == "tiny" else "bfloat16"
    student_cfg = get_preset(preset, param_dtype="float32", compute_dtype=compute, remat=size != "tiny")
    teacher_cfg = student_cfg.replace(param_dtype="bfloat16" if size != "tiny" else "float32", remat=False)
    return student_cfg, teacher_cfg, latent, text_len


def objectives(stage: str, student_parts, teacher_parts, frames: int, layers: int):
    import pallas_kernels
    from jax_vdit.distill import MLCDObjective, SparseKDObjective
    from jax_vdit.model import AttentionConfig

    if stage == "mlcd":
        return MLCDObjective(teacher=teacher_parts, student=student_parts)
    from jax_vdit.distill.recipe import DistillConfig

    masks = tuple(pallas_kernels.TileMask.k_m(max(1, frames // 2), frames) for _ in range(layers))
    backend = DistillConfig().kd_tile_backend  # what `vdit distill kd` trains with by default
    attention = AttentionConfig(masks=masks, tile_backend=backend)
    return SparseKDObjective(teacher=teacher_parts, student_attention=attention,
                             timesteps=(999, 749, 499, 249))


def recipe_for(scan_layers: bool = False, sets: tuple[str, ...] = ()):
    """The distillation recipe whose training state the benchmark builds: `vdit distill`'s defaults with the
    train step's loop over blocks (``scan_layers``) and ``sets`` (``key=value`` as `vdit distill --set`)."""
    from jax_vdit.distill.recipe import DistillConfig, apply_overrides

    return apply_overrides(DistillConfig(scan_layers=scan_layers), list(sets))


def abstract_inputs(student_cfg, teacher_cfg, latent, text_len, batch: int, stage: str, scan_layers: bool = False,
                    sets: tuple[str, ...] = ()):
    """(parts, objective, tx, state, batch, frozen) with ShapeDtypeStruct leaves: nothing allocated. The state is
    the one `vdit distill mlcd|kd` trains with :func:`recipe_for` ``(scan_layers, sets)`` (its EMAs, AdamW's
    moments)."""
    from jax_vdit.model.transformer import abstract_model
    from jax_vdit.training import ModelParts, init_state, make_optimizer

    student, teacher = abstract_model(student_cfg), abstract_model(teacher_cfg)
    sp, tp = ModelParts(student), ModelParts(teacher)
    recipe = recipe_for(scan_layers, sets)
    tcfg = recipe.mlcd_train_config() if stage == "mlcd" else recipe.kd_train_config()
    tx = make_optimizer(tcfg)
    state = jax.eval_shape(lambda p: init_state(p, tcfg, tx), sp.params())
    c = student_cfg.caption_channels
    batch_abs = {"latents": jax.ShapeDtypeStruct((batch, *latent), jnp.float32),
                 "text": jax.ShapeDtypeStruct((batch, text_len, c), jnp.float32),
                 "text_mask": jax.ShapeDtypeStruct((batch, text_len), jnp.int32)}
    frozen = {"teacher": tp.params()}
    if stage == "mlcd":
        frozen |= {"uncond_text": jax.ShapeDtypeStruct((text_len, c), jnp.float32),
                   "uncond_mask": jax.ShapeDtypeStruct((text_len,), jnp.int32)}
    return sp, tp, tcfg, tx, state, batch_abs, frozen


def _shard_abstract(state, batch, frozen, mesh, rules):
    """The abstract inputs with the shardings ``train(..., mesh=, sharding_rules=)`` gives the real ones: state and
    frozen weights by the rule table, batch rows over ``data``, the rest replicated."""
    from jax.sharding import NamedSharding, PartitionSpec

    from jax_vdit import parallel

    def put(tree, shardings):
        return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)

    replicated = NamedSharding(mesh, PartitionSpec())
    rows = NamedSharding(mesh, PartitionSpec("data"))
    state = put(state, parallel.tree_shardings(state, mesh, rules))
    batch = put(batch, jax.tree.map(lambda _: rows, batch))
    frozen = {k: put(v, parallel.tree_shardings(v, mesh, rules)) if k == "teacher"
              else jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=replicated) for k, v in frozen.items()}
    return state, batch, frozen


def analyze(size: str, stage: str, batch: int, compile_: bool, fsdp_devices: int = 0,
            scan_layers: bool = False, sets: tuple[str, ...] = ()) -> dict:
    """Lower (and compile) the jitted train step on abstract inputs; XLA's memory and cost analyses. With
    ``fsdp_devices`` = N: the step of an N-device data-parallel mesh with FSDP rules (parameters, AdamW moments,
    EMAs and the frozen teacher split over ``data``; ``batch`` is the global batch), per device."""
    from jax_vdit.training import make_train_step, objective_for_mesh

    student_cfg, teacher_cfg, latent, text_len = configs(size)
    sp, tp, tcfg, tx, state, b, frozen = abstract_inputs(student_cfg, teacher_cfg, latent, text_len, batch, stage,
                                                         scan_layers, sets)
    objective = objectives(stage, sp, tp, latent[1], student_cfg.num_layers)
    mesh = None
    if fsdp_devices:
        from jax_vdit import parallel

        if jax.device_count() < fsdp_devices:
            raise SystemExit(f"--fsdp-devices {fsdp_devices} needs {fsdp_devices} devices, {jax.device_count()} "
                             "visible (on a CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu)")
        mesh = parallel.as_auto_mesh(parallel.make_mesh(seq=1, data=fsdp_devices,
                                                        devices=jax.devices()[:fsdp_devices]))
        rules = parallel.DEFAULT_RULES.fsdp()
        objective = objective_for_mesh(objective, mesh, rules)
        state, b, frozen = _shard_abstract(state, b, frozen, mesh, rules)
    step = make_train_step(sp, objective, tcfg, tx, mesh=mesh)
    t0 = time.perf_counter()
    lowered = step.lower(state, b, frozen)
    row = {"stage": stage, "lower_s": round(time.perf_counter() - t0, 1), "fsdp_devices": fsdp_devices}
    nbytes = lambda tree: int(sum(np.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree)))
    row |= {"state_bytes": nbytes(state), "teacher_bytes": nbytes(frozen["teacher"]), "batch_bytes": nbytes(b),
            "student_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))}
    try:
        cost = getattr(lowered, "lowered", lowered).cost_analysis()
        row["lowered_flops"] = float(cost.get("flops", float("nan"))) if cost else None
    except Exception as err:  # noqa: BLE001 -- backends differ in what they can estimate before compile
        row["lowered_cost_error"] = repr(err)[:200]
    if compile_:
        t0 = time.perf_counter()
        compiled = lowered.compile()
        row["compile_s"] = round(time.perf_counter() - t0, 1)
        row |= _memory_row(compiled)
    return row


def _memory_row(compiled) -> dict:
    """XLA's memory analysis of a compiled step, with the peak estimate (donated state aliases its outputs)."""
    row: dict = {}
    mem = compiled.memory_analysis()
    if mem is not None:
        for k in ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes",
                  "generated_code_size_in_bytes"):
            row[k] = int(getattr(mem, k, 0))
        row["peak_estimate_bytes"] = (row["argument_size_in_bytes"] + row["output_size_in_bytes"]
                                      - row["alias_size_in_bytes"] + row["temp_size_in_bytes"])
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else None
    if cost:  # XLA counts a scanned loop's body once: with scanned layers this is not the step's total
        row["compiled_flops_xla"] = float(cost.get("flops", float("nan")))
    return row


def measure_step(size: str, stage: str, batch: int, steps: int, scan_layers: bool = False,
                 sets: tuple[str, ...] = ()) -> dict:
    """Real arrays (random weights): lower and compile the step once (timed, with XLA's memory analysis), then
    time ``steps`` steps of that executable; peak device memory where the backend reports it."""
    from jax_vdit.model import random_model
    from jax_vdit.training import ModelParts, init_state, make_train_step, release_arrays

    student_cfg, teacher_cfg, latent, text_len = configs(size)
    student, teacher = random_model(student_cfg, seed=0), random_model(teacher_cfg, seed=1)
    sp, tp, tcfg, tx, *_ = abstract_inputs(student_cfg, teacher_cfg, latent, text_len, batch, stage, scan_layers,
                                           sets)
    sp, tp = ModelParts(student), ModelParts(teacher)
    state = init_state(sp.params(), tcfg, tx)
    release_arrays(sp.params())  # the state has its copy: as `vdit distill` (train(release_model=True)) does
    c = student_cfg.caption_channels
    rng = np.random.default_rng(0)
    b = {"latents": jnp.asarray(rng.standard_normal((batch, *latent)), jnp.float32),
         "text": jnp.asarray(rng.standard_normal((batch, text_len, c)), jnp.float32),
         "text_mask": jnp.ones((batch, text_len), jnp.int32)}
    frozen = {"teacher": tp.params(), "uncond_text": jnp.zeros((text_len, c)),
              "uncond_mask": jnp.ones((text_len,), jnp.int32)}
    if stage == "kd":
        frozen = {"teacher": frozen["teacher"]}
    del student, teacher
    step = make_train_step(sp, objectives(stage, sp, tp, latent[1], student_cfg.num_layers), tcfg, tx)
    t0 = time.perf_counter()
    lowered = step.lower(state, b, frozen)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    row = {"stage": stage, "batch": batch, "lower_s": round(lower_s, 1), "compile_s": round(compile_s, 1),
           "student_params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))}
    row |= _memory_row(compiled)
    t0 = time.perf_counter()
    state, m = compiled(state, b, frozen)
    jax.block_until_ready(m)
    row["first_step_s"] = round(time.perf_counter() - t0, 3)
    times, losses = [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = compiled(state, b, frozen)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
        losses.append(float(m["loss"]))
    stats = jax.devices()[0].memory_stats() or {}
    row |= {"step_s": round(float(np.median(times)), 4), "step_s_all": [round(t, 4) for t in times],
            "loss": losses[-1], "losses_finite": bool(np.all(np.isfinite(losses))),
            "peak_bytes": stats.get("peak_bytes_in_use"), "bytes_limit": stats.get("bytes_limit")}
    return row


def measure_search(size: str, clips: int) -> dict:
    from jax_vdit.distill import search_masks
    from jax_vdit.model import random_model

    student_cfg, _, latent, text_len = configs(size)
    model = random_model(student_cfg.replace(remat=False), seed=0)
    rng = np.random.default_rng(0)
    c = student_cfg.caption_channels
    calib = [{"latents": jnp.asarray(rng.standard_normal((clips, *latent)), student_cfg.compute_jnp_dtype),
              "timestep": jnp.full((clips,), t, jnp.float32),
              "text": jnp.asarray(rng.standard_normal((clips, text_len, c)), jnp.float32),
              "text_mask": jnp.ones((clips, text_len), jnp.int32)} for t in (999, 749, 499, 249)]
    t0 = time.perf_counter()
    _, reports, errors = search_masks(model, calib, 0.1, num_frames=latent[1])
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    search_masks(model, calib, 0.1, num_frames=latent[1])  # again: the compiled program, no compile
    return {"layers": len(reports), "candidates": int(np.shape(errors)[1]), "clips": clips,
            "timesteps": len(calib), "search_s": round(first, 2), "search_again_s": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="tiny", choices=sorted(SIZES))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--clips", type=int, default=2, help="calibration clips of the mask search")
    p.add_argument("--analyze-only", action="store_true", help="no arrays: lower/compile on abstract inputs")
    p.add_argument("--lower-only", action="store_true", help="with --analyze-only: skip compile (faster)")
    p.add_argument("--fsdp-devices", type=int, default=0,
                   help="with --analyze-only: the step on an N-device data mesh with FSDP rules, per device (N devices "
                        "must be visible; fake CPU devices will do)")
    p.add_argument("--stages", default="mlcd,kd,search", help="comma-separated: mlcd, kd, search (run mode); "
                   "peak memory is per process, so measure stages in separate processes to get each one's peak")
    p.add_argument("--scan-layers", action="store_true", help="scan the train step over the blocks (TrainConfig."
                   "scan_layers; default: unrolled, as `vdit distill` trains)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a `vdit distill` recipe setting that shapes the training state, e.g. mlcd_export=student, "
                        "adam_mu_dtype=bfloat16 (repeat for several)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    try:
        recipe_for(args.scan_layers, tuple(args.sets))
    except ValueError as err:
        p.error(str(err))
    device = jax.devices()[0]
    header = {"date": datetime.date.today().isoformat(), "device": f"{device.platform}:{device.device_kind}",
              "jax": jax.__version__, "scan_layers": args.scan_layers,
              "command": "python -m experiments.bench_distill " + " ".join(sys.argv[1:] if argv is None else argv),
              "size": args.size, "batch": args.batch, "recipe_sets": args.sets}
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - {"mlcd", "kd", "search"}
    if unknown:
        p.error(f"unknown stages {sorted(unknown)}")
    if args.analyze_only:
        rows = {"analysis": [analyze(args.size, s, args.batch, not args.lower_only, args.fsdp_devices,
                                     args.scan_layers, tuple(args.sets)) for s in stages if s != "search"]}
    else:
        rows = {"steps": [measure_step(args.size, s, args.batch, args.steps, args.scan_layers, tuple(args.sets))
                          for s in stages if s != "search"]}
        if "search" in stages:
            rows["search"] = measure_search(args.size, args.clips)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variant = (f"_fsdp{args.fsdp_devices}" if args.fsdp_devices else "") + ("_scan" if args.scan_layers else "")
    variant += "".join("_" + item.replace("=", "-") for item in args.sets)
    tag = f"{args.size}_{'analysis' if args.analyze_only else 'run'}_{'-'.join(stages)}{variant}_{device.platform}"
    (out / f"{tag}.json").write_text(json.dumps({"header": header, **rows}, indent=2) + "\n")
    print(json.dumps({"header": header, **rows}, indent=1))


if __name__ == "__main__":
    main()
