"""Train the toy-world teacher, export it, and score it with ToyBench at several samplers (issue: toy world).

Runs on the GPU machine (bf16 compute) within one call; resumable if cut short (rerun with the same --run).
Outputs (under --out):
  toy_teacher/            the EMA teacher in the release format (config.json + diffusion_pytorch_model.safetensors)
  toybench.json / .md     ToyBench of the teacher on the 32 held-out prompts for each sampler setting
  metrics.jsonl, metrics.png, train_config.json   the training curve and settings
  samples_*.gif           sample grids

Usage::

    python -m experiments.train_toy_teacher --steps 8000 --out $OUT/teacher --time-limit 420
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import jax

from experiments.studies.presets import register
from jax_vdit import sampling
from jax_vdit.toy import (
    BEST_EMA, TeacherCheck, TeacherRecipe, export_release_folder, heldout, sample_specs, toybench, train_teacher,
)
from jax_vdit.toy.world import format_table, get_config, save_grid_gif

ROOT = Path(__file__).resolve().parents[1]


def evaluate_teacher(model, world, out: Path, guidance: list[float], key, prompts: int, quick: bool = False) -> dict:
    """ToyBench of ``model`` per sampler setting; ``quick``: Euler-ancestral 100 and 4 steps at the first guidance
    only (a mid-run check)."""
    specs = heldout(world, prompts)
    settings = {}
    g0 = guidance[0]
    for g in guidance[:1] if quick else guidance:
        settings[f"euler-a 100 g{g}"] = (sampling.euler_ancestral(100), g)
    for n in (4,) if quick else (20, 8, 4):
        settings[f"euler-a {n} g{g0}"] = (sampling.euler_ancestral(n), g0)
    for n in () if quick else (100, 8, 4):
        settings[f"ddim {n} g{g0}"] = (sampling.ddim(n), g0)
    results, videos, timings = {}, {}, {}
    reference = None
    for name, (plan, g) in settings.items():
        t0 = time.perf_counter()
        videos[name] = sample_specs(model, specs, world, plan=plan, guidance_scale=g, key=key)
        timings[name] = round(time.perf_counter() - t0, 2)
        if name == f"ddim 100 g{g0}":
            reference = videos[name]
    for name in settings:
        ref = reference if name.startswith("ddim") else None
        results[name] = toybench(videos[name], specs, world, reference=ref) | {"sampling_s": timings[name]}
    captions = [s.caption for s in specs[:16]]
    for name in [n for n in (f"euler-a 100 g{g0}", f"euler-a 4 g{g0}", f"ddim 4 g{g0}") if n in videos]:
        save_grid_gif(videos[name][:16], out / f"samples_{name.replace(' ', '_')}.gif", captions=captions,
                      config=world, scale=4, ncols=4)
    return results


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                   help="after warmup: constant, or cosine decay to --final-lr-fraction at --steps")
    p.add_argument("--final-lr-fraction", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--b2", type=float, default=0.999, help="AdamW second-moment decay")
    p.add_argument("--qk-clip", type=float, default=None,
                   help="cap every self-attention head's q/k gain at this value after each update (jax_vdit.qk_clip)")
    p.add_argument("--quick-eval", action="store_true", help="score Euler-ancestral 100 and 4 steps only")
    p.add_argument("--samples", type=int, default=100_000)
    p.add_argument("--run", default="/tmp/toy_teacher_run")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "toy_teacher"))
    p.add_argument("--time-limit", type=float, default=None, help="stop training after this many seconds")
    p.add_argument("--guidance", default="4.0,2.0,7.5")
    p.add_argument("--compute-dtype", default="bfloat16")
    p.add_argument("--world", default="toy-9x24x24")
    p.add_argument("--model", default="toy-teacher")
    p.add_argument("--eval-prompts", type=int, default=32)
    p.add_argument("--init-from", default=None, help="continue from these weights (e.g. jax_vdit/toy/assets/toy_teacher)")
    p.add_argument("--adapt-to-world", action="store_true",
                   help="--init-from weights recorded in another toy world: fine-tune them on --world (the export "
                        "records --world); without it such weights are refused")
    p.add_argument("--mix-world", default=None,
                   help="a curriculum world whose samples make up --mix-fraction of every batch (e.g. "
                        "toy-sign-9x24x24-subframe, so the sign of motion it teaches is kept)")
    p.add_argument("--mix-fraction", type=float, default=0.0)
    p.add_argument("--check-every", type=int, default=0,
                   help="ToyBench the EMA teacher every N steps (Euler-a --check-steps, g = first --guidance) and "
                        "keep the best in <run>/best_ema; 0: off")
    p.add_argument("--check-steps", type=int, default=100)
    p.add_argument("--export", default="last", choices=("last", "best"),
                   help="export and score the final EMA teacher, or the best one of the checks")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = TeacherRecipe(world=args.world, model=args.model, steps=args.steps, batch_size=args.batch, learning_rate=args.lr,
                           warmup_steps=args.warmup, lr_schedule=args.lr_schedule,
                           final_lr_fraction=args.final_lr_fraction, adam_b2=args.b2,
                           qk_clip_max_gain=args.qk_clip, num_samples=args.samples,
                           compute_dtype=args.compute_dtype, mix_world=args.mix_world,
                           mix_fraction=args.mix_fraction)
    t0 = time.perf_counter()
    guidance = [float(g) for g in args.guidance.split(",")]
    check = None
    if args.check_every:
        check = TeacherCheck(every=args.check_every, prompts=args.eval_prompts, steps=args.check_steps,
                             guidance=guidance[0])
    result = train_teacher(recipe, args.run, time_limit_s=args.time_limit, init_from=args.init_from, check=check,
                           adapt_to_world=args.adapt_to_world)
    train_s = time.perf_counter() - t0
    steps_done = int(result.state.step)
    run = Path(args.run)
    for name in ("metrics.jsonl", "metrics.png", "train_config.json", "evals.jsonl"):
        if (run / name).exists():
            shutil.copy(run / name, out / name)
    world = get_config(recipe.world)
    exported_step = steps_done
    if args.export == "best":
        if not (run / BEST_EMA).is_dir():
            raise SystemExit(f"--export best: no {run / BEST_EMA} (needs --check-every and at least one check)")
        shutil.rmtree(out / "toy_teacher", ignore_errors=True)
        shutil.copytree(run / BEST_EMA, out / "toy_teacher")
        exported_step = json.loads((run / BEST_EMA / "check.json").read_text())["step"]
    else:
        export_release_folder(result.model("ema"), out / "toy_teacher", dtype="bfloat16", world=recipe.world)
    # evaluate the exported weights (bf16 storage) exactly as users will load them, fp32 compute
    from jax_vdit.toy import load_toy_teacher

    shipped = load_toy_teacher(out / "toy_teacher", compute_dtype="float32")
    results = evaluate_teacher(shipped, world, out, guidance, jax.random.key(1234), args.eval_prompts,
                               quick=args.quick_eval)
    header = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": jax.devices()[0].device_kind, "jax": jax.__version__,
        "command": "python -m experiments.train_toy_teacher " + " ".join(sys.argv[1:]),
        "recipe": recipe.__dict__, "init_from": args.init_from, "adapt_to_world": args.adapt_to_world,
        "steps_done": steps_done,
        "exported": args.export, "exported_step": exported_step, "train_wall_s": round(train_s, 1),
        "final_loss": result.history[-1] if result.history else None,
    }
    (out / "toybench.json").write_text(json.dumps({"header": header, "results": results}, indent=2, default=float))
    keys = ["alignment", "overall", "smoothness", "consistency", "dynamic_degree", "speed_ratio", "teacher_rel_err",
            "sampling_s"]
    table = format_table(results, keys=keys)
    (out / "toybench.md").write_text(
        f"# Toy teacher ToyBench ({header['device']}, {header['date']})\n\nCommand: `{header['command']}`\n\n"
        f"Steps trained: {steps_done}; exported: {args.export} EMA (step {exported_step}); {args.eval_prompts} "
        f"held-out prompts; teacher_rel_err is against DDIM-100 from the same noise.\n\n{table}\n")
    print(table)
    print(json.dumps(header, default=float))


if __name__ == "__main__":
    main()
