"""``bench_first_video --cli``: variants of the command are parsed into arguments and environment, bad ones are
refused by name."""

import pytest

from experiments.bench_first_video import main, parse_cli_variant


def test_a_variant_splits_into_arguments_and_environment():
    name, args, env = parse_cli_variant("after-load-switch=--vae-warmup after-load JAX_VDIT_SWITCH_INTERVAL=0.001")
    assert name == "after-load-switch"
    assert args == ["--vae-warmup", "after-load"] and env == {"JAX_VDIT_SWITCH_INTERVAL": "0.001"}
    assert parse_cli_variant("plain=") == ("plain", [], {})
    assert parse_cli_variant("x=--attention=1:7") == ("x", ["--attention=1:7"], {})  # a flag, not a variable


@pytest.mark.parametrize("bad", ["no-equals-sign", "=--flag", "bad name=--flag"])
def test_a_malformed_variant_is_refused_before_any_work(bad, capsys):
    with pytest.raises(SystemExit):
        main(["--size", "tiny", "--cli", "--cli-variant", bad])
    assert "CLI variant is NAME=ARGS" in capsys.readouterr().err


def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path):
    import os
    import sys
    import time

    from experiments.bench_first_video import run_command

    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; "
              "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
              f"open({str(pid_file)!r}, 'w').write(str(c.pid)); print('started', flush=True); "
              "sys.stderr.write('the end of stderr'); sys.stderr.flush(); time.sleep(60)")
    t = time.perf_counter()
    ran = run_command([sys.executable, "-c", script], tmp_path, dict(os.environ), timeout=5)
    assert time.perf_counter() - t < 30
    assert ran["returncode"] is None and "the end of stderr" in ran["stderr_tail"] and ran["wall_s"] >= 5
    assert "time.sleep" in ran["stderr_tail"] or "<string>" in ran["stderr_tail"]  # the fault handler's stack
    child = int(pid_file.read_text())
    for _ in range(50):  # the grandchild went with the process group (reaped by init, or a zombie at worst)
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the child {child} of the killed command still runs")
    done = run_command([sys.executable, "-c", "print('{\"ok\": 1}')"], tmp_path, dict(os.environ), timeout=30)
    assert done["returncode"] == 0 and done["stdout"].strip() == '{"ok": 1}'


def test_a_run_that_times_out_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import json

    import experiments.bench_first_video as bench

    monkeypatch.setattr(bench, "write_student_inputs", lambda size, work: (work / "s", work / "v", work / "e"))
    monkeypatch.setattr(bench, "compare_latents", lambda a, b: {"equal": True, "max_abs_diff": 0.0})
    calls = []

    def fake_run(cmd, cwd, env, timeout):
        calls.append((env.get("SLOW"), "cold" if "cold" in " ".join(cmd) else "warm", timeout))
        if env.get("SLOW"):
            return {"returncode": None, "stdout": "", "stderr_tail": "stuck", "wall_s": timeout}
        return {"returncode": 0, "stdout": json.dumps({"wall": 1}), "stderr_tail": "", "wall_s": 1.0}

    monkeypatch.setattr(bench, "run_command", fake_run)
    updates = []
    out = bench.run_cli("tiny", tmp_path, variants=["slow=SLOW=1", "other=--steps 2"], command_timeout=7,
                        on_update=lambda cli: updates.append(json.loads(json.dumps(cli))))
    assert out["slow"]["cold"]["timed_out"] and out["slow"]["cold"]["stderr_tail"] == "stuck"
    assert "warm" not in out["slow"]  # no warm run after a cold one that did not finish
    assert out["cold"]["report"] == out["other"]["warm"]["report"] == {"wall": 1}
    assert [c[:2] for c in calls] == [(None, "cold"), ("1", "cold"), (None, "cold"), (None, "warm"), (None, "warm")]
    assert all(c[2] == 7 for c in calls) and len(updates) == 5 and "timed_out" in updates[1]["slow"]["cold"]
    assert bench.cli_runs_not_done(out) == ["slow cold"]


def test_the_server_runs_match_the_cold_run_and_are_summarised(tmp_path):
    """``--cli-server 2`` (:func:`run_cli`'s ``server_runs``) at the tiny size: `vdit serve` on the warm cache, two `vdit sample --server`
    commands whose latents equal the cold command's, compiling nothing; the summary gets their table."""
    import json

    from experiments.bench_first_video import run_cli
    from experiments.summarize_first_video import main as summarize

    work = tmp_path / "work"
    work.mkdir()
    cli = run_cli("tiny", work, vae_tiles="uniform", server_runs=2)  # in this process: JAX may be started already
    server = cli["server"]
    assert server["returncode"] == 0 and server["ready"]["warm_up"]["vae_stages"] >= 1
    assert len(server["runs"]) == 2
    for run in server["runs"]:
        assert run["latents_match_cold"]["equal"], run
        assert run["report"]["videos_written"] and run["report"]["vae_decode_s"] > 0  # the server decoded the mp4
        assert run["report"]["compile"]["programs"] == 0 and run["report"]["server"]["pid"] == server["ready"]["pid"]
    (tmp_path / "first_video_cli_tiny.json").write_text(json.dumps(
        {"command": "bench_first_video --size tiny --cli --cli-server 2", "size": "tiny", "device": "cpu", "cli": cli}))
    summarize(["--dir", str(tmp_path)])
    text = (tmp_path / "first_video.md").read_text()
    assert "## The same command sent to a `vdit serve` process" in text
    assert text.count("| tiny | 1 | ") == 1 and "| True |" in text
