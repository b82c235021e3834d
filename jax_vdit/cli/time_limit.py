"""A command's ``--time-limit`` as a :class:`jax_vdit.training.Deadline` counted from the command's start."""

from __future__ import annotations

import argparse
import time


def command_deadline(args: argparse.Namespace):
    """``args.time_limit`` seconds counted from ``args.started`` (set by ``vdit``'s ``main`` when the command
    starts; now if absent), or None without a limit."""
    if args.time_limit is None:
        return None
    from jax_vdit.training import Deadline

    started = getattr(args, "started", None)
    return Deadline(args.time_limit, start=time.perf_counter() if started is None else started)
