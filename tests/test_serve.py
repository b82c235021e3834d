"""``vdit serve`` and ``vdit sample --server``: one process keeps the model; its jobs equal local runs bit for bit,
bad jobs are refused without stopping it, and the client imports no JAX."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jax_vdit.cli import main
from jax_vdit.cli.serve import job_namespace, model_mismatches, open_server_socket, sample_defaults
from jax_vdit.cli.serve_client import PROTOCOL_VERSION, make_paths_absolute, request_payload

ROOT = Path(__file__).resolve().parents[1]


def _embeddings(path: Path, channels: int = 64) -> Path:
    rng = np.random.default_rng(0)
    save_file({"text": rng.standard_normal((1, 1, 7, channels)).astype(np.float32),
               "text_mask": np.ones((1, 1, 7), np.int32),
               "negative_text": rng.standard_normal((1, 7, channels)).astype(np.float32),
               "negative_mask": np.ones((1, 7), np.int32)}, str(path))
    return path


def _model_flags(golden_dir: Path) -> list[str]:
    return [str(golden_dir / "opensora_v12" / "tiny_a"), "--latents-only", "--param-dtype", "float32",
            "--compute-dtype", "float32", "--no-compile-cache"]


def _start_server(golden_dir: Path, sock: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import main; sys.exit(main(sys.argv[1:]))", "serve",
           *_model_flags(golden_dir), "--socket", str(sock), *extra]
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()  # the ready line, once loaded (and the warm-up job compiled)
    assert line, (tmp_path / "server.log").read_text()[-3000:]
    ready = json.loads(line)
    assert ready["serving"] == str(sock.resolve()) and ready["pid"] == proc.pid
    return proc


def test_jobs_sent_to_a_server_equal_local_runs_and_bad_jobs_leave_it_serving(golden_dir, tmp_path, capsys):
    emb = _embeddings(tmp_path / "emb.safetensors")
    sock = tmp_path / "vdit.sock"
    job = ["--embeddings", str(emb), "--steps", "2", "--guidance", "4", "--quiet"]
    server = _start_server(golden_dir, sock, tmp_path, *job, "--max-jobs", "4")
    try:
        assert stat_is_socket(sock) and (sock.stat().st_mode & 0o777) == 0o600  # owner-only
        # 1: a job with another model flag is refused, naming the flag; the server serves on
        code = main(["sample", *_model_flags(golden_dir)[:-1], "--compile-cache", str(tmp_path / "xla"), *job,
                     "--out", str(tmp_path / "refused.safetensors"), "--server", str(sock)])
        err = capsys.readouterr().err
        assert code == 2 and "--compile-cache: server " in err and "--no-compile-cache: server True, command False" \
            in err, err
        assert not (tmp_path / "refused.safetensors").exists()
        # 2: bad input is refused by the server's checks (the same as a local run's)
        code = main(["sample", *_model_flags(golden_dir), *job, "--seed", "-1", "--server", str(sock)])
        assert code == 2 and "--seed must be in [0, 2**32)" in capsys.readouterr().err
        # 3, 4: two jobs with other seeds, relative paths resolved against the client's folder
        reports = []
        for seed in (3, 4):
            cwd = os.getcwd()
            os.chdir(tmp_path)
            try:
                code = main(["sample", *_model_flags(golden_dir), *job, "--seed", str(seed), "--out",
                             f"served{seed}.safetensors", "--server", str(sock)])
            finally:
                os.chdir(cwd)
            assert code == 0
            reports.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
        server.wait(timeout=120)  # --max-jobs 4: it stops by itself, removing its socket file
        assert server.returncode == 0 and not sock.exists()
    finally:
        server.kill()
    first, second = reports
    assert first["server"]["pid"] == server.pid and first["out"] == str(tmp_path / "served3.safetensors")
    assert first["latent_shape"] == [1, 4, 3, 8, 10] and first["sampling_s"] > 0
    # compiled once, when the server started: no job compiles anything
    assert first["compile"]["programs"] == 0 and second["compile"]["programs"] == 0, first["compile"]
    assert first["run_compile"]["programs"] == 0
    assert first["load_s"] == second["load_s"]  # the one load, reported with each job
    log = (tmp_path / "server.log").read_text()
    assert "job 1 ended with exit 2" in log and "job 4 ended with exit 0" in log
    # the same latents as a local `vdit sample` of the same job
    code = main(["sample", *_model_flags(golden_dir), *job, "--seed", "4", "--out", str(tmp_path / "local.safetensors")])
    assert code == 0
    capsys.readouterr()
    np.testing.assert_array_equal(load_file(str(tmp_path / "served4.safetensors"))["latents"],
                                  load_file(str(tmp_path / "local.safetensors"))["latents"])
    sidecar = json.loads((tmp_path / "served4.safetensors.json").read_text())
    assert sidecar["videos"][0]["seed"] == 4 and "--server" in sidecar["command"]


def stat_is_socket(path: Path) -> bool:
    import stat

    return stat.S_ISSOCK(path.stat().st_mode)


def test_the_client_imports_no_jax_and_says_when_no_server_listens(golden_dir, tmp_path, capsys):
    sock = tmp_path / "none.sock"
    emb = _embeddings(tmp_path / "e.safetensors")
    code = ("import sys; from jax_vdit.cli import main; rc = main(sys.argv[1:]); "
            "print('JAX' if 'jax' in sys.modules else 'NO-JAX'); sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, "sample", str(golden_dir / "opensora_v12" / "tiny_a"),
                           "--embeddings", str(emb), "--server", str(sock)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no `vdit serve` listens there" in proc.stderr, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "NO-JAX"
    # a socket file whose server stopped (bound, never listening: connecting is refused) is named as such
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()
    code = main(["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--embeddings", str(emb), "--server",
                 str(sock)])
    assert code == 2 and "nothing listens there" in capsys.readouterr().err


def test_the_server_socket_replaces_only_a_stopped_servers_socket(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with pytest.raises(FileExistsError, match="not a socket: not replaced"):
        open_server_socket(other)
    assert other.read_text() == "mine"
    live = open_server_socket(tmp_path / "a.sock")
    try:
        with pytest.raises(FileExistsError, match="a server already listens there"):
            open_server_socket(tmp_path / "a.sock")
    finally:
        live.close()
    again = open_server_socket(tmp_path / "a.sock")  # closed: a stopped server's file, replaced
    again.close()
    with pytest.raises(ValueError, match="too long"):
        open_server_socket(tmp_path / ("x" * 120 + ".sock"))


def test_requests_are_checked_and_model_flags_compared(tmp_path, monkeypatch):
    defaults = sample_defaults()
    with pytest.raises(ValueError, match="protocol"):
        job_namespace({"version": PROTOCOL_VERSION + 1, "args": {}}, defaults)
    with pytest.raises(ValueError, match="lacks: bogus"):
        job_namespace({"version": PROTOCOL_VERSION, "args": {"bogus": 1}}, defaults)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "e.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(**vars(defaults))
    args.checkpoint, args.embeddings, args.out, args.text_encoder = "ckpt", "e.safetensors", "o/x.safetensors", "toy"
    args.attention, args.argv, args.func = "1:7", ["ckpt"], print
    make_paths_absolute(args)
    assert args.checkpoint == str(tmp_path / "ckpt") and args.embeddings == str(tmp_path / "e.safetensors")
    assert args.out == str(tmp_path / "o" / "x.safetensors")
    assert args.text_encoder == "toy" and args.attention == "1:7"  # not paths
    payload = json.loads(json.dumps(request_payload(args)))  # JSON-safe, the callable left out
    job = job_namespace(payload, defaults)
    assert job.checkpoint == args.checkpoint and job.argv == ["ckpt"]
    assert model_mismatches(args, job) == []
    job.param_dtype = "float16"
    assert model_mismatches(args, job) == ["--param-dtype: server 'bfloat16', command 'float16'"]


def test_a_job_that_fails_in_the_run_is_answered_and_the_server_goes_on(golden_dir, tmp_path, monkeypatch, capsys):
    """An error inside a job's run is answered with exit 1 (its traceback on the server's stderr), an input error
    raised there with exit 2; :func:`handle_job` returns instead of raising, so the serving loop goes on."""
    import jax_vdit.cli.sample as sample_cli
    from jax_vdit.cli.serve import handle_job

    defaults = sample_defaults()
    server_args = argparse.Namespace(**vars(defaults))
    server_args.checkpoint = str(golden_dir / "opensora_v12" / "tiny_a")
    server_args.socket = tmp_path / "s.sock"
    job = argparse.Namespace(**vars(server_args))
    job.embeddings = str(_embeddings(tmp_path / "e.safetensors"))
    del job.socket
    for error, code in ((RuntimeError("device lost"), 1), (FloatingPointError("NaN in the latents"), 2)):
        def failing_run_job(*args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(sample_cli, "run_job", failing_run_job)
        ours, theirs = socket.socketpair()
        with ours, theirs:
            theirs.sendall((json.dumps(request_payload(job)) + "\n").encode())
            assert handle_job(ours, server_args, loaded=None, defaults=defaults) == code
            answer = json.loads(theirs.makefile("r").readline())
        assert answer["exit"] == code and str(error) in answer["error"]
    assert "RuntimeError: device lost" in capsys.readouterr().err  # the traceback, in the server's log


@pytest.mark.parametrize("how", ["idle-exit", "sigterm"])
def test_the_server_stops_when_idle_or_told_and_removes_its_socket(golden_dir, tmp_path, how):
    import signal

    sock = tmp_path / "s.sock"
    server = _start_server(golden_dir, sock, tmp_path, *(["--idle-exit", "1"] if how == "idle-exit" else []))
    try:
        if how == "sigterm":
            server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
    assert not sock.exists()
    log = (tmp_path / "server.log").read_text()
    assert ("no job for 1 s: stopping" if how == "idle-exit" else "vdit serve: stopped") in log, log[-2000:]
