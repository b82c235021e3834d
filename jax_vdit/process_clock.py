"""How long this process has existed: the part of a command's wall time spent before its ``main`` ran (interpreter
start and imports) is otherwise invisible in its own report."""

from __future__ import annotations

import os
import time


def seconds_since_process_start() -> float | None:
    """Seconds since the kernel started this process (Linux ``/proc``; resolution one clock tick, usually 10 ms).

    Returns None where ``/proc`` is missing or unreadable (macOS, Windows)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    # the command name (field 2) is in parentheses and may hold spaces: count the fields after its closing one
    fields = stat[stat.rindex(b")") + 2:].split()
    start_ticks = int(fields[19])  # field 22 of proc(5), "starttime", in clock ticks since boot
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def command_times(args) -> dict:
    """A command's own times for its report: ``before_main_s`` (the process's life before ``main``: interpreter
    start and imports) and ``main_s`` (``main``'s own so far), from the ``before_main_s`` and ``started``
    (``time.perf_counter()`` at ``main``'s start) that ``jax_vdit.cli.main`` sets on ``args``; None where unset. The
    exit after the report is the caller's wall time less both."""
    before_main = getattr(args, "before_main_s", None)
    started = getattr(args, "started", None)
    return {"before_main_s": None if before_main is None else round(before_main, 2),
            "main_s": None if started is None else round(time.perf_counter() - started, 2)}
