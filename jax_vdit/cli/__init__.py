"""``vdit``: one console entry with subcommands.

  vdit demo            sample held-out toy-world prompts with the shipped toy teacher and students (CPU, < 2 min)
  vdit sample          videos (mp4 + JSON sidecar) and latents from a checkpoint or repo id and prompts
  vdit train-teacher   train a toy-world teacher with the release objective (resumable)
  vdit toybench        score a toy checkpoint with ToyBench for sampler settings
  vdit prepare-data    videos + captions -> latent and text shards for training and distillation
  vdit distill         MLCD -> mask search -> sparse KD of a teacher on prepared data (resumable)
  vdit convert         convert a release checkpoint to our orbax format (same as ``vdit-convert``)

``vdit COMMAND --help`` lists every flag of a command with its default.
"""

from __future__ import annotations

import argparse
import sys
import time

from jax_vdit.cli import convert, data, distill, sample, toy
from jax_vdit.process_clock import seconds_since_process_start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdit", description=__doc__.split("\n\n")[0].strip(),
                                epilog="`vdit COMMAND --help` lists every flag of a command with its default.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (toy, data, distill, sample, convert):
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # a command's --time-limit counts from here
    before_main = seconds_since_process_start()  # interpreter start and imports (None off Linux)
    args = build_parser().parse_args(argv)
    args.started = started
    args.before_main_s = before_main
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # the subcommand's own arguments, for records
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, FloatingPointError, MemoryError) as err:
        print(f"vdit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
