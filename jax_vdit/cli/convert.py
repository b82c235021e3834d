"""``vdit convert``: the same as ``vdit-convert`` (the converter in ``convert/``)."""

from __future__ import annotations

import argparse


def _cmd_convert(args: argparse.Namespace) -> int:
    from convert.__main__ import main as convert_main

    return convert_main(args.rest)


def register(sub) -> None:
    c = sub.add_parser("convert", help="convert a release checkpoint (see vdit-convert --help)", add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)
    c.set_defaults(func=_cmd_convert)
