"""The time-to-first-video summary derives its computed figures correctly and writes the table and the plot."""

import gzip
import json

import pytest

from experiments.summarize_first_video import first_video_rows, main, scan_table


def _child(total, init, sample, steps, **kw):
    return {"import_s": 2.0, "init_s": init, "sampler_lower_s": 1.0, "sampler_compile_s": 3.0, "sample_s": sample,
            "decode_s": 1.5, "write_s": 0.2, "total_s": total, "steps": steps, "cache_misses": 0, **kw}


def test_rows_leave_out_init_and_project_the_teacher_to_100_steps():
    data = {"size": "full", "device": "H100", "cases": {
        "student": {"cold": _child(30.0, 12.0, 2.0, 4), "warm": _child(9.0, 2.5, 2.0, 4)},
        "teacher": {"cold": _child(40.0, 12.0, 15.0, 10)}}}
    rows = first_video_rows("first_video_full", data)
    assert [(r["case"], r["phase"]) for r in rows] == [("student", "cold"), ("student", "warm"), ("teacher", "cold")]
    assert rows[0]["total_less_init_s"] == pytest.approx(18.0)
    assert "teacher100_total_s_computed" not in rows[0]
    assert rows[2]["teacher100_total_s_computed"] == pytest.approx(40.0 + 90 * 1.5)
    assert rows[2]["teacher100_total_less_init_s_computed"] == pytest.approx(28.0 + 90 * 1.5)


def test_scan_table_pairs_scanned_and_unrolled_runs():
    rows = [{"attention": "1:7", "layers": 32, "scan_layers": s, "lower_s": 1.0, "compile_s": c,
             "sample_s_median": m, "hlo_while_loops": w} for s, c, m, w in ((True, 9.0, 1.02, 2), (False, 70.0, 1.0, 1))]
    table = scan_table([("compare_scan_full", {"size": "full", "device": "H100", "rows": rows})])
    assert "| full | 1:7 | 32 | 1 | 10.0 | 71.0 | 1.020 | 1.000 | 1.020 | 2 / 1 | H100 |" in table
    # --scan-unroll 1,2: one line per scanned variant, each against the same unrolled run
    rows.append({"attention": "1:7", "layers": 32, "scan_layers": True, "scan_unroll": 2, "lower_s": 1.0,
                 "compile_s": 12.0, "sample_s_median": 1.01, "hlo_while_loops": 2})
    table = scan_table([("compare_scan_full", {"size": "full", "device": "H100", "rows": rows})])
    assert "| full | 1:7 | 32 | 1 | 10.0 | 71.0 | 1.020 | 1.000 | 1.020 | 2 / 1 | H100 |" in table
    assert "| full | 1:7 | 32 | 2 | 13.0 | 71.0 | 1.010 | 1.000 | 1.010 | 2 / 1 | H100 |" in table


def test_main_writes_the_summary_and_the_plot(tmp_path):
    (tmp_path / "first_video_full.json").write_text(json.dumps(
        {"command": "python -m experiments.bench_first_video --size full", "size": "full", "device": "H100",
         "cases": {"student": {"cold": _child(19.0, 6.0, 1.8, 4), "warm": _child(7.0, 2.0, 1.8, 4)},
                   "student-uniform-vae": {"cold": _child(15.0, 6.0, 1.8, 4)},
                   "teacher": {"cold": _child(40.0, 6.0, 15.0, 10)}}}))
    main(["--dir", str(tmp_path)])
    text = (tmp_path / "first_video.md").read_text()
    assert "| full | student (4 steps) | cold | 19.0 | 13.0 | <= 20 |" in text
    assert "| full | student (4 steps) | warm | 7.0 | 5.0 | <= 8 |" in text
    assert "| full | student-uniform-vae (4 steps) | cold | 15.0 | 9.0 | <= 20 |" in text  # a student case: goals too
    assert "| full | teacher (10 steps) | cold | 40.0 | 34.0 | - |" in text
    assert (tmp_path / "first_video.png").stat().st_size > 0


def test_main_refuses_an_empty_folder(tmp_path):
    with pytest.raises(SystemExit, match="no first_video_"):
        main(["--dir", str(tmp_path)])


