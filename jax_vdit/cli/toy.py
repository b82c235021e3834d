"""The toy-world commands: ``vdit demo``, ``vdit train-teacher``, ``vdit toybench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jax_vdit.cli.time_limit import command_deadline


def _cmd_demo(args: argparse.Namespace) -> int:
    from jax_vdit.toy.demo import run_demo

    students = None  # the shipped students
    if args.no_students:
        students = {}
    elif args.student:
        students = {Path(f).name: Path(f) for f in args.student}
    summary = run_demo(args.out, prompts=args.prompts, steps=args.steps, guidance=args.guidance,
                       teacher=args.teacher, students=students, seed=args.seed)
    print(summary["table"])
    print(f"\nwrote {Path(args.out) / 'grid.gif'} and toybench.json; device {summary['device']}; "
          f"model load {summary['load_s']} s; total {summary['total_s']} s")
    return 0


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from jax_vdit.toy import BEST_EMA, TeacherCheck, TeacherRecipe, export_release_folder, train_teacher

    recipe = TeacherRecipe(world=args.world, model=args.model, steps=args.steps, batch_size=args.batch,
                           learning_rate=args.lr, warmup_steps=args.warmup, lr_schedule=args.lr_schedule,
                           final_lr_fraction=args.final_lr_fraction, decay_fraction=args.decay_fraction,
                           num_samples=args.samples,
                           compute_dtype=args.compute_dtype, seed=args.seed, checkpoint_every=args.checkpoint_every,
                           mix_world=args.mix_world, mix_fraction=args.mix_fraction, scan_layers=args.scan_layers)
    check = (TeacherCheck(every=args.check_every, steps=args.check_steps, prompts=args.check_prompts,
                          seeds=args.check_seeds)
             if args.check_every else None)
    from dataclasses import asdict

    from jax_vdit.training import check_resume_config

    # a resumed run must use its original world, batch, learning rate, ...: refuse before rendering any data
    check_resume_config(args.run, recipe.train_config(), {"recipe": asdict(recipe)})
    result = train_teacher(recipe, args.run, time_limit_s=command_deadline(args), init_from=args.init_from, check=check,
                           adapt_to_world=args.adapt_to_world)
    if check is not None:
        print(f"ToyBench checks in {Path(args.run) / 'evals.jsonl'}; best EMA teacher in {Path(args.run) / BEST_EMA}")
    if int(result.state.step) >= recipe.steps and args.export:
        export_release_folder(result.model("ema"), args.export, world=recipe.world)
        print(f"exported the EMA teacher to {args.export}")
    print(f"step {int(result.state.step)}/{recipe.steps}; metrics in {Path(args.run) / 'metrics.jsonl'}")
    return 0


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ValueError naming the problem for anything else (empty, non-integer, repeats)."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, e.g. 0,1,2 (got {text!r})") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list at least one seed and no seed twice (got {text!r})")
    return seeds


def _cmd_toybench(args: argparse.Namespace) -> int:
    import jax

    from jax_vdit.sampling import plan_from_name
    from jax_vdit.model import DENSE
    from jax_vdit import toy
    from jax_vdit.records import write_json
    from jax_vdit.toy.bench import device_info, extend_seeds, summarise_seeds
    from jax_vdit.toy.world import format_table, report_split

    seeds = parse_seeds(args.seeds)
    if args.extend and not (args.json and Path(args.json).is_file()):
        raise ValueError(f"--extend adds seeds to an existing --json file; {args.json!r} is not one")
    folder = Path(args.checkpoint) if args.checkpoint else toy.TOY_TEACHER_DIR
    world = toy.world_for(folder, args.world)
    split = report_split(world, args.split)
    specs = split.take(args.prompts)  # a bad --prompts is named before any model is loaded
    attention, own_plan = DENSE, None
    if (folder / toy.STUDENT_FILE).is_file():
        # a distilled student samples the way it was distilled: its tile masks (sparse students) and its
        # consistency edges; scoring it dense or on other edges would be a silent wrong answer
        student = toy.load_toy_student(folder, compute_dtype=args.compute_dtype, num_frames=world.num_frames)
        model, attention, own_plan = student.model, student.attention, student.plan
        args.setting = args.setting or [f"consistency:{student.plan.num_steps}:none"]
    else:
        model = toy.load_toy_teacher(args.checkpoint, compute_dtype=args.compute_dtype)
    args.setting = args.setting or ["euler_ancestral:100:4", "euler_ancestral:4:4"]
    results = {}
    for setting in args.setting:
        sampler, steps, guidance = setting.split(":")
        g = None if guidance in ("none", "") else float(guidance)
        if own_plan is not None and sampler == "consistency" and int(steps) == own_plan.num_steps:
            plan = own_plan
        else:
            plan = plan_from_name(sampler, int(steps))
        per_seed = {}
        for seed in seeds:
            videos = toy.sample_specs(model, specs, world, plan=plan, guidance_scale=g, key=jax.random.key(seed),
                                      attention=attention)
            per_seed[seed] = toy.toybench(videos, specs, world)
        results[setting] = summarise_seeds(per_seed)
    device = device_info()
    header = {"command": "vdit toybench " + " ".join(args.argv), "checkpoint": str(args.checkpoint or folder),
              **device, "jax": jax.__version__, "world": world.name, "split": split.name, "prompts": len(specs),
              "seeds": seeds}
    payload = {"header": header, "results": results}
    if args.extend:
        payload = extend_seeds(json.loads(Path(args.json).read_text()), payload)
        results, seeds = payload["results"], payload["header"]["seeds"]
    print(f"ToyBench on the {split.name} split of {world.name}: {len(specs)} prompts, noise seeds {seeds}, "
          f"device {device['platform']} ({device['device_kind']}); means over seeds:")
    print(format_table({k: r["mean"] for k, r in results.items()},
                       keys=["alignment", "overall", "smoothness", "consistency", "dynamic_degree", "direction_acc"]))
    for setting, r in results.items():
        sd = r["sd"]["alignment"]
        per = ", ".join(f"{r['per_seed'][s]['alignment']:.3f}" for s in seeds)
        print(f"{setting}: alignment {r['mean']['alignment']:.3f}"
              + (f" +/- {sd:.3f} (sd over seeds)" if sd is not None else "") + f"; per seed {per}")
    if args.json:
        write_json(args.json, payload)
    return 0


def register(sub) -> None:
    d = sub.add_parser("demo", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="toy-world demo: the shipped teacher and its distilled students (CPU friendly)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--prompts", type=int, default=8, help="number of validation prompts (max 32)")
    d.add_argument("--steps", type=int, default=10, help="Euler-ancestral steps for the teacher row")
    d.add_argument("--guidance", type=float, default=4.0)
    d.add_argument("--teacher", default=None, help="a toy teacher folder (default: the shipped one)")
    d.add_argument("--student", action="append", default=None,
                   help="a distilled student folder (with student.json; repeatable); default: the shipped students")
    d.add_argument("--no-students", action="store_true", help="teacher rows only")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train-teacher", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="train a toy-world teacher (release objective, resumable)")
    t.add_argument("--run", default="runs/toy_teacher")
    t.add_argument("--world", default="toy-9x24x24")
    t.add_argument("--model", default="toy-teacher")
    t.add_argument("--steps", type=int, default=8000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--warmup", type=int, default=300, help="linear warmup steps (keep them when --init-from)")
    t.add_argument("--lr-schedule", choices=("constant", "cosine", "wsd"), default="constant",
                   help="after warmup: constant (--steps may then grow on resume); cosine decay to "
                        "--final-lr-fraction x --lr at --steps (e.g. a cool-down stage --init-from a teacher); or wsd "
                        "(warmup-stable-decay): constant, then that cosine decay over the last --decay-fraction of "
                        "the steps")
    t.add_argument("--final-lr-fraction", type=float, default=0.0, help="the decay's last learning rate / --lr")
    t.add_argument("--decay-fraction", type=float, default=0.2, help="wsd: the share of the steps after warmup "
                   "spent decaying")
    t.add_argument("--samples", type=int, default=100_000)
    t.add_argument("--compute-dtype", default="bfloat16")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--scan-layers", action="store_true",
                   help="scan the training step over the blocks (fewer compiled blocks; slower steps than the default "
                        "unrolled loop, see TrainConfig.scan_layers)")
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--time-limit", type=float, default=None,
                   help="stop with a checkpoint once this many seconds have passed since the command started (data "
                        "rendering and compiling included; leave room for the last checkpoint and the export); "
                        "rerun the same command to continue")
    t.add_argument("--export", default=None, help="write the EMA teacher here (release format) when done")
    t.add_argument("--init-from", default=None, help="start from these weights (e.g. jax_vdit/toy/assets/toy_teacher)")
    t.add_argument("--adapt-to-world", action="store_true",
                   help="--init-from weights recorded in another toy world: fine-tune them on --world")
    t.add_argument("--mix-world", default=None,
                   help="a world whose samples make up --mix-fraction of every batch. The shipped teacher: stage 1 "
                        "on toy-sign-9x24x24-subframe, then --world toy-9x24x24-subframe --adapt-to-world "
                        "--mix-world toy-sign-9x24x24-subframe --mix-fraction 0.25")
    t.add_argument("--mix-fraction", type=float, default=0.0)
    t.add_argument("--check-every", type=int, default=0,
                   help="ToyBench the EMA teacher every N steps and keep the best in <run>/best_ema (0: off)")
    t.add_argument("--check-steps", type=int, default=100, help="Euler-ancestral steps of those checks")
    t.add_argument("--check-prompts", type=int, default=32, help="validation prompts of those checks (never test)")
    t.add_argument("--check-seeds", type=int, default=1,
                   help="noise seeds per check; the best EMA is chosen by their mean alignment (each seed costs one "
                        "more sampling pass; one seed's alignment scatters by about 0.01-0.02 at 32 prompts)")
    t.set_defaults(func=_cmd_train_teacher)

    b = sub.add_parser("toybench", formatter_class=argparse.ArgumentDefaultsHelpFormatter, help="ToyBench of a toy checkpoint for sampler settings")
    b.add_argument("checkpoint", nargs="?", default=None, help="default: the shipped toy teacher")
    b.add_argument("--world", default=None, help="default: the world recorded with the checkpoint (toy_world.json)")
    b.add_argument("--setting", action="append", default=None,
                   help="sampler:steps:guidance, e.g. euler_ancestral:100:4 or consistency:4:none (repeatable; "
                        "default: Euler-a 100 and 4 at guidance 4 for a teacher, its own plan for a student)")
    b.add_argument("--split", choices=("validation", "test"), default="test",
                   help="prompt set: test (final reports; never used by training or checkpoint choice) or "
                        "validation (the original 32 held-out prompts, used by checks and selection)")
    b.add_argument("--prompts", type=int, default=None, help="the first N prompts of the split (default: all)")
    b.add_argument("--seeds", default="0,1,2",
                   help="comma-separated noise seeds; scores are reported as mean +/- sd over them, and per seed")
    b.add_argument("--compute-dtype", default="float32")
    b.add_argument("--json", default=None,
                   help="also write every score (per attribute; mean, sd and per seed), the command and the device")
    b.add_argument("--extend", action="store_true",
                   help="add these seeds to the results already in --json (same checkpoint, world, split, prompts, "
                        "settings, device and jax; no seed twice): a long evaluation in several runs")
    b.set_defaults(func=_cmd_toybench)
