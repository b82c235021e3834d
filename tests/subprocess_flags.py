"""XLA_FLAGS for the suite's child processes: this process's flags (the compile-speed flags of
``tests/conftest.py``) without any fake-device count, plus ``devices`` fake CPU devices when given."""

from __future__ import annotations

import os


def child_xla_flags(devices: int | None = None) -> str:
    """This process's ``XLA_FLAGS`` minus ``--xla_force_host_platform_device_count``, with it set to ``devices``
    when given (a child that sets its own count, e.g. ``tests/parallel_worker.py``, passes None)."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if devices is not None:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)
