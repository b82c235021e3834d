"""``vdit serve``: one long-lived process that keeps a model, its VAE and their compiled programs, and runs the jobs
of ``vdit sample --server`` commands sent to it over a local socket.

A fresh ``vdit sample`` process pays for Python's and JAX's imports, the weights' load and reading the compiled
programs back on every command (4.3 s of a warm 29x720p command's 9.1 s on an H100 host, more on slower hosts). A
server pays them once; each later command is a light client (no JAX import) whose job costs sampling, decoding and
writing. Jobs run one at a time, in the order they arrive.

Protocol (one connection per job, newline-delimited JSON, version :data:`PROTOCOL_VERSION`): the client sends
``{"version", "args", "argv"}`` (``args``: the ``vdit sample`` namespace, paths made absolute); the server answers
with ``{"progress": [done, total]}`` lines while it samples, then one ``{"exit": code, "report": {...}}`` or
``{"exit": code, "error": "..."}`` line. A job whose model flags differ from the server's is refused (exit 2),
naming each flag; the server then keeps serving.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import stat
import sys
import time
import traceback
from pathlib import Path

from jax_vdit.cli.serve_client import DEFAULT_SOCKET, PROTOCOL_VERSION, make_paths_absolute, send_message

MAX_REQUEST_BYTES = 1 << 20
# the flags that decide what a server loads and how it runs it: a job must ask for the same values
MODEL_FLAGS = ("checkpoint", "variant", "config", "vae", "latents_only", "text_encoder", "revision", "offline",
               "param_dtype", "compute_dtype", "tile_backend", "mixed_masks", "layer_loop", "vae_tiles", "sp_size",
               "mesh", "triton_gemm", "compile_cache", "no_compile_cache")
# process-wide settings (when the start-up work runs): the server's own hold for every job
SERVER_FLAGS = ("sampler_compile", "vae_warmup", "vae_compile_processes")


def model_mismatches(server: argparse.Namespace, job: argparse.Namespace) -> list[str]:
    """``"--flag: server VALUE, command VALUE"`` for each of :data:`MODEL_FLAGS` on which the two differ."""
    out = []
    for name in MODEL_FLAGS:
        ours, theirs = getattr(server, name, None), getattr(job, name, None)
        if ours != theirs:
            flag = name if name == "checkpoint" else "--" + name.replace("_", "-")
            out.append(f"{flag}: server {ours!r}, command {theirs!r}")
    return out


def job_namespace(payload: dict, defaults: argparse.Namespace) -> argparse.Namespace:
    """The job's ``vdit sample`` namespace from a request: ``defaults`` (the sample parser's) overlaid with the
    request's fields. Unknown fields and other protocol versions are refused (ValueError)."""
    if not isinstance(payload, dict) or payload.get("version") != PROTOCOL_VERSION:
        raise ValueError(f"this server speaks protocol {PROTOCOL_VERSION}; the request's is "
                         f"{payload.get('version') if isinstance(payload, dict) else None!r} (same jax-vdit on both "
                         "sides?)")
    fields = payload.get("args")
    if not isinstance(fields, dict):
        raise ValueError("the request holds no 'args' object")
    unknown = sorted(set(fields) - set(vars(defaults)))
    if unknown:
        raise ValueError(f"the request names flags this server's `vdit sample` lacks: {', '.join(unknown)}")
    job = argparse.Namespace(**{**vars(defaults), **fields})
    job.argv = [str(a) for a in payload.get("argv", [])]
    return job


def sample_defaults() -> argparse.Namespace:
    """``vdit sample``'s defaults (the checkpoint left None)."""
    from jax_vdit.cli.sample import add_sample_arguments

    parser = argparse.ArgumentParser()
    add_sample_arguments(parser)
    defaults = parser.parse_args(["-"])
    defaults.checkpoint = None
    return defaults


# ---------------------------------------------------------------------------------------------------- the server


def open_server_socket(path: Path) -> socket.socket:
    """A listening Unix socket at ``path`` (owner-only). A socket file left by a stopped server is replaced; a live
    server there, or any other file, is refused and left as it is."""
    if len(str(path).encode()) > 100:
        raise ValueError(f"--socket {path}: the path is too long for a Unix socket (at most about 100 bytes)")
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise FileExistsError(f"--socket {path} exists and is not a socket: not replaced")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink()  # a stopped server's socket
        else:
            raise FileExistsError(f"--socket {path}: a server already listens there")
        finally:
            probe.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # srw------- from the start: only this user's processes can send jobs
    try:
        sock.bind(str(path))
    finally:
        os.umask(umask)
    sock.listen(16)
    return sock


def _read_line(conn: socket.socket, limit: int = MAX_REQUEST_BYTES) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ValueError(f"the request is over {limit} bytes")
    return data


