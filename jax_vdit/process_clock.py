"""How long this process has existed: the part of a command's wall time spent before its ``main`` ran (interpreter
start and imports) is otherwise invisible in its own report."""

from __future__ import annotations

import os


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
