"""``vdit``: one console entry with subcommands.

  vdit demo            sample held-out toy-world prompts with the shipped toy teacher and students (CPU, < 2 min)
  vdit sample          generate latents (and an mp4 when a VAE is given) from a checkpoint and a prompt
  vdit train-teacher   train a toy-world teacher with the release objective (resumable)
  vdit toybench        score a toy checkpoint with ToyBench for sampler settings
  vdit convert         convert a release checkpoint to our orbax format (same as ``vdit-convert``)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _cmd_demo(args: argparse.Namespace) -> int:
    from jax_vdit.demo import run_demo

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


def _load_text(args, caption_channels: int):
    import numpy as np

    from jax_vdit.text_encoder import encode_prompts, load_embeddings

    if args.embeddings:
        data = load_embeddings(args.embeddings)
        if data["text"].shape[-1] != caption_channels:
            raise ValueError(f"embeddings have {data['text'].shape[-1]} channels, the model expects {caption_channels}")
        return data
    if not args.prompt:
        raise ValueError("give --prompt (with --text-encoder) or --embeddings")
    if not args.text_encoder:
        raise ValueError("--prompt needs --text-encoder: a local google/mt5-xxl folder, or 'toy' for toy-world "
                         "models; or pass precomputed --embeddings (no download happens at run time)")
    data = encode_prompts(list(args.prompt), args.text_encoder, negative_prompt=args.negative_prompt,
                          caption_channels=caption_channels)
    return {k: np.asarray(v) for k, v in data.items()}


def _cmd_sample(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    from safetensors.numpy import save_file

    from jax_vdit.generate import VideoSize, attention_from_spec, plan_from_name
    from jax_vdit.sampling import StepTimer, sample
    from jax_vdit.weights import load_model

    size = VideoSize(args.frames, args.height, args.width)  # validates before anything slow happens
    if args.compile_cache:
        # compiled sampler and VAE stages are reused across runs (the first VAE decode compiles for ~2 minutes)
        jax.config.update("jax_compilation_cache_dir", str(Path(args.compile_cache).expanduser()))
    plan = plan_from_name(args.sampler, args.steps, args.edges)
    t0 = time.perf_counter()
    model = load_model(args.checkpoint, param_dtype=args.param_dtype, compute_dtype=args.compute_dtype,
                       config=args.config)
    load_s = time.perf_counter() - t0
    text = _load_text(args, model.cfg.caption_channels)
    attention = attention_from_spec(args.attention, model.cfg.num_layers, size.latent_shape[1],
                                    tile_backend=args.tile_backend)
    use_cfg = args.guidance is not None and args.guidance != 1.0 and "negative_text" in text
    kwargs = dict(key=jax.random.key(args.seed), latent_shape=size.latent_shape, plan=plan, attention=attention,
                  latent_dtype=jnp.float32 if args.fp32_latents else jnp.bfloat16)
    if use_cfg:
        kwargs.update(negative_text=jnp.asarray(text["negative_text"]), negative_mask=jnp.asarray(text["negative_mask"]),
                      guidance_scale=args.guidance)
    pos, mask = jnp.asarray(text["text"]), jnp.asarray(text["text_mask"])
    # compile (one step) separately so that sampling time and per-step times are clean
    t0 = time.perf_counter()
    jax.block_until_ready(sample(model, pos, mask, **dict(kwargs, plan=plan.truncated(1))))
    compile_s = time.perf_counter() - t0
    timer = StepTimer(plan.num_steps, disable=args.quiet)
    t0 = time.perf_counter()
    latents = jax.block_until_ready(sample(model, pos, mask, progress=timer, **kwargs))
    jax.effects_barrier()
    sample_s = time.perf_counter() - t0
    timer.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"latents": jax.device_get(latents).astype("float32")}, str(out))
    steps = timer.times[1:] or timer.times
    report = {"load_s": round(load_s, 2), "compile_s": round(compile_s, 2), "sampling_s": round(sample_s, 2),
              "s_per_step_median": round(sorted(steps)[len(steps) // 2], 4) if steps else None,
              "latent_shape": list(latents.shape), "out": str(out)}
    if args.vae:
        from jax_vdit.vae import decode_latents_to_video, load_vae, write_video

        t0 = time.perf_counter()
        vae = load_vae(args.vae, dtype=jnp.bfloat16 if args.compute_dtype == "bfloat16" else jnp.float32)
        frames = decode_latents_to_video(vae, latents)
        for i, video in enumerate(frames):
            path = out.with_suffix("") if len(frames) == 1 else out.with_name(f"{out.stem}_{i}")
            write_video(video, path.with_suffix(".mp4"), fps=24)
        report["decode_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report))
    return 0


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    from jax_vdit.toy import BEST_EMA, TeacherCheck, TeacherRecipe, export_release_folder, train_teacher

    recipe = TeacherRecipe(world=args.world, model=args.model, steps=args.steps, batch_size=args.batch,
                           learning_rate=args.lr, warmup_steps=args.warmup, num_samples=args.samples,
                           compute_dtype=args.compute_dtype, seed=args.seed, checkpoint_every=args.checkpoint_every,
                           mix_world=args.mix_world, mix_fraction=args.mix_fraction)
    check = (TeacherCheck(every=args.check_every, steps=args.check_steps, prompts=args.check_prompts)
             if args.check_every else None)
    result = train_teacher(recipe, args.run, time_limit_s=args.time_limit, init_from=args.init_from, check=check,
                           adapt_to_world=args.adapt_to_world)
    if check is not None:
        print(f"ToyBench checks in {Path(args.run) / 'evals.jsonl'}; best EMA teacher in {Path(args.run) / BEST_EMA}")
    if int(result.state.step) >= recipe.steps and args.export:
        export_release_folder(result.model("ema"), args.export, world=recipe.world)
        print(f"exported the EMA teacher to {args.export}")
    print(f"step {int(result.state.step)}/{recipe.steps}; metrics in {Path(args.run) / 'metrics.jsonl'}")
    return 0


def _cmd_toybench(args: argparse.Namespace) -> int:
    import jax

    from jax_vdit.generate import plan_from_name
    from jax_vdit.model import DENSE
    from jax_vdit.toy import (STUDENT_FILE, TOY_TEACHER_DIR, heldout, load_toy_student, load_toy_teacher,
                              sample_specs, toybench, world_for, write_json)
    from jax_vdit.toyworld import format_table

    folder = Path(args.checkpoint) if args.checkpoint else TOY_TEACHER_DIR
    world = world_for(folder, args.world)
    attention, own_plan = DENSE, None
    if (folder / STUDENT_FILE).is_file():
        # a distilled student samples the way it was distilled: its tile masks (sparse students) and its
        # consistency edges; scoring it dense or on other edges would be a silent wrong answer
        student = load_toy_student(folder, compute_dtype=args.compute_dtype, num_frames=world.num_frames)
        model, attention, own_plan = student.model, student.attention, student.plan
        args.setting = args.setting or [f"consistency:{student.plan.num_steps}:none"]
    else:
        model = load_toy_teacher(args.checkpoint, compute_dtype=args.compute_dtype)
    args.setting = args.setting or ["euler_ancestral:100:4", "euler_ancestral:4:4"]
    specs = heldout(world, args.prompts)
    results = {}
    for setting in args.setting:
        sampler, steps, guidance = setting.split(":")
        g = None if guidance in ("none", "") else float(guidance)
        if own_plan is not None and sampler == "consistency" and int(steps) == own_plan.num_steps:
            plan = own_plan
        else:
            plan = plan_from_name(sampler, int(steps))
        videos = sample_specs(model, specs, world, plan=plan, guidance_scale=g, key=jax.random.key(args.seed),
                              attention=attention)
        results[setting] = toybench(videos, specs, world)
    print(format_table(results, keys=["alignment", "overall", "smoothness", "consistency", "dynamic_degree",
                                      "direction_acc"]))
    if args.json:
        header = {"command": "vdit toybench " + " ".join(args.argv), "device": jax.devices()[0].device_kind,
                  "jax": jax.__version__, "world": world.name, "prompts": args.prompts, "seed": args.seed}
        write_json(args.json, {"header": header, "results": results})
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from convert.__main__ import main as convert_main

    return convert_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdit", description="jax-vdit: efficient video DiTs in JAX")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="toy-world demo: the shipped teacher and its distilled students (CPU friendly)")
    d.add_argument("--out", default="outputs/demo")
    d.add_argument("--prompts", type=int, default=8, help="number of held-out prompts (max 32)")
    d.add_argument("--steps", type=int, default=10, help="Euler-ancestral steps for the teacher row")
    d.add_argument("--guidance", type=float, default=4.0)
    d.add_argument("--teacher", default=None, help="a toy teacher folder (default: the shipped one)")
    d.add_argument("--student", action="append", default=None,
                   help="a distilled student folder (with student.json; repeatable); default: the shipped students")
    d.add_argument("--no-students", action="store_true", help="teacher rows only")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("sample", help="generate latents / video from a prompt")
    s.add_argument("checkpoint", help="orbax model checkpoint, release folder, or weights file (with --config)")
    s.add_argument("--config", default=None, help="preset name when the checkpoint has no config")
    s.add_argument("--prompt", action="append", help="text prompt (repeat for a batch)")
    s.add_argument("--negative-prompt", default=None, help="default: the release's negative prompt")
    s.add_argument("--embeddings", default=None, help="precomputed text embeddings (.safetensors)")
    s.add_argument("--text-encoder", default=None, help="local google/mt5-xxl folder, or 'toy'")
    s.add_argument("--frames", type=int, default=29, help="pixel frames, 4k+1")
    s.add_argument("--height", type=int, default=720)
    s.add_argument("--width", type=int, default=1280)
    s.add_argument("--sampler", default="euler_ancestral", choices=["euler_ancestral", "ddim", "consistency"])
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--edges", default=None, help="consistency sampler: comma-separated segment edges, e.g. 0,250,500,750")
    s.add_argument("--guidance", type=float, default=7.5, help="CFG scale (1 disables CFG)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--attention", default="dense", help="dense (cuDNN) | full (dense through the tile kernel: the fastest dense path on H100) | "
                   "k:m (e.g. 1:7) on every layer | mask schedule JSON")
    s.add_argument("--tile-backend", default="auto")
    s.add_argument("--param-dtype", default="bfloat16")
    s.add_argument("--compute-dtype", default="bfloat16")
    s.add_argument("--fp32-latents", action="store_true", help="keep latents in fp32 between steps")
    s.add_argument("--vae", default=None, help="CausalVAE folder: decode to mp4 next to --out")
    s.add_argument("--out", default="outputs/sample.safetensors")
    s.add_argument("--compile-cache", default="~/.cache/jax-vdit/xla",
                   help="persistent XLA compilation cache directory ('' to disable)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_sample)

    t = sub.add_parser("train-teacher", help="train a toy-world teacher (release objective, resumable)")
    t.add_argument("--run", default="runs/toy_teacher")
    t.add_argument("--world", default="toy-9x24x24")
    t.add_argument("--model", default="toy-teacher")
    t.add_argument("--steps", type=int, default=8000)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--warmup", type=int, default=300, help="linear warmup steps (keep them when --init-from)")
    t.add_argument("--samples", type=int, default=100_000)
    t.add_argument("--compute-dtype", default="bfloat16")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=1000)
    t.add_argument("--time-limit", type=float, default=None, help="stop (with a checkpoint) after this many seconds")
    t.add_argument("--export", default=None, help="write the EMA teacher here (release format) when done")
    t.add_argument("--init-from", default=None, help="start from these weights (e.g. jax_vdit/assets/toy_teacher)")
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
    t.add_argument("--check-prompts", type=int, default=32, help="held-out prompts of those checks")
    t.set_defaults(func=_cmd_train_teacher)

    b = sub.add_parser("toybench", help="ToyBench of a toy checkpoint for sampler settings")
    b.add_argument("checkpoint", nargs="?", default=None, help="default: the shipped toy teacher")
    b.add_argument("--world", default=None, help="default: the world recorded with the checkpoint (toy_world.json)")
    b.add_argument("--setting", action="append", default=None,
                   help="sampler:steps:guidance, e.g. euler_ancestral:100:4 or consistency:4:none (repeatable; "
                        "default: Euler-a 100 and 4 at guidance 4 for a teacher, its own plan for a student)")
    b.add_argument("--prompts", type=int, default=32)
    b.add_argument("--compute-dtype", default="float32")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", default=None, help="also write every score (per attribute) and the command here")
    b.set_defaults(func=_cmd_toybench)

    c = sub.add_parser("convert", help="convert a release checkpoint (see vdit-convert --help)", add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)
    c.set_defaults(func=_cmd_convert)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # the subcommand's own arguments, for records
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        print(f"vdit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