def test_cli_runs_get_their_own_table_with_the_goals(tmp_path):
    report = {"load_s": 4.0, "compile_s": 9.5, "compile": {"programs": 13, "cache_misses": 2}, "sampling_s": 1.8,
              "vae_compile_wait_s": 0.1, "decode_s": 2.0}
    early = dict(report, vae_compile_before_jax={"started_s": 0.31, "used": True})
    (tmp_path / "first_video_cli_full.json").write_text(json.dumps(
        {"command": "python -m experiments.bench_first_video --size full --cli", "size": "full", "device": "H200",
         "cli": {"cold": {"wall_s": 18.25, "report": report}, "early": {"args": [], "cold": {
             "wall_s": 17.0, "report": early}}, "warm": {"wall_s": 7.5, "report": dict(
             report, compile_s=0.0, compile={"programs": 0, "cache_misses": 0}, sampler_from_store=True,
             sampler_early={"seconds": 0.4, "compile": {"programs": 2, "cache_misses": 0}, "wait_s": 0.0,
                            "error": None}, before_main_s=1.25, main_s=5.75)}}}))
    main(["--dir", str(tmp_path)])
    text = (tmp_path / "first_video.md").read_text()
    # a report without the process's own times (older code): no start or exit columns
    assert "| full | this | cold | 18.2 | <= 20 | 4.0 | 9.5 (13, 2) | - | - | - | 1.80 | 0.10 | 2.00 | - | - | H200 |" \
        in text
    # with them: the time after the report is the wall time less the time before main and main's own
    assert "| 1.80 | 0.10 | 2.00 | 1.25 | 0.50 | H200 |" in text
    # the sampler compiled (here: read from the store) in the background while the weights loaded
    assert "| full | this | warm | 7.5 | <= 8 | 4.0 | 0.0 (0, 0) | - | 0.4 (2, 0; 0.00) | True | 1.80 |" in text
    assert "| baseline |" not in text
    # the VAE's compile processes started before JAX (a variant's run here)
    assert "| full | early | cold | 17.0 |" in text and "| 0.10 (processes from 0.31 s) | 2.00 |" in text


def test_the_weights_read_from_the_start_are_shown(tmp_path):
    report = {"load_s": 2.5, "compile_s": 0.0, "compile": {"programs": 0, "cache_misses": 0}, "sampling_s": 1.8,
              "vae_compile_wait_s": 0.0, "decode_s": 2.1,
              "load_parts": {"transformer": {"read_wait": 0.61}},
              "weights_prefetch": {"bytes_read": 5.4e9, "taken": 500, "taken_waiting": 20, "taken_from_queue": 3,
                                   "started_s": 0.12, "taken_placed": 480}}
    (tmp_path / "first_video_cli_full.json").write_text(json.dumps(
        {"command": "bench", "size": "full", "device": "H100", "cli": {"warm": {"wall_s": 8.0, "report": report}}}))
    main(["--dir", str(tmp_path)])
    text = (tmp_path / "first_video.md").read_text()
    assert "| 5.4, 500 (20 / 3), from 0.12, 480 already on the device; 0.61 |" in text


def test_a_baseline_trees_runs_come_first_in_the_cli_table(tmp_path):
    """``--baseline-tree`` puts the other tree's runs under ``cli.baseline``: their rows precede this tree's."""
    base = {"load_s": 9.5, "load_compile": {"programs": 54}, "compile_s": 6.1, "compile": {"programs": 13,
            "cache_misses": 13}, "sampling_s": 1.95, "vae_compile_wait_s": 0.24, "decode_s": 3.99}
    this = dict(base, load_s=5.0, load_compile={"programs": 2}, compile={"programs": 3, "cache_misses": 3})
    (tmp_path / "first_video_cli_full.json").write_text(json.dumps(
        {"command": "python -m experiments.bench_first_video --size full --cli --baseline-tree B", "size": "full",
         "device": "H100", "cli": {"cold": {"wall_s": 16.0, "report": this},
                                   "baseline": {"tree": "B", "cold": {"wall_s": 24.1, "report": base}}}}))
    main(["--dir", str(tmp_path)])
    lines = (tmp_path / "first_video.md").read_text().splitlines()
    rows = [line for line in lines if line.startswith("| full |")]
    assert rows[0].startswith("| full | baseline | cold | 24.1 | <= 20 | 9.5 (54) | 6.1 (13, 13) |")
    assert rows[1].startswith("| full | this | cold | 16.0 | <= 20 | 5.0 (2) | 6.1 (3, 3) |")
    assert not (tmp_path / "first_video.png").exists()  # no fresh-process cases: nothing to plot


def test_a_stopped_run_is_rebuilt_from_its_log(tmp_path):
    row = _child(30.0, 12.0, 2.0, 4)
    (tmp_path / "run.log").write_text(
        "[10:00:00] student cold: -m experiments.bench_first_video --child student --size full --cache /c\n"
        f"[10:01:00] student cold: {row!r}\n[10:01:00] student warm: -m x --child student --size full\n"
        f"[10:01:30] student warm: {dict(row, total_s=9.0)!r}\n"
        "[10:01:30] student-sequential-vae cold: -m x --size full\nrc=124\n")
    main(["--dir", str(tmp_path), "--rebuild-from-log", str(tmp_path / "run.log"), "--device", "H100",
          "--command", "python -m experiments.bench_first_video --size full"])
    data = json.loads((tmp_path / "first_video_run.json").read_text())
    assert data["size"] == "full" and data["rebuilt_from_log"] == "run.log"
    assert set(data["cases"]) == {"student"} and data["cases"]["student"]["warm"]["total_s"] == 9.0
    assert "| full | student (4 steps) | warm | 9.0 |" in (tmp_path / "first_video.md").read_text()


