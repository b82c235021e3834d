"""The three-stage Efficient-vDiT pipeline on the toy world: MLCD -> per-layer mask search -> sparse KD.

Starts from a toy teacher (default: the shipped one), distills a 4-step consistency student, searches tile masks
under thresholds r, distills the sparse student, and scores every stage with ToyBench on the 32 held-out prompts
(plus the error against the teacher's 100-step sample from the same noise). The analogue of the paper's Table 2.

Usage (GPU)::

    python -m experiments.distill_toy --out $OUT/distill --mlcd-steps 3000 --kd-steps 800

Cut off (e.g. by a job time limit)? Rerun with the same ``--run``: the teacher's samples are cached there, and MLCD
and KD resume from their checkpoints (with ``--mlcd-time`` / ``--kd-time`` each call trains at most that long more).
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

from jax_vdit import sampling
from jax_vdit.distill import search_masks_over_thresholds, segment_edges
from jax_vdit.model import AttentionConfig
from jax_vdit.toy import (
    DistillRecipe, calibration_batches, distill_mlcd, distill_sparse, export_release_folder, heldout,
    TOY_TEACHER_DIR, load_toy_teacher, sample_specs, toybench, world_for, write_student_info,
)
from jax_vdit.toy.world import format_table, save_grid_gif
from jax_vdit.toy.world.training_set import ToyTrainingSet

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None)
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "distill_toy"))
    p.add_argument("--run", default="/tmp/distill_toy_run")
    p.add_argument("--mlcd-steps", type=int, default=3000)
    p.add_argument("--kd-steps", type=int, default=800)
    p.add_argument("--mlcd-time", type=float, default=None)
    p.add_argument("--kd-time", type=float, default=None)
    p.add_argument("--thresholds", default="0.025,0.05,0.1,0.2,0.4")
    p.add_argument("--threshold", type=float, default=0.1, help="r used for the KD stage")
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--compute-dtype", default="bfloat16")
    p.add_argument("--world", default=None, help="default: the world recorded with the teacher (toy_world.json)")
    p.add_argument("--tile-backend", default="auto", help="for sampling/search; KD trains with 'gather'")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher_dir = Path(args.teacher) if args.teacher else TOY_TEACHER_DIR
    world = world_for(teacher_dir, args.world)
    recipe = DistillRecipe(world=world.name, mlcd_steps=args.mlcd_steps,
                           kd_steps=args.kd_steps, num_samples=args.samples,
                           batch_size=args.batch, threshold=args.threshold, compute_dtype=args.compute_dtype)
    specs = heldout(world, args.prompts)
    teacher = load_toy_teacher(teacher_dir, compute_dtype=args.compute_dtype)
    data = ToyTrainingSet.generate(world, recipe.num_samples, seed=recipe.seed)
    key = jax.random.key(2024)
    edges = segment_edges(recipe.segments)
    student_plan = sampling.consistency(edges)
    results, videos, timings = {}, {}, {}

    cache = Path(args.run) / "teacher_videos"  # teacher samples survive a cut-off run (rerun with the same --run)
    cache.mkdir(parents=True, exist_ok=True)

    def run(name, model, plan, guidance, attention=AttentionConfig(), cached: bool = False):
        path = cache / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".npz")
        if cached and path.exists():
            saved = np.load(path)
            videos[name], timings[name] = saved["videos"], float(saved["seconds"])
            return
        sample_specs(model, specs, world, plan=plan.truncated(1), guidance_scale=guidance, key=key,
                     attention=attention)  # compile
        t0 = time.perf_counter()
        videos[name] = sample_specs(model, specs, world, plan=plan, guidance_scale=guidance, key=key,
                                    attention=attention)
        timings[name] = time.perf_counter() - t0
        if cached:
            np.savez(path, videos=videos[name], seconds=timings[name])

    g = recipe.guidance
    run("teacher euler-a 100 (cfg)", teacher, sampling.euler_ancestral(100), g, cached=True)
    run("teacher ddim 100 (cfg)", teacher, sampling.ddim(100), g, cached=True)
    run("teacher ddim 4 (cfg)", teacher, sampling.ddim(4), g, cached=True)
    run("teacher euler-a 4 (cfg)", teacher, sampling.euler_ancestral(4), g, cached=True)

    t0 = time.perf_counter()
    mlcd = distill_mlcd(teacher, recipe, Path(args.run) / "mlcd", data=data, time_limit_s=args.mlcd_time)
    mlcd_s = time.perf_counter() - t0
    student = mlcd.model("ema")
    student.cfg = teacher.cfg
    run("MLCD student 4 (no cfg)", student, student_plan, None)

    # stage 2: mask search at the student's sampling timesteps
    timesteps = [int(t) for t in student_plan.t_model[:student_plan.num_steps]]
    calib = calibration_batches(world, recipe, timesteps, dtype=jnp.float32)
    search = {}
    chosen = None
    thresholds = sorted({float(x) for x in args.thresholds.split(",")} | {recipe.threshold})
    t0 = time.perf_counter()
    by_threshold, _ = search_masks_over_thresholds(student, calib, thresholds, num_frames=world.num_frames,
                                                   tile_backend=args.tile_backend)  # one error matrix for all r
    search_s = time.perf_counter() - t0
    for r, (schedule, reports) in by_threshold.items():
        density = float(np.mean([rep.density for rep in reports]))
        search[r] = {"mean_density": density, "sparsity_pct": round(100 * (1 - density), 1),
                     "layers": [rep.mask.label() if rep.mask is not None else "dense" for rep in reports],
                     "errors": [round(rep.error, 4) for rep in reports]}
        if abs(r - recipe.threshold) < 1e-12:
            chosen = schedule
    (out / "mask_search.json").write_text(json.dumps({str(k): v for k, v in search.items()}, indent=2))
    chosen.save(out / f"mask_schedule_r{recipe.threshold}.json")
    sparse_attn = AttentionConfig(masks=tuple(chosen), tile_backend=args.tile_backend)
    run(f"MLCD student 4 + masks r={recipe.threshold} (no KD)", student, student_plan, None, sparse_attn)

    t0 = time.perf_counter()
    kd = distill_sparse(student, chosen, recipe, Path(args.run) / "kd", data=data, tile_backend="gather",
                        timesteps=timesteps, time_limit_s=args.kd_time)
    kd_s = time.perf_counter() - t0
    sparse_student = kd.model("ema")
    sparse_student.cfg = teacher.cfg
    run(f"sparse student 4 r={recipe.threshold} (KD)", sparse_student, student_plan, None, sparse_attn)

    reference = videos["teacher ddim 100 (cfg)"]
    for name, vids in videos.items():
        results[name] = toybench(vids, specs, world, reference=reference) | {
            "s_per_video": round(timings[name] / len(specs), 4)}
    teacher_name = args.teacher or str(TOY_TEACHER_DIR.relative_to(ROOT))
    for name, model, sparse in (("toy_student_mlcd", student, False), ("toy_student_sparse", sparse_student, True)):
        export_release_folder(model, out / name, dtype="bfloat16", world=recipe.world)
        if sparse:
            chosen.save(out / name / "mask_schedule.json")
        write_student_info(out / name, edges=edges, guidance_distilled=recipe.guidance, teacher=teacher_name,
                           mask_schedule=sparse, extra={"threshold": recipe.threshold} if sparse else None)
    captions = [s.caption for s in specs[:8]]
    grid = np.concatenate([videos[n][:8, None] for n in ("teacher euler-a 100 (cfg)", "teacher ddim 4 (cfg)",
                                                          "MLCD student 4 (no cfg)",
                                                          f"sparse student 4 r={recipe.threshold} (KD)")], axis=1)
    save_grid_gif(grid.reshape((-1,) + grid.shape[2:]), out / "teacher_vs_students.gif",
                  captions=[c for c in captions for _ in range(4)], config=world, scale=4, ncols=4)
    header = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": jax.devices()[0].device_kind,
              "jax": jax.__version__, "command": "python -m experiments.distill_toy " + " ".join(sys.argv[1:]),
              "recipe": recipe.__dict__, "mlcd_steps_done": int(mlcd.state.step), "mlcd_s": round(mlcd_s, 1),
              "mask_search_s": round(search_s, 1),
              "kd_steps_done": int(kd.state.step), "kd_s": round(kd_s, 1)}
    (out / "distill_toy.json").write_text(json.dumps({"header": header, "results": results, "mask_search": search},
                                                     indent=2, default=float))
    keys = ["alignment", "overall", "smoothness", "consistency", "dynamic_degree", "teacher_rel_err", "s_per_video"]
    table = format_table(results, keys=keys)
    search_rows = "\n".join(f"| {r} | {v['sparsity_pct']} | {' '.join(v['layers'])} |" for r, v in search.items())
    (out / "distill_toy.md").write_text(
        f"# Toy-world Efficient-vDiT pipeline ({header['device']}, {header['date']})\n\nCommand: `{header['command']}`"
        f"\n\n{args.prompts} held-out prompts; teacher_rel_err against the teacher's DDIM-100 sample from the same "
        f"noise.\n\n"
        f"{table}\n\n## Mask search (student, 4 sampling timesteps)\n\n| r | sparsity % | layer masks |\n|---|---|---|\n"
        f"{search_rows}\n")
    for name in ("mlcd", "kd"):
        for f in ("metrics.jsonl", "metrics.png"):
            src = Path(args.run) / name / f
            if src.exists():
                (out / f"{name}_{f}").write_bytes(src.read_bytes())
    print(table)
    print(json.dumps(header, default=float))


if __name__ == "__main__":
    main()