def handle_job(conn: socket.socket, server_args: argparse.Namespace, loaded, defaults: argparse.Namespace) -> int:
    """Read one request from ``conn``, run it on ``loaded`` and answer; returns the job's exit code. Errors in the
    request or its inputs are answered (exit 2) and the server goes on; an error of the run is answered (exit 1)
    with its traceback on the server's stderr."""
    from jax_vdit.cli.sample import check_inputs, complete_report, run_job

    t0 = time.perf_counter()
    try:
        job = job_namespace(json.loads(_read_line(conn) or b"null"), defaults)
        mismatches = model_mismatches(server_args, job)
        if mismatches:
            raise ValueError("this server holds another model or settings than the command asks for ("
                             + "; ".join(mismatches) + "): start a server with the command's flags, or run it "
                             "without --server")
        prompts, embeds = check_inputs(job)
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as err:
        send_message(conn, {"exit": 2, "error": str(err)})
        return 2

    def on_step(done: int, total: int) -> None:
        send_message(conn, {"progress": [done, total]})

    try:
        report = run_job(loaded, job, prompts, embeds, on_step=None if job.quiet else on_step)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, FloatingPointError, MemoryError) as err:
        send_message(conn, {"exit": 2, "error": str(err)})
        return 2
    except Exception as err:  # noqa: BLE001 (answered, logged, and the server serves on)
        traceback.print_exc(file=sys.stderr)
        send_message(conn, {"exit": 1, "error": f"{type(err).__name__}: {err} (the server's log has the traceback)"})
        return 1
    job_s = round(time.perf_counter() - t0, 3)
    report["server"] = {"socket": str(server_args.socket), "pid": os.getpid(), "job_s": job_s,
                        "settings": {name: getattr(server_args, name) for name in SERVER_FLAGS}}
    complete_report(report, bool(job.compile_only))
    send_message(conn, {"exit": 0, "report": report})
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from jax_vdit.cli.sample import load_for_sampling, run_job, start_up

    if args.max_jobs is not None and args.max_jobs < 1:
        raise ValueError(f"--max-jobs must be >= 1, got {args.max_jobs}")
    if args.idle_exit is not None and args.idle_exit <= 0:
        raise ValueError(f"--idle-exit must be > 0 seconds, got {args.idle_exit}")
    args.socket = Path(args.socket).expanduser().resolve()
    make_paths_absolute(args)
    listener = open_server_socket(args.socket)  # before the load: a clash is said at once
    inode = args.socket.stat().st_ino
    defaults = sample_defaults()

    def stop(signum, frame):  # SIGTERM as Ctrl-C: the socket file is removed on the way out
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with start_up(args) as (xla_flags_added, client_env_added, early_vae):
            loaded = load_for_sampling(args, xla_flags_added, client_env_added, early_vae, texts_required=False)
        ready = {"serving": str(args.socket), "pid": os.getpid(), "load_s": loaded.report["load_s"]}
        if loaded.prompts is not None or loaded.embeds is not None:  # this command's job compiled ahead of any
            args.compile_only = True
            warm = run_job(loaded, args, loaded.prompts, loaded.embeds)
            ready["warm_up"] = {k: warm.get(k) for k in ("sampler", "compile_s", "warmup_s", "vae_stages")}
        print(json.dumps(ready), flush=True)
        listener.settimeout(args.idle_exit)
        served = 0
        while args.max_jobs is None or served < args.max_jobs:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                print(f"vdit serve: no job for {args.idle_exit:g} s: stopping", file=sys.stderr)
                break
            with conn:
                conn.settimeout(None)
                try:
                    code = handle_job(conn, args, loaded, defaults)
                except (BrokenPipeError, ConnectionResetError):
                    code = 1  # the client went away; its job's files are written all the same
                served += 1
                print(f"vdit serve: job {served} ended with exit {code}", file=sys.stderr, flush=True)
        return 0
    except KeyboardInterrupt:
        print("vdit serve: stopped", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
        try:  # remove the socket file only if it is still ours
            if args.socket.stat().st_ino == inode:
                args.socket.unlink()
        except FileNotFoundError:
            pass


def register(sub) -> None:
    from jax_vdit.cli.sample import HelpFormatter, add_sample_arguments

    s = sub.add_parser(
        "serve", formatter_class=HelpFormatter,
        help="keep a model and its compiled programs in one process; `vdit sample --server` sends it jobs",
        description="Load a checkpoint once and run the jobs of `vdit sample --server SOCKET` commands (same model "
                    "flags) one at a time: each later command skips the imports, the load and reading the "
                    "compiled programs. With --prompt/--embeddings (and sizes) that job's programs are compiled "
                    "before the first command arrives. Prints one JSON line when ready; Ctrl-C or SIGTERM stops "
                    "it and removes the socket file.")
    add_sample_arguments(s, serving=True)
    g = s.add_argument_group("server")
    g.add_argument("--socket", default=DEFAULT_SOCKET, help="the Unix socket to listen on (owner-only)")
    g.add_argument("--max-jobs", type=int, default=None, help="stop after this many jobs (default: serve until "
                   "stopped)")
    g.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS", help="stop after this long without a "
                   "job (default: never)")
    s.set_defaults(func=_cmd_serve)
