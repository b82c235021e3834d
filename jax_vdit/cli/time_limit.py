"""A command's ``--time-limit`` as a :class:`jax_vdit.training.Deadline` counted from the command's start."""

from __future__ import annotations

import argparse


def command_deadline(args: argparse.Namespace):
    """``args.time_limit`` seconds counted from ``args.started`` (set by ``vdit``'s ``main`` when the command
    starts; now if absent), or None without a limit."""
    from jax_vdit.training import Deadline

    started = getattr(args, "started", None)
    if args.time_limit is None or started is None:
        return Deadline.of(args.time_limit)  # None, or counted from now
    return Deadline(args.time_limit, start=started)