def test_a_run_that_timed_out_gets_a_row_that_says_so(tmp_path):
    report = {"load_s": 4.0, "compile_s": 0.0, "compile": {"programs": 0, "cache_misses": 0}, "sampling_s": 1.8,
              "vae_compile_wait_s": 0.0, "decode_s": 2.0}
    (tmp_path / "first_video_cli_full.json").write_text(json.dumps(
        {"command": "python -m experiments.bench_first_video --size full --cli", "size": "full", "device": "H100",
         "cli": {"cold": {"wall_s": 20.0, "report": report},
                 "slow": {"args": [], "cold": {"timed_out": True, "wall_s": 150.2, "stderr_tail": ""}},
                 "bad": {"args": [], "cold": {"returncode": 1, "wall_s": 3.0, "stderr_tail": "boom"}}}}))
    main(["--dir", str(tmp_path)])
    text = (tmp_path / "first_video.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| full |")]
    assert "| full | slow | cold | timed out after 150 s |" + " |" * 11 + " H100 |" in rows
    assert "| full | bad | cold | failed (exit 1) after 3 s |" + " |" * 11 + " H100 |" in rows
    header = next(line for line in text.splitlines() if line.startswith("| size | code |"))
    assert all(row.count("|") == header.count("|") for row in rows)


def test_a_stopped_cli_run_is_rebuilt_from_its_log(tmp_path):
    report = {"load_s": 6.9, "compile_s": 0.0, "compile": {"programs": 0, "cache_misses": 0}, "sampling_s": 1.88,
              "vae_compile_wait_s": 0.0, "decode_s": 4.32, "vae_compile_before_jax": {"started_s": 2.31, "used": True}}
    (tmp_path / "first_video_cli.log").write_text(
        "[15:13:25] cli cold: vdit sample /s --vae /v --frames 29\n"
        f"[15:13:47] cli cold: 21.9 s; {report!r}; \n"
        "[15:13:47] cli slow cold: X=1 vdit sample /s --vae /v --frames 29\n")
    main(["--dir", str(tmp_path), "--rebuild-from-log", str(tmp_path / "first_video_cli.log"), "--device", "H100",
          "--command", "python -m experiments.bench_first_video --size full --cli"])
    data = json.loads((tmp_path / "first_video_cli.json").read_text())
    assert data["size"] == "full" and data["rebuilt_from_log"] == "first_video_cli.log"
    assert data["cli"]["cold"]["report"] == report and data["cli"]["slow"]["cold"]["stopped"]
    text = (tmp_path / "first_video.md").read_text()
    assert "| full | this | cold | 21.9 | <= 20 | 6.9 |" in text
    assert "| full | slow | cold | stopped with the bench, no report |" in text
    # the committed logs are gzipped: the same from first_video_cli.log.gz
    log = tmp_path / "first_video_cli.log"
    (tmp_path / "first_video_cli.log.gz").write_bytes(gzip.compress(log.read_bytes()))
    log.unlink()
    (tmp_path / "first_video_cli.json").unlink()
    main(["--dir", str(tmp_path), "--rebuild-from-log", str(tmp_path / "first_video_cli.log.gz"), "--device", "H100",
          "--command", "python -m experiments.bench_first_video --size full --cli"])
    data = json.loads((tmp_path / "first_video_cli.json").read_text())
    assert data["cli"]["cold"]["report"] == report and data["rebuilt_from_log"] == "first_video_cli.log.gz"


def test_a_teacher_command_gets_its_computed_first_step_beside_the_release(tmp_path):
    """A ``vdit sample`` run with guidance is placed in the first-step table: process start to the end of its first
    step = before main + main - (sampling - one step) - decode - write; a student's run (no CFG) is not."""
    teacher = {"sampler": "euler_ancestral, 100 steps, CFG 7.5", "before_main_s": 0.1, "main_s": 160.0,
               "sampling_s": 150.0, "s_per_step_median": 1.5, "decode_s": 3.0, "write_s": 0.4, "load_s": 3.9,
               "startup": {"imports_s": 1.9}}
    student = dict(teacher, sampler="consistency, 4 steps, edges 0,250,500,750, no CFG")
    (tmp_path / "first_video_cli_full.json").write_text(json.dumps(
        {"command": "bench", "size": "full", "device": "H100", "cli": {
            "cold": {"wall_s": 18.0, "report": student},
            "teacher100": {"args": ["--guidance", "7.5"], "cold": {"wall_s": 160.5, "report": teacher}}}}))
    (tmp_path / "torch_release_29x720p.json").write_text(json.dumps(
        {"command": "release", "attention_mode": "xformers", "size": "29x720p", "device": "H100", "runs": [
            {"import_s": 7.5, "init_s": 0.7, "first_step_s": 2.3, "time_to_first_step_s": 9.8, "step_s": [1.76]}]}))
    main(["--dir", str(tmp_path)])
    text = (tmp_path / "first_video.md").read_text()
    assert "| PyTorch release (xformers) | 29x720p | 0 | 7.5 | 0.7 | 2.30 | 9.8 | 1.76 | H100 |" in text
    # 0.1 + 160 - (150 - 1.5) - 3 - 0.4 = 8.2
    assert ("| jax-vdit `vdit sample` teacher100 (computed: process start to the end of its first step, weights read "
            "from disk) | full | cold | 1.9 | 3.9 | 1.50 | 8.2 | 1.50 | H100 |") in text
    assert "`vdit sample` this" not in text
