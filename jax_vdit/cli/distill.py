"""``vdit distill``: the Efficient-vDiT stages on a teacher/student folder and prepared data (docs/distill.md).

  vdit distill config FILE                      write the default recipe (edit it, pass it with --config)
  vdit distill toy-data --world W --samples N --out DATA      toy-world samples as prepared shards
  vdit distill mlcd --teacher DIR --data DATA --run RUN       -> RUN/student (dense consistency student)
  vdit distill search-masks --student RUN/student --data DATA --run RUN2     -> RUN2/student (+ mask_schedule.json)
  vdit distill kd --student RUN2/student --data DATA --run RUN3              -> RUN3/student (sparse student)

Every stage records its recipe in RUN/recipe.json; rerunning the same command resumes (after a kill or
``--time-limit``), and a different recipe is refused with the differing fields named.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jax_vdit.cli.compile_cache import add_compile_cache_arguments, setup_compile_cache
from jax_vdit.cli.time_limit import command_deadline

NAME = "distill"
HELP = "distil a teacher into a few-step (MLCD), then tile-sparse (mask search + KD) student"


def _recipe(args: argparse.Namespace, base_folder: str | None = None):
    from jax_vdit.distill.recipe import recipe_from_sources
    from jax_vdit.distill.stages import recipe_of_student

    base = recipe_of_student(base_folder) if base_folder else None
    return recipe_from_sources(args.config, args.set or [], args.run, base=base)


def _initialize_distributed(args: argparse.Namespace) -> None:
    if args.distributed:
        import jax

        jax.distributed.initialize()  # reads the cluster's environment (SLURM, TPU, or JAX_COORDINATOR_ADDRESS ...)


def _report(stage, out, recipe_steps: int | None, run: str) -> int:
    if out.student is None:
        print(f"{stage}: stopped at step {out.steps}/{recipe_steps}; rerun the same command to resume ({run})")
    else:
        print(f"{stage}: done ({out.steps} steps); student in {out.student}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from jax_vdit.distill.recipe import DistillConfig, apply_overrides

    path = Path(args.file)
    if path.exists() and not args.overwrite:
        raise FileExistsError(f"{path} exists (pass --overwrite)")
    apply_overrides(DistillConfig(), args.set or []).save(path)
    print(f"wrote {path}")
    return 0


def _cmd_toy_data(args: argparse.Namespace) -> int:
    from jax_vdit.data.toy import write_toy_shards

    m = write_toy_shards(args.world, args.samples, args.out, seed=args.seed, shard_size=args.shard_size)
    print(f"{m.num_records} toy samples in {len(m.shards)} shards at {args.out} (latents {tuple(m.latent_shape)})")
    return 0


def _toy_check():
    """The periodic check used for toy-world models (ToyBench on validation prompts); other models get sampled
    latents (and mp4s with --vae)."""
    from jax_vdit.toy.recipes import distill_check

    return distill_check


def _cmd_mlcd(args: argparse.Namespace) -> int:
    from jax_vdit.distill.stages import mlcd_folder

    setup_compile_cache(args)
    _initialize_distributed(args)
    recipe = _recipe(args)
    out = mlcd_folder(args.teacher, args.data, args.run, recipe, vae_dir=args.vae, time_limit_s=command_deadline(args),
                      show_progress=not args.no_progress, domain_check=_toy_check())
    return _report("mlcd", out, recipe.mlcd_steps, args.run)


def _cmd_search(args: argparse.Namespace) -> int:
    from jax_vdit.distill.stages import search_masks_folder

    setup_compile_cache(args)
    recipe = _recipe(args, args.student)
    out = search_masks_folder(args.student, args.data, args.run, recipe, tile_backend=args.tile_backend)
    print(f"search-masks: r={recipe.threshold}; masks and dense weights in {out.student}; errors in "
          f"{Path(args.run) / 'mask_search.json'}")
    return 0


def _cmd_kd(args: argparse.Namespace) -> int:
    from jax_vdit.distill.stages import kd_folder

    setup_compile_cache(args)
    _initialize_distributed(args)
    recipe = _recipe(args, args.student)
    out = kd_folder(args.student, args.data, args.run, recipe, vae_dir=args.vae, time_limit_s=command_deadline(args),
                    show_progress=not args.no_progress, domain_check=_toy_check())
    return _report("kd", out, recipe.kd_steps, args.run)


def _common(p: argparse.ArgumentParser, *, training: bool) -> None:
    p.add_argument("--data", required=True, help="prepared dataset (vdit prepare-data or vdit distill toy-data)")
    p.add_argument("--run", required=True, help="run folder (recipe.json, checkpoints, metrics, student/)")
    p.add_argument("--config", default=None,
                   help="recipe file (JSON; `vdit distill config FILE` writes the defaults). Default: the run "
                        "folder's recipe.json when resuming, else the input student's recorded recipe, else defaults")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one recipe field, e.g. --set mlcd_steps=2000 --set guidance=4.5 (repeatable)")
    add_compile_cache_arguments(p)
    if training:
        p.add_argument("--time-limit", type=float, default=None,
                       help="stop with a checkpoint once this many seconds have passed since the command started "
                            "(loading and compiling included); rerun to continue")
        p.add_argument("--vae", default=None, help="CausalVAE folder: periodic sample checks also write mp4s")
        p.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() first (multi-host; each process reads its rows)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(NAME, help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = p.add_subparsers(dest="stage", required=True)

    c = stages.add_parser("config", help="write the default recipe file")
    c.add_argument("file")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field (repeatable)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(func=_cmd_config, command=NAME)

    t = stages.add_parser("toy-data", help="write toy-world training samples as prepared shards")
    t.add_argument("--world", default="toy-9x24x24-subframe",
                   help="toy world preset: the teacher's own (the shipped toy teacher's is the default)")
    t.add_argument("--samples", type=int, default=50_000)
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--shard-size", type=int, default=1024)
    t.add_argument("--out", required=True)
    t.set_defaults(func=_cmd_toy_data, command=NAME)

    m = stages.add_parser("mlcd", help="stage 1: multi-step latent consistency distillation (dense student)")
    m.add_argument("--teacher", required=True, help="teacher folder (release format, e.g. Open-Sora-Plan v1.2 or a "
                                                    "toy teacher)")
    _common(m, training=True)
    m.set_defaults(func=_cmd_mlcd, command=NAME)

    s = stages.add_parser("search-masks", help="stage 2: per-layer tile-mask search under threshold r")
    s.add_argument("--student", required=True, help="dense student folder (mlcd's RUN/student)")
    s.add_argument("--tile-backend", default=None, help="tile attention backend for the search (default: recipe's)")
    _common(s, training=False)
    s.set_defaults(func=_cmd_search, command=NAME)

    k = stages.add_parser("kd", help="stage 3: knowledge distillation into the tile-sparse student")
    k.add_argument("--student", required=True, help="student folder with mask_schedule.json (search-masks' output)")
    _common(k, training=True)
    k.set_defaults(func=_cmd_kd, command=NAME)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["distill", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"vdit distill: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
