"""``vdit``: one console entry with subcommands.

  vdit demo            sample held-out toy-world prompts with the shipped toy teacher and students (CPU, < 2 min)
  vdit sample          videos (mp4 + JSON sidecar) and latents from a checkpoint or repo id and prompts
  vdit serve           keep a model and its compiled programs in one process for `vdit sample --server`
  vdit train-teacher   train a toy-world teacher with the release objective (resumable)
  vdit toybench        score a toy checkpoint with ToyBench for sampler settings
  vdit prepare-data    videos + captions -> latent and text shards for training and distillation
  vdit distill         MLCD -> mask search -> sparse KD of a teacher on prepared data (resumable)
  vdit convert         convert a release checkpoint to our orbax format (same as ``vdit-convert``)

``vdit COMMAND --help`` lists every flag of a command with its default.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from jax_vdit.cli import convert, data, distill, sample, serve, toy
from jax_vdit.process_clock import seconds_since_process_start


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vdit", description=__doc__.split("\n\n")[0].strip(),
                                epilog="`vdit COMMAND --help` lists every flag of a command with its default.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (toy, data, distill, sample, serve, convert):
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # a command's --time-limit counts from here
    before_main = seconds_since_process_start()  # interpreter start and imports (None off Linux)
    args = build_parser().parse_args(argv)
    args.started = started
    args.before_main_s = before_main
    args.argv = list(sys.argv[2:] if argv is None else argv[1:])  # the subcommand's own arguments, for records
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, FloatingPointError, MemoryError) as err:
        print(f"vdit {args.command}: error: {err}", file=sys.stderr)
        return 2


# commands whose every output is written and closed when ``main`` returns: the console entry then ends the process
# at once instead of tearing down JAX's backend and the interpreter (on the CPU that teardown takes 0.3-0.5 s)
PROMPT_EXIT_COMMANDS = frozenset({"sample"})
FULL_EXIT_ENV = "JAX_VDIT_FULL_EXIT"  # "1": the usual interpreter exit for every command (e.g. under a profiler)


def exit_promptly(code: int) -> None:
    """End the process with ``code`` now: wait for the threads a normal exit would wait for (background work such
    as a compile that writes to the executable store finishes, as it would), stop our own helper processes (the
    VAE's compile workers; a normal exit stops them through ``atexit``), flush logging and the standard streams,
    then ``os._exit``. Skips the ``atexit`` handlers of libraries and the interpreter's teardown: only for work that
    has nothing left to write."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    worker_module = sys.modules.get("jax_vdit.vae.compile_worker")
    if worker_module is not None:
        worker_module.terminate_running()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing more can be said there
            pass
    os._exit(code)


def console_main(argv: list[str] | None = None) -> int:
    """The ``vdit`` console entry: :func:`main`, then for :data:`PROMPT_EXIT_COMMANDS` an immediate exit
    (:func:`exit_promptly`) unless ``$JAX_VDIT_FULL_EXIT`` is "1". Returns the exit code otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    code = main(argv)
    command = next((token for token in argv if not token.startswith("-")), None)
    if command in PROMPT_EXIT_COMMANDS and os.environ.get(FULL_EXIT_ENV) != "1":
        exit_promptly(code)
    return code


if __name__ == "__main__":
    sys.exit(console_main())
