"""``vdit convert``: the same as ``vdit-convert`` (the converter in ``convert/``), with the same flags and help."""

from __future__ import annotations

import argparse


def _cmd_convert(args: argparse.Namespace) -> int:
    from convert.__main__ import main as convert_main

    return convert_main(list(args.argv))


def register(sub) -> None:
    from convert.__main__ import build_parser

    from jax_vdit.cli.sample import HelpFormatter

    converter = build_parser()
    # the converter's own arguments (and -h, which then prints this subcommand's help); parsing here checks them,
    # and the converter parses the same argv again to run
    sub.add_parser("convert", parents=[converter], conflict_handler="resolve", description=converter.description,
                   formatter_class=HelpFormatter,
                   help="convert a release checkpoint to our orbax format (same as vdit-convert)"
                   ).set_defaults(func=_cmd_convert)
