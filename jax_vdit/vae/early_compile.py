"""Start the VAE's compile processes before this process imports JAX (a cold `vdit sample`), and remember which
decodes the executable store already holds so that a warm command starts none.

A cold `vdit sample` at 29x720p waits for the VAE's compile processes after sampling (they are its longest
path); started by the pipeline, they begin only after this process has imported JAX and started its backend
(about 2-3 s on an H100 host). :func:`start_before_jax` starts them from the command's arguments alone: the
transformer's ``config.json`` gives the latent shape, and a marker file written once a decode's every stage is in
the store (:func:`mark_decode_stored`) says a warm command needs none. No JAX import here; everything it guesses
is checked again by :meth:`jax_vdit.pipeline.OpenSoraPipeline.from_pretrained`, which stops processes started
for another decode, for a decode already stored or on a host without a GPU, and starts the right ones itself.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jax_vdit.process_clock import seconds_since_process_start
from jax_vdit.source_fingerprint import source_fingerprint
from jax_vdit.vae import compile_worker
from jax_vdit.xla_defaults import cpu_only, keyed_xla_flags

MARKER_DIR = "jax_vdit_decode_markers"  # inside JAX's persistent cache folder, beside the executable store
_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])
_CUDA_MODULES = ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13", "jax_cuda12_plugin", "jax_cuda13_plugin")


@dataclass
class EarlyWorkers:
    """Compile processes started before JAX, and the decode they compile."""

    workers: list[compile_worker.Worker]
    vae_dir: Path
    latent_shape: tuple[int, ...]
    dtype: str
    tiles: str
    cache: str
    started_s: float | None = None  # seconds after the process started (None off Linux)
    # where the time before the start went, seconds: from the process's start to this function's entry, guessing
    # the GPU and the process count, reading the configs, the marker's check, launching the processes
    parts: dict[str, float] = field(default_factory=dict)
    # whether this process had imported JAX when the processes were started (the point of starting them here is
    # that it had not: a True means something on the command's path before the start imports it)
    jax_imported: bool | None = None

    def matches(self, vae_dir: Path, latent_shape: Sequence[int], dtype: str, tiles: str, cache: str) -> bool:
        """Whether these processes compile the decode the pipeline wants."""
        return (Path(vae_dir).resolve() == self.vae_dir.resolve() and tuple(latent_shape) == self.latent_shape
                and dtype == self.dtype and tiles == self.tiles and str(cache) == self.cache)

    def stop(self) -> None:
        """Terminate the processes (their work is not needed) and close their output files."""
        compile_worker.stop(self.workers)


def latent_shape_from_config(model_dir: Path, frames: int | None, height: int | None,
                             width: int | None) -> tuple[int, ...] | None:
    """(1, 4, t, h, w) of one video of ``frames x height x width`` pixels (each None: the ``sample_size`` of the
    release ``config.json`` in ``model_dir``), or None where that cannot be told without JAX (no config.json, as in
    our orbax checkpoints; a field missing; a size the model cannot make: the command's own checks report those)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        size = config["sample_size"]
        base_h, base_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        base_t = int(config["sample_size_t"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    frames, height, width = frames or 4 * (base_t - 1) + 1, height or 8 * base_h, width or 8 * base_w
    if frames < 1 or (frames - 1) % 4 or height < 16 or height % 16 or width < 16 or width % 16:
        return None
    return (1, 4, (frames - 1) // 4 + 1, height // 8, width // 8)


def decode_marker(cache: str | os.PathLike, vae_dir: str | os.PathLike, latent_shape: Sequence[int], dtype: str,
                  tiles: str, environ: Mapping[str, str] | None = None) -> Path:
    """The marker file that says the executable store in ``cache`` holds this decode: named by the VAE's
    ``config.json``, the shape, dtype and tiling, the jax / jaxlib versions, the XLA flags and this package's
    sources (the device is not known without JAX: a marker written on another GPU only costs the early start)."""
    versions = []
    for name in ("jax", "jaxlib"):
        try:
            versions.append(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            versions.append(None)
    try:
        config = hashlib.sha256((Path(vae_dir) / "config.json").read_bytes()).hexdigest()
    except OSError:
        config = None
    text = repr(("decode", config, tuple(int(n) for n in latent_shape), dtype, tiles, tuple(versions),
                 keyed_xla_flags(environ), source_fingerprint(_PACKAGE_DIR)))
    return Path(cache) / MARKER_DIR / f"{hashlib.sha256(text.encode()).hexdigest()}.json"


def mark_decode_stored(cache: str | os.PathLike, vae_dir: str | os.PathLike, latent_shape: Sequence[int],
                       dtype: str, tiles: str) -> Path:
    """Write the marker of a decode whose every stage (and plan) is in the store, unless it is there (atomically;
    a failure to write it only costs the next command an early start)."""
    path = decode_marker(cache, vae_dir, latent_shape, dtype, tiles)
    if path.is_file():
        return path
    body = json.dumps({"vae": str(vae_dir), "latent_shape": list(latent_shape), "dtype": dtype, "tiles": tiles})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(body)
        os.replace(partial, path)
    except OSError:
        pass
    return path


def gpu_host_guess(environ: Mapping[str, str] | None = None) -> bool:
    """Whether JAX will most likely run on an NVIDIA GPU here, told without importing it: ``$JAX_PLATFORMS``
    allows it, the driver's device node exists and a CUDA plugin of jaxlib is installed."""
    if cpu_only(os.environ if environ is None else environ) or not Path("/dev/nvidiactl").exists():
        return False
    for name in _CUDA_MODULES:
        try:
            if importlib.util.find_spec(name) is not None:
                return True
        except (ImportError, ValueError):
            continue
    return False


def processes_before_jax(value: str) -> int:
    """``--vae-compile-processes`` told without JAX: a count as given; "auto" as
    :func:`jax_vdit.cli.sample.resolve_vae_compile_processes` will resolve it on a GPU host (3 with 8+ CPU cores,
    2 with 4-7), 0 where :func:`gpu_host_guess` says no GPU. 0 for a value that command refuses."""
    if value != "auto":
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return compile_worker.processes_for_cores(os.cpu_count() or 1) if gpu_host_guess() else 0


def start_before_jax(*, checkpoint: str, variant: str | None, vae: str | None, frames: int | None,
                     height: int | None, width: int | None, compute_dtype: str, tiles: str, cache: str | None,
                     processes: str) -> EarlyWorkers | None:
    """Start the VAE's compile processes for the decode a `vdit sample` of these arguments will run, or None
    where they would not apply or might not be needed: a checkpoint that is not a local folder with a release
    ``config.json``, no VAE folder, no compile cache, no GPU (guessed), or a decode whose marker is present."""
    entered_s = seconds_since_process_start()
    clock = [time.perf_counter()]
    parts: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        parts[name] = round(now - clock[0], 3)
        clock[0] = now

    if not cache or tiles not in compile_worker.TILES:
        return None
    count = processes_before_jax(processes)
    lap("guess_s")
    root = Path(checkpoint).expanduser()
    if count < 1 or not root.is_dir():
        return None
    model_dir = root / variant if variant and (root / variant).is_dir() else root
    shape = latent_shape_from_config(model_dir, frames, height, width)
    if vae:
        vae_dir = Path(vae).expanduser()
    else:
        vae_dir = next((c for c in (root / "vae", model_dir.parent / "vae") if c.is_dir()), None)
    if shape is None or vae_dir is None or not (vae_dir / "config.json").is_file():
        return None
    dtype = "bfloat16" if compute_dtype == "bfloat16" else "float32"
    cache = str(Path(cache).expanduser())
    lap("configs_s")
    if decode_marker(cache, vae_dir, shape, dtype, tiles).is_file():
        return None
    lap("marker_s")
    Path(cache).mkdir(parents=True, exist_ok=True)
    workers = compile_worker.start(vae_dir, shape, dtype=dtype, tiles=tiles, cache=cache, processes=count)
    lap("launch_s")
    since_start = seconds_since_process_start()
    if entered_s is not None:
        parts = {"entered_s": round(entered_s, 3), **parts}
    return EarlyWorkers(workers, vae_dir, shape, dtype, tiles, cache,
                        None if since_start is None else round(since_start, 3), parts, "jax" in sys.modules)
