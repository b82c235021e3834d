"""``vdit``: one console entry with subcommands.

  vdit demo            sample held-out toy-world prompts with the shipped toy teacher and students (CPU, < 2 min)
  vdit sample          generate latents (and an mp4 when a VAE is given) from a checkpoint and a prompt
  vdit train-teacher   train a toy-world teacher with the release objective (resumable)
  vdit toybench        score a toy checkpoint with ToyBench for sampler settings
  vdit prepare-data    videos + captions -> latent and text shards for training and distillation
  vdit distill         MLCD -> mask search -> sparse KD of a teacher on prepared data (resumable)
  vdit convert         convert a release checkpoint to our orbax format (same as ``vdit-convert``)
"""

from __future__ import annotations

import argparse
import sys

from jax_vdit.cli import convert, data, distill, sample, toy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdit", description="jax-vdit: efficient video DiTs in JAX")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (toy, data, distill, sample, convert):
        command.register(sub)
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
