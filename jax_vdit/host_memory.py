"""The host's available memory, read without JAX (the weights' prefetch sizes itself by it before JAX starts)."""

from __future__ import annotations


def host_bytes_available() -> int | None:
    """Bytes of host memory the kernel could give this process now without swapping (``MemAvailable`` of
    ``/proc/meminfo``; None where that file does not exist). The CPU backend's arrays live there."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
