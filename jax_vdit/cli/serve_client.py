"""The client side of ``vdit serve`` (:mod:`jax_vdit.cli.serve`): ``vdit sample --server SOCKET`` sends its job
to the server and prints the answer. Nothing here imports JAX or the sampling code, so the client starts in a
fraction of a second. The protocol is described in :mod:`jax_vdit.cli.serve`."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

from jax_vdit.process_clock import command_times

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = "~/.cache/jax-vdit/serve.sock"
# flags naming local files: made absolute by both sides (the client's working folder is not the server's)
PATH_FLAGS = ("checkpoint", "vae", "text_encoder", "embeddings", "prompt_file", "out", "compile_cache", "attention")
# never sent: the process's own bookkeeping, or a callable
_LOCAL_ONLY = ("func", "started", "before_main_s", "server", "command", "argv")


def make_paths_absolute(args: argparse.Namespace) -> None:
    """Each of :data:`PATH_FLAGS` that names an existing local path (or ``--out``, ``--compile-cache``, which are
    created) made absolute in place; repo ids, "auto", "toy", "none" and mask specs such as "1:7" stay as given."""
    for name in PATH_FLAGS:
        value = getattr(args, name, None)
        if not isinstance(value, str) or not value:
            continue
        if name == "text_encoder" and value in ("auto", "none", "toy"):
            continue
        path = Path(value).expanduser()
        if name in ("out", "compile_cache") or path.exists():
            setattr(args, name, str(path.resolve()))


def request_payload(args: argparse.Namespace) -> dict:
    """What a client sends: the namespace's JSON-safe fields (paths already absolute) and its argv."""
    fields = {k: v for k, v in vars(args).items() if k not in _LOCAL_ONLY}
    return {"version": PROTOCOL_VERSION, "args": fields, "argv": list(getattr(args, "argv", []))}


def send_message(conn: socket.socket, message: dict) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


def run_on_server(args: argparse.Namespace) -> int:
    """``vdit sample --server SOCKET``: send this command's job to a ``vdit serve`` process, show its progress,
    print its report (the last line of stdout, as a local run's; ``server`` says where it ran) and return its exit
    code. Imports no JAX. Input errors are raised as ValueError / FileNotFoundError (exit 2)."""
    path = Path(args.server).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--server {path}: no `vdit serve` listens there (start one with `vdit serve "
                                f"CHECKPOINT --socket {path}` and this command's model flags)")
    make_paths_absolute(args)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except ConnectionRefusedError as err:
        conn.close()
        raise FileNotFoundError(f"--server {path}: nothing listens there (the socket of a server that stopped?); "
                                "start `vdit serve` again") from err
    bar = None
    try:
        send_message(conn, request_payload(args))
        reader = conn.makefile("r")
        for line in reader:
            message = json.loads(line)
            if "progress" in message:
                done, total = message["progress"]
                if bar is None and not args.quiet:
                    from tqdm import tqdm

                    bar = tqdm(total=total, desc="sampling (server)", unit="step")
                if bar is not None:
                    bar.update(done - bar.n)
                continue
            break
        else:
            raise ConnectionError(f"--server {path}: the server closed the connection without an answer (its log "
                                  "says why)")
    finally:
        if bar is not None:
            bar.close()
        conn.close()
    code = int(message.get("exit", 1))
    if code != 0:
        if code == 2:
            raise ValueError(message.get("error", "the server refused the job"))
        print(f"vdit sample: error: {message.get('error')}", file=sys.stderr)
        return code
    report = message["report"]
    report.update(command_times(args))  # this client's own times
    print(json.dumps(report))
    return 0
