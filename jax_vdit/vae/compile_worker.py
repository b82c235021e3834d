"""Compile a VAE decode's stages in separate processes, into the executable store, while this process works.

In a background thread of the process that loads and compiles the transformer, the VAE's decode warm-up plans
the decode (tracing it abstractly) and traces and lowers every stage: pure Python, which holds the interpreter's
lock that the transformer's load and compile need too (measured on an H100: with both compiling beside the load,
each took about twice as long as alone). A process has its own lock. :func:`start` launches ``processes`` of::

    python -m jax_vdit.vae.compile_worker --vae DIR --dtype bfloat16 --latent-shape 1,4,8,90,160 \
        --tiles uniform --cache DIR --part K/N

each of which builds the VAE's shapes from its ``config.json`` (no weights are read: compiling needs only their
shapes and dtypes), plans the decode and compiles every N-th distinct stage from the K-th into the
executable store inside JAX's persistent cache (``--cache``; the store is required: it is how the stages come
back). The last to finish records the decode's plan; :func:`wait` then returns, and
:func:`jax_vdit.vae.warmup.precompile_decode` in the parent reads every stage from the store without planning or
tracing. A stage a worker did not deliver (it failed, was killed, or XLA:CPU read it from JAX's cache, which the
store does not keep) is compiled by the parent as before. The workers do not preallocate GPU memory
(``XLA_PYTHON_CLIENT_PREALLOCATE=false``) and are terminated when the parent exits first.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from jax_vdit.env_values import number_from_env

TILES = ("exact", "uniform")
_RUNNING: list[subprocess.Popen] = []
# how much lower the workers' CPU priority is than the parent's (``os.nice`` increment; default 0: the same). The
# parent's sampler compile and the workers' compiles overlap on the CPU; whether a lower priority for the workers
# shortens the cold command is docs/gpu_runbook.md item 5's next measurement
NICE_ENV = "JAX_VDIT_VAE_COMPILE_NICE"


# how long the parent waits for its workers before it terminates them and compiles what they left itself (a stuck
# compile process must not hold `vdit sample` forever); seconds, default 600: each worker took 10-15 s on an H100
TIMEOUT_ENV = "JAX_VDIT_VAE_COMPILE_TIMEOUT"


def wait_limit_s() -> float:
    """``$JAX_VDIT_VAE_COMPILE_TIMEOUT``: seconds > 0 (default 600); anything else is a clear error."""
    return number_from_env(TIMEOUT_ENV, 600.0, float, lambda v: v > 0, "a number of seconds > 0")


def nice_increment() -> int:
    """``$JAX_VDIT_VAE_COMPILE_NICE``: an integer 0-19 (default 0); anything else is a clear error."""
    return number_from_env(NICE_ENV, 0, int, lambda v: 0 <= v <= 19, "an integer from 0 to 19 (a lower CPU priority)")


def worker_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The workers' environment: ``environ`` (its XLA_FLAGS included: they are part of the stages' keys, which
    parent and workers must agree on) without GPU memory preallocation."""
    return dict(environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")


def terminate_running() -> None:
    """Terminate the workers still running (at exit: a compile nobody will use)."""
    for proc in _RUNNING:
        if proc.poll() is None:
            proc.terminate()


atexit.register(terminate_running)


@dataclass
class Worker:
    """A running compile process and the files its stdout and stderr go to (read back once it has finished: a
    pipe nobody reads while it runs could fill and stall it)."""

    process: subprocess.Popen
    stdout: IO[str]
    stderr: IO[str]


def start(vae_dir: str | os.PathLike, latent_shape: Sequence[int], *, dtype: str, tiles: str, cache: str,
          processes: int = 1) -> list[Worker]:
    """Launch ``processes`` workers for the decode of ``latent_shape`` (B, C, t, h, w) with the VAE at ``vae_dir``
    in ``dtype`` ("bfloat16" or "float32") and the release tiling run as ``tiles`` ("exact" or "uniform"), sharing
    JAX's persistent cache folder ``cache``."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if tiles not in TILES:
        raise ValueError(f"tiles must be one of {TILES}, got {tiles!r}")
    env = worker_environment(os.environ)
    nice = nice_increment()  # checked here, in the parent, so that a bad value is an error, not failed workers
    wait_limit_s()  # likewise, before any process starts
    if nice and shutil.which("nice") is None:
        raise RuntimeError(f"${NICE_ENV}={nice} needs the nice command, which is not on this PATH")
    root = str(Path(__file__).resolve().parents[2])  # this package, whatever the working folder
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    shape = ",".join(str(int(n)) for n in latent_shape)
    workers = []
    for k in range(processes):
        cmd = [sys.executable, "-m", "jax_vdit.vae.compile_worker", "--vae", str(vae_dir), "--dtype", dtype,
               "--latent-shape", shape, "--tiles", tiles, "--cache", str(cache), "--part", f"{k}/{processes}"]
        out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
        if nice:  # from the start, imports included (POSIX nice(1); no preexec_fn in a threaded parent)
            cmd = ["nice", "-n", str(nice), *cmd]
        workers.append(Worker(subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True), out, err))
    _RUNNING.extend(w.process for w in workers)
    return workers


def needed(vae_dir: str | os.PathLike, latent_shape: Sequence[int], *, dtype: str, tiles: str) -> bool:
    """False when the executable store already holds every stage of this decode and its recorded plan (a warm
    run: starting processes would only cost their start), judged from the VAE's config alone."""
    import jax.numpy as jnp

    from jax_vdit.io.vae_weights import read_vae_config
    from jax_vdit.vae import TilingConfig, abstract_vae
    from jax_vdit.vae.warmup import decode_is_stored

    jdtype = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    shapes = abstract_vae(read_vae_config(vae_dir), dtype=jdtype, param_dtype=jdtype)
    tiling = TilingConfig.sample_script(uniform_tiles=tiles == "uniform")
    return not decode_is_stored(shapes, latent_shape, tiling=tiling)


def wait(workers: Sequence[Worker], cancel=None, limit_s: float | None = None) -> list[dict]:
    """Wait for the workers (terminating them once ``cancel``, a ``threading.Event``, is set, or once ``limit_s``
    seconds have passed since this call: default :func:`wait_limit_s`); each one's report (its JSON line: stages,
    compiled, loaded, seconds) or ``{"error": ...}`` with the end of its stderr. Stages a terminated worker did not
    store are compiled by the caller (:func:`jax_vdit.vae.warmup.precompile_decode` reads the rest from the store)."""
    limit_s = wait_limit_s() if limit_s is None else limit_s
    deadline = time.monotonic() + limit_s
    reports = []
    for worker in workers:
        proc = worker.process
        late = False
        while True:
            try:
                proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    proc.terminate()
                elif time.monotonic() > deadline and not late:
                    late = True
                    proc.terminate()
        worker.stdout.seek(0)
        lines = worker.stdout.read().strip().splitlines()
        try:
            reports.append(json.loads(lines[-1]))
        except (ValueError, IndexError):
            worker.stderr.seek(0)
            why = f"did not finish in {limit_s:g} s (${TIMEOUT_ENV}), terminated; " if late else ""
            reports.append({"error": f"{why}exit {proc.returncode}: {worker.stderr.read()[-600:]}"})
        worker.stdout.close()
        worker.stderr.close()
        if proc in _RUNNING:
            _RUNNING.remove(proc)
    return reports


def stop(workers: Sequence[Worker]) -> None:
    """Terminate the workers whose compiles are not needed (e.g. started for another decode) and wait for them:
    :func:`wait` with its cancel already set."""
    import threading

    cancel = threading.Event()
    cancel.set()
    wait(workers, cancel)


def processes_for_cores(cores: int) -> int:
    """How many compile processes "auto" means on a GPU host with ``cores`` CPU cores: 3 with 8 or more, 2 with
    4-7 (each compiles on its own core), else 0 (a thread of the parent)."""
    if cores >= 8:
        return 3
    return 2 if cores >= 4 else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vae", required=True, help="CausalVAE folder")
    p.add_argument("--dtype", choices=("bfloat16", "float32"), required=True)
    p.add_argument("--latent-shape", required=True, help="B,C,t,h,w of the latents to decode")
    p.add_argument("--tiles", choices=TILES, required=True, help="the release tiling, exact or uniform tiles")
    p.add_argument("--cache", required=True, help="JAX's persistent compilation cache folder (holds the store)")
    p.add_argument("--part", default="0/1", help="K/N: compile every N-th distinct stage from the K-th")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    k, n = (int(v) for v in args.part.split("/"))
    shape = tuple(int(v) for v in args.latent_shape.split(","))

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_compilation_cache_dir", str(Path(args.cache).expanduser()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # as `vdit sample` sets it
    from jax_vdit import executable_store
    from jax_vdit.io.vae_weights import read_vae_config
    from jax_vdit.vae import TilingConfig, abstract_vae
    from jax_vdit.vae.warmup import precompile_decode

    imports_s = time.perf_counter() - t0
    if executable_store.store_directory() is None:
        raise SystemExit("compile_worker: the executable store is off ($JAX_VDIT_EXECUTABLE_STORE): nothing would "
                         "reach the parent")
    # compiling needs the weights' shapes and dtypes only: the VAE's config, not its weights (the parent loads
    # and checks those); the stages' store names are the same as for the loaded VAE
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    vae = abstract_vae(read_vae_config(args.vae), dtype=dtype, param_dtype=dtype)
    report = precompile_decode(vae, shape, tiling=TilingConfig.sample_script(uniform_tiles=args.tiles == "uniform"),
                               part=(k, n))
    from jax_vdit.vae.runtime import compile_log

    print(json.dumps({"part": args.part, "stages": report.stages, "compiled": report.compiled,
                      "loaded": report.loaded, "seconds": round(time.perf_counter() - t0, 3),
                      # where a worker's seconds go: imports and setup, planning the decode, tracing and lowering
                      # its stages, and each stage's XLA compile (in the order compiled)
                      "imports_s": round(imports_s, 3), "plan_s": report.plan_s, "lower_s": report.lower_s,
                      "stage_seconds": [round(e["seconds"], 3) for e in compile_log() if not e["loaded"]],
                      "problems": executable_store.problems()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
