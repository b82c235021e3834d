"""The training loop's memory checks: telling an allocation failure apart, what the device's allocator may use
and holds, XLA's memory analysis of a compiled step, and the messages that name the sizes and the settings that
lower them. :func:`jax_vdit.training.train` uses them before a step runs and when one fails."""

from __future__ import annotations

import re
from collections.abc import Callable

import jax


class DeviceMemoryError(MemoryError):
    """A training step needed more memory than its device has (XLA's RESOURCE_EXHAUSTED / out of memory)."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether a JAX runtime error is an allocation failure (GPU/TPU RESOURCE_EXHAUSTED, XLA:CPU out of memory)."""
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


MEMORY_HINTS = ("Lower the memory of a step: rematerialise activations (vdit distill: --set remat=true), a smaller "
                "batch (--set batch_size=N; vdit train-teacher: --batch N), a smaller state (vdit distill: --set "
                "adam_mu_dtype=bfloat16, and for mlcd --set mlcd_export=student), or shard parameters and optimiser "
                "state over more devices (--set fsdp=true --set mesh_data=N); or try the other loop over the blocks "
                "(--set scan_layers=true|false; vdit train-teacher: --scan-layers): XLA plans a step's temporaries "
                "differently for each.")


def kept_phrase(last_checkpoint: int | None) -> str:
    """How a failed or refused run leaves its checkpoints, for the messages."""
    return f"the last checkpoint (step {last_checkpoint}) is intact" if last_checkpoint else "no checkpoint written"


def out_of_memory_message(err: BaseException, step: int, last_checkpoint: int | None) -> str:
    """What ran out, how much XLA asked for where it says, and the settings that lower a step's memory."""
    device = jax.devices()[0]
    found = re.search(r"allocat\w* (\d+) bytes", str(err))
    asked = f"; XLA asked for {int(found.group(1)) / 2**30:.1f} GiB at once" if found else ""
    first_line = str(err).strip().splitlines()[0][:300]
    return (f"training ran out of memory by step {step} on {device.platform} ({device.device_kind}){asked}; "
            f"{kept_phrase(last_checkpoint)}. {MEMORY_HINTS} XLA said: " + first_line)


def _memory_stats() -> dict:
    try:
        return jax.local_devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - a backend without memory statistics
        return {}


def device_bytes_limit() -> int | None:
    """Bytes the first local device's allocator may use (GPU and TPU report it; the CPU does not: None)."""
    limit = _memory_stats().get("bytes_limit")
    return int(limit) if limit else None


def device_bytes_in_use() -> int:
    """Bytes the first local device's allocator holds now (0 where the backend does not say)."""
    return int(_memory_stats().get("bytes_in_use", 0))


def step_memory_bytes(step_fn: Callable, *args) -> dict[str, int] | None:
    """XLA's memory analysis of ``step_fn`` (a jitted function) compiled for ``args``, per device: the bytes of
    its arguments, outputs, the outputs that reuse donated arguments, its temporaries, and ``peak`` = arguments +
    outputs - aliased + temporaries (a lower bound of what running it needs). None where ``step_fn`` cannot be
    lowered ahead of time or the backend gives no analysis. The compiled program is cached, so a later call of
    ``step_fn`` with arguments of the same shapes does not compile again."""
    lower = getattr(step_fn, "lower", None)
    if lower is None:
        return None
    analysis = lower(*args).compile().memory_analysis()
    if analysis is None:
        return None
    row = {"arguments": int(analysis.argument_size_in_bytes), "outputs": int(analysis.output_size_in_bytes),
           "aliased": int(analysis.alias_size_in_bytes), "temporaries": int(analysis.temp_size_in_bytes)}
    row["peak"] = row["arguments"] + row["outputs"] - row["aliased"] + row["temporaries"]
    return row


def step_does_not_fit_message(needed: dict[str, int], bytes_limit: int, last_checkpoint: int | None) -> str:
    """Why a training step was refused before it ran: what XLA says it needs against what the device has."""
    device = jax.local_devices()[0]
    gib = 2**30
    return (f"the training step does not fit on {device.platform} ({device.device_kind}): XLA's memory analysis "
            f"of the compiled step needs {needed['peak'] / gib:.1f} GiB per device (arguments "
            f"{needed['arguments'] / gib:.1f} GiB: training state, frozen weights and batch; temporaries "
            f"{needed['temporaries'] / gib:.1f} GiB), and the device's allocator may use {bytes_limit / gib:.1f} GiB "
            "(XLA_PYTHON_CLIENT_MEM_FRACTION sets that share of the card). Nothing ran; "
            f"{kept_phrase(last_checkpoint)}. " + MEMORY_HINTS)


def host_step_bytes(needed: dict[str, int], devices: int = 1) -> int:
    """Host memory a CPU step allocates beyond its arguments (already in memory): XLA's per-device analysis
    (outputs not aliased to donated arguments, and temporaries) times the CPU devices of its mesh, which all
    allocate from the same host memory."""
    return devices * (needed["peak"] - needed["arguments"])


def step_does_not_fit_host_message(needed: dict[str, int], available: int, last_checkpoint: int | None,
                                   devices: int = 1) -> str:
    """Why a CPU training step was refused before it ran: what it allocates beyond its arguments (which are
    already in memory), on each of ``devices`` CPU devices, against the host memory available."""
    gib = 2**30
    new = host_step_bytes(needed)  # one device's share
    per = f" on each of {devices} CPU devices" if devices > 1 else ""
    return (f"the training step does not fit in this host's memory (cpu): XLA's memory analysis of the compiled step "
            f"allocates {new / gib:.1f} GiB{per} beyond its arguments (temporaries "
            f"{needed['temporaries'] / gib:.1f} GiB: activations kept for the backward pass, attention scores), and "
            f"the host has {available / gib:.1f} GiB "
            f"available (MemAvailable). Nothing ran; {kept_phrase(last_checkpoint)}. " + MEMORY_HINTS)
