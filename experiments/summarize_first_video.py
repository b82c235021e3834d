"""Tables and a plot of the time-to-first-video results (``bench_first_video``, ``bench_torch_release``).

Reads from ``--dir`` every ``first_video_*.json`` (cold and warm children per case), ``compare_scan_*.json``
(scanned vs unrolled sampler) and ``torch_release_*.json`` (the PyTorch release's first step), and writes
``first_video.md`` (tables with the goals of issue 19) and ``first_video.png`` (where the seconds of each cold and
warm run go) into the same folder.

    python -m experiments.summarize_first_video --dir experiments/results/first_video

Two derived figures are labelled as computed, never as measured:
* ``total - init``: the run without the random initialisation of the weights (a user reads a checkpoint instead,
  which this benchmark does not time);
* a teacher run measured at N < 100 steps is projected to 100 steps as ``total + (100 - N) x sample_s / N``: the
  sampler is one program whatever the step count, so only the loop runs longer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# goals of issue 19 (seconds, cold total / warm total) per size
GOALS = {"full": (20.0, 8.0), "full93": (40.0, None)}
PHASES = ("import_s", "init_s", "sampler_lower_s", "sampler_compile_s", "sample_s", "vae_warmup_wait_s",
          "decode_s", "write_s")


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def load(folder: Path, pattern: str) -> list[tuple[str, dict]]:
    """``(file stem, JSON)`` of every file matching ``pattern`` in ``folder``, or ``pattern + ".gz"`` (gzipped;
    the stem then without ``.json``), sorted by name."""
    plain = [(p.stem, json.loads(p.read_text())) for p in sorted(folder.glob(pattern))]
    zipped = [(Path(p.stem).stem, json.loads(gzip.decompress(p.read_bytes())))
              for p in sorted(folder.glob(pattern + ".gz"))]
    return sorted(plain + zipped, key=lambda item: item[0])


def rebuild_from_log(log: Path, *, device: str, command: str) -> dict:
    """A ``first_video_*.json`` from the log of a ``bench_first_video`` run that was stopped (e.g. by ``timeout``)
    before it wrote its JSON: every child that finished logged ``[time] CASE PHASE: {row}``. The result says that it
    was rebuilt and from which log (plain text, or gzipped as the committed logs are: ``*.log.gz``)."""
    import ast
    import gzip
    import re

    text = gzip.decompress(log.read_bytes()).decode() if log.suffix == ".gz" else log.read_text()
    if re.search(r"^\[\d\d:\d\d:\d\d\] cli ", text, re.M):
        return _rebuild_cli_from_log(log, text, device=device, command=command)
    cases: dict = {}
    size = None
    for line in text.splitlines():
        found = re.match(r"^\[\d\d:\d\d:\d\d\] (\S+) (cold|warm): (.*)$", line)
        if not found:
            continue
        case, phase, rest = found.groups()
        if rest.startswith("{"):
            cases.setdefault(case, {})[phase] = ast.literal_eval(rest)
        elif size is None and "--size " in rest:
            size = rest.split("--size ")[1].split()[0]
    if not cases:
        raise ValueError(f"{log}: no finished child rows ([time] CASE cold|warm: {{...}})")
    return {"command": command, "device": device, "size": size, "cases": cases,
            "rebuilt_from_log": log.name, "note": "the run was stopped before it wrote its JSON; rows of the children "
            "that finished, as they logged them"}


def _rebuild_cli_from_log(log: Path, text: str, *, device: str, command: str) -> dict:
    """:func:`rebuild_from_log` for a ``--cli`` run (``text``: the log's content): each command logged ``[time] cli [NAME] PHASE: COMMAND`` when
    it started and ``[time] cli [NAME] PHASE: WALL s; {report}; {latents_match_cold}`` when it finished; a command
    that started and never finished is kept as ``{"stopped": true, "command": ...}`` (the bench was stopped while
    it ran)."""
    import ast
    import re

    cli: dict = {}
    for line in text.splitlines():
        found = re.match(r"^\[\d\d:\d\d:\d\d\] cli (?:(\S+) )?(cold|warm): (.*)$", line)
        if not found:
            continue
        name, phase, rest = found.groups()
        runs_of = cli.setdefault(name, {"args": []}) if name else cli
        done = re.match(r"^([\d.]+) s; (\{.*\}); (.*)$", rest)
        if done:
            entry = {"wall_s": float(done.group(1)), "report": ast.literal_eval(done.group(2))}
            if done.group(3).strip():
                entry["latents_match_cold"] = ast.literal_eval(done.group(3).strip())
            runs_of[phase] = entry
        elif "vdit sample" in rest:
            runs_of[phase] = {"stopped": True, "wall_s": None, "command": rest}
    if not any("report" in runs.get(phase, {}) for runs in [cli, *cli.values()] if isinstance(runs, dict)
               for phase in ("cold", "warm")):
        raise ValueError(f"{log}: no finished command rows ([time] cli [NAME] cold|warm: WALL s; {{...}})")
    size = command.split("--size ")[1].split()[0] if "--size " in command else None
    return {"command": command, "device": device, "size": size, "cli": cli, "rebuilt_from_log": log.name,
            "note": "the run was stopped before it wrote its JSON; the commands that finished, as they logged them"}


def first_video_rows(stem: str, data: dict) -> list[dict]:
    """One row per case and phase (cold, warm) with the measured seconds and the derived ones."""
    rows = []
    for case, phases in data["cases"].items():
        for phase in ("cold", "warm"):
            r = phases.get(phase)
            if r is None:
                continue
            steps = r.get("steps")
            row = {"file": stem, "size": data.get("size"), "device": data.get("device"), "case": case,
                   "phase": phase, **{k: r.get(k) for k in PHASES}, "total_s": r["total_s"],
                   "total_less_init_s": r["total_s"] - r.get("init_s", 0.0), "steps": steps,
                   "vae_stage_compile_s": r.get("vae_stage_compile_s"), "vae_warmup_s": r.get("vae_warmup_s"),
                   "cache_misses": r.get("cache_misses"), "cache_hits": r.get("cache_hits")}
            if case.startswith("teacher") and steps and steps < 100:
                extra = (100 - steps) * r["sample_s"] / steps
                row["teacher100_total_s_computed"] = r["total_s"] + extra
                row["teacher100_total_less_init_s_computed"] = row["total_less_init_s"] + extra
            rows.append(row)
    return rows


def first_video_table(rows: list[dict]) -> str:
    head = ("| size | case | phase | total s | total - init s (computed) | goal s | import | init | sampler lower "
            "+ compile | sample | VAE warm-up wait | decode | write | cache misses | device | file |")
    lines = [head, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        cold_goal, warm_goal = GOALS.get(r["size"], (None, None))
        student = r["case"].split("-")[0] == "student"  # also student-uniform-vae, student-sequential-vae
        goal = (cold_goal if r["phase"] == "cold" else warm_goal) if student else None
        compile_s = (r["sampler_lower_s"] or 0.0) + (r["sampler_compile_s"] or 0.0)
        lines.append(f"| {r['size']} | {r['case']} ({r['steps']} steps) | {r['phase']} | {_f(r['total_s'], 1)} | "
                     f"{_f(r['total_less_init_s'], 1)} | {'-' if goal is None else f'<= {goal:g}'} | "
                     f"{_f(r['import_s'], 1)} | {_f(r['init_s'], 1)} | {_f(compile_s, 1)} | {_f(r['sample_s'])} | "
                     f"{_f(r['vae_warmup_wait_s'])} | {_f(r['decode_s'])} | {_f(r['write_s'])} | "
                     f"{r['cache_misses']} | {r['device']} | {r['file']} |")
    projected = [r for r in rows if "teacher100_total_s_computed" in r]
    if projected:
        lines += ["", "Teacher at 100 steps (computed from the run above: total + (100 - N) x sample_s / N):", "",
                  "| size | phase | measured steps | total s (computed) | total - init s (computed) |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| {r['size']} | {r['phase']} | {r['steps']} | {r['teacher100_total_s_computed']:.1f} | "
                  f"{r['teacher100_total_less_init_s_computed']:.1f} |" for r in projected]
    return "\n".join(lines)


def named_cli_runs(cli: dict) -> list[tuple[str, dict]]:
    """``(name, {"cold": ..., "warm": ...})`` of a ``bench_first_video --cli`` result: the baseline tree's
    (``--baseline-tree``, when it ran), this tree's as "this", then each ``--cli-variant`` (those hold "args")."""
    baseline = [("baseline", cli["baseline"])] if isinstance(cli.get("baseline"), dict) else []
    return baseline + [("this", cli)] + [(n, r) for n, r in cli.items() if isinstance(r, dict) and "args" in r]


def cli_table(runs: list[tuple[str, dict]]) -> str:
    """``vdit sample`` of a random student folder, cold then warm: wall seconds around the process and its report."""
    lines = ["| size | code | phase | wall s | goal s | load s (its programs) | warm-up compile s (programs, cache "
             "misses) | weights read from the start: GB read, tensors taken (waited for / read by the loader), from s, "
             "taken already on the device; "
             "loader's read wait s | sampler compiled beside the load: s (programs, cache misses; warm-up's wait s) | sampler "
             "from the store | sampling s | VAE compile wait s (its processes started before JAX: s after the process "
             "start) | VAE wait + decode + mp4 s | before main s | after the "
             "report s (computed) | device |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for _, data in runs:
        goals = GOALS.get(data.get("size"), (None, None))
        # a run with --baseline-tree holds the other tree's runs under "baseline" (its rows first); --cli-variant
        # runs are under their names (after this tree's), each with its "args"
        for code, runs_of in named_cli_runs(data["cli"]):
            for phase, goal in zip(("cold", "warm"), goals):
                r = runs_of.get(phase)
                if r is None:
                    continue
                if "report" not in r:  # killed past the bench's --cli-timeout, or failed: no report
                    if r.get("stopped"):
                        what = "stopped with the bench, no report"
                    else:
                        what = ("timed out" if r.get("timed_out") else f"failed (exit {r.get('returncode')})") + \
                            f" after {r['wall_s']:.0f} s"
                    blank = lines[1].count("|") - 1 - 5  # every column but size, code, phase, what, device
                    lines.append(f"| {data.get('size')} | {code} | {phase} | {what} |" + " |" * blank
                                 + f" {data.get('device')} |")
                    continue
                rep, comp = r["report"], r["report"].get("compile", {})
                load_programs = rep.get("load_compile", {}).get("programs")
                load_programs = "" if load_programs is None else f" ({load_programs})"
                early = rep.get("sampler_early")
                early = "-" if not early else (
                    f"{early['seconds']:.1f} ({early['compile']['programs']}, {early['compile']['cache_misses']}; "
                    f"{early['wait_s']:.2f})" + (f" error: {early['error']}" if early.get("error") else ""))
                stored = rep.get("sampler_from_store")
                read_wait = _f((rep.get("load_parts") or {}).get("transformer", {}).get("read_wait"))
                prefetch = rep.get("weights_prefetch")  # the weights read from the command's start (a dict)
                prefetch = "-" if not isinstance(prefetch, dict) else (
                    f"{prefetch['bytes_read'] / 1e9:.1f}, {prefetch['taken']} ({prefetch['taken_waiting']} / "
                    f"{prefetch['taken_from_queue']}), from {_f(prefetch.get('started_s'))}"
                    + (f", {prefetch['taken_placed']} already on the device" if prefetch.get("taken_placed") else ""))
                if prefetch != "-" or read_wait != "-":
                    prefetch += f"; {read_wait}"
                decode = _f(rep.get("decode_s"))
                vae_wait = _f(rep.get("vae_compile_wait_s"))
                before_jax = rep.get("vae_compile_before_jax")  # the VAE's processes started before JAX
                if before_jax:
                    vae_wait += (f" (processes from {_f(before_jax.get('started_s'))} s"
                                 f"{'' if before_jax.get('used') else ', not used'})")
                lines.append(f"| {data.get('size')} | {code} | {phase} | {r['wall_s']:.1f} | "
                             f"{'-' if goal is None else f'<= {goal:g}'} | {_f(rep.get('load_s'), 1)}"
                             f"{load_programs} | {_f(rep.get('compile_s'), 1)} ({comp.get('programs')}, "
                             f"{comp.get('cache_misses')}) | {prefetch} | {early} | "
                             f"{'-' if stored is None else stored} | {_f(rep.get('sampling_s'))} | "
                             f"{vae_wait} | {decode} | "
                             f"{_f(rep.get('before_main_s'))} | {_f(_after_report(r))} | {data.get('device')} |")
    return "\n".join(lines)


def _after_report(run: dict) -> float | None:
    """Seconds of a CLI run's wall time after its report was printed (the interpreter's exit, and the caller's
    wait for it): wall less the time before ``main`` and ``main``'s own; None for reports without both."""
    rep = run["report"]
    if rep.get("before_main_s") is None or rep.get("main_s") is None:
        return None
    return run["wall_s"] - rep["before_main_s"] - rep["main_s"]


def _comp(row: dict | None) -> float | None:
    return None if row is None else row["lower_s"] + row["compile_s"]


def _run(row: dict | None) -> float | None:
    return None if row is None else row.get("sample_s_median")


def scan_table(runs: list[tuple[str, dict]]) -> str:
    """Scanned vs unrolled rows side by side, with the run-time ratio (goal: within 2%)."""
    lines = ["| size | attention | layers | scan unroll | scanned: lower + compile s | unrolled: lower + compile s | "
             "scanned run s (median) | unrolled run s (median) | scanned / unrolled run | while loops (scanned / "
             "unrolled) | device |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for _, data in runs:
        by_key: dict[tuple, dict] = {}
        unrolled: dict[tuple, dict] = {}
        for row in data["rows"]:
            key = (row.get("attention", "1:7"), row["layers"])
            if row["scan_layers"]:
                by_key.setdefault(key, {})[row.get("scan_unroll", 1)] = row
            else:
                unrolled[key] = row
        for key in unrolled:
            by_key.setdefault(key, {})
        for (attention, layers), scanned in by_key.items():
            u = unrolled.get((attention, layers))
            for unroll, s in (sorted(scanned.items()) or [(None, None)]):
                ratio = (_run(s) / _run(u)) if _run(s) and _run(u) else None
                loops = f"{s['hlo_while_loops'] if s else '-'} / {u['hlo_while_loops'] if u else '-'}"
                lines.append(f"| {data.get('size')} | {attention} | {layers} | {unroll or '-'} | {_f(_comp(s), 1)} | "
                             f"{_f(_comp(u), 1)} | {_f(_run(s), 3)} | {_f(_run(u), 3)} | {_f(ratio, 3)} | {loops} | "
                             f"{data.get('device')} |")
    return "\n".join(lines)


def server_table(runs: list[tuple[str, dict]]) -> str:
    """``vdit sample --server`` commands sent to one ``vdit serve`` process (bench ``--cli-server``)."""
    lines = ["| size | run | wall s (the client process) | job s (in the server) | sampling s | VAE decode + mp4 s | "
             "compile s (programs) | latents equal the cold run's | server ready after s | device |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for _, data in runs:
        server = data["cli"].get("server")
        if not server:
            continue
        for i, r in enumerate(server.get("runs", [])):
            rep = r.get("report")
            if rep is None:
                lines.append(f"| {data.get('size')} | {i} | failed (exit {r.get('returncode')}) after "
                             f"{r['wall_s']:.1f} s | | | | | | {_f(server.get('ready_s'), 1)} | {data.get('device')} |")
                continue
            match = r.get("latents_match_cold", {}).get("equal")
            lines.append(f"| {data.get('size')} | {i} | {r['wall_s']:.2f} | {_f(rep['server'].get('job_s'))} | "
                         f"{_f(rep.get('sampling_s'))} | {_f(rep.get('decode_s'))} | "
                         f"{_f(rep.get('compile_s'), 1)} ({rep.get('compile', {}).get('programs')}) | "
                         f"{'-' if match is None else match} | {_f(server.get('ready_s'), 1)} | {data.get('device')} |")
    return "\n".join(lines)


def cli_first_step_s(run: dict) -> float | None:
    """Seconds from a ``vdit sample`` process's start to the end of its first sampling step, computed from its
    report: the time before ``main`` and ``main``'s own, less the sampling after the first step (``sampling_s`` less
    one median step) and the decode and write after it. None for reports without these fields."""
    rep = run.get("report") or {}
    need = ("before_main_s", "main_s", "sampling_s", "s_per_step_median", "decode_s", "write_s")
    if any(rep.get(k) is None for k in need):
        return None
    return (rep["before_main_s"] + rep["main_s"] - (rep["sampling_s"] - rep["s_per_step_median"])
            - rep["decode_s"] - rep["write_s"])


def _cli_cfg_runs(runs: list[tuple[str, dict]]):
    """(name, phase, run, data) of every ``vdit sample`` run with classifier-free guidance (a teacher's command)."""
    for _, data in runs:
        for name, runs_of in named_cli_runs(data["cli"]):
            for phase in ("cold", "warm"):
                r = runs_of.get(phase)
                if r and re.search(r"\bCFG \d", str((r.get("report") or {}).get("sampler", ""))):  # not "no CFG"
                    yield name, phase, r, data


def torch_table(runs: list[tuple[str, dict]], rows: list[dict], clis: list[tuple[str, dict]] = ()) -> str:
    """The release's time to its first step beside ours (teacher: one step of the sampler; computed): from the
    bench's child processes (``rows``) and from ``vdit sample`` runs with guidance (``clis``)."""
    lines = ["| implementation | size | run | imports s | weights s (random, not compared) | first step s | "
             "time to first step s (no weights) | later step s | device |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for _, data in runs:
        for i, r in enumerate(data["runs"]):
            later = sum(r["step_s"]) / len(r["step_s"]) if r["step_s"] else None
            lines.append(f"| PyTorch release ({data['attention_mode']}) | {data['size']} | {i} | {r['import_s']:.1f} | "
                         f"{r['init_s']:.1f} | {r['first_step_s']:.2f} | {r['time_to_first_step_s']:.1f} | "
                         f"{_f(later)} | {data['device']} |")
    for r in rows:
        if r["case"] != "teacher" or not r["steps"]:
            continue
        step = r["sample_s"] / r["steps"]
        first = r["import_s"] + r["sampler_lower_s"] + r["sampler_compile_s"] + step
        lines.append(f"| jax-vdit (computed: imports + sampler compile + 1 step) | {r['size']} | {r['phase']} | "
                     f"{r['import_s']:.1f} | {r['init_s']:.1f} | {step:.2f} | {first:.1f} | {step:.2f} | "
                     f"{r['device']} |")
    for name, phase, r, data in _cli_cfg_runs(list(clis)):
        first, rep = cli_first_step_s(r), r["report"]
        if first is None:
            continue
        imports = (rep.get("startup") or {}).get("imports_s")
        lines.append(f"| jax-vdit `vdit sample` {name} (computed: process start to the end of its first step, "
                     f"weights read from disk) | {data.get('size')} | {phase} | {_f(imports, 1)} | "
                     f"{_f(rep.get('load_s'), 1)} | {rep['s_per_step_median']:.2f} | {first:.1f} | "
                     f"{rep['s_per_step_median']:.2f} | {data.get('device')} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Stacked bars: where the seconds of each cold and warm run go."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['file'].removeprefix('first_video_')}\n{r['case']} {r['phase']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4.5))
    bottom = [0.0] * len(rows)
    for key in PHASES:
        vals = [r.get(key) or 0.0 for r in rows]
        ax.bar(labels, vals, bottom=bottom, label=key.removesuffix("_s").replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("seconds from process start")
    ax.set_title("Time to first video (random weights)")
    ax.legend(fontsize=7, ncol=2)
    plt.setp(ax.get_xticklabels(), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=ROOT / "experiments" / "results" / "first_video")
    p.add_argument("--rebuild-from-log", type=Path, default=None, help="write --dir/first_video_<LOG stem>.json from "
                   "the log of a stopped bench_first_video run (needs --device and --command), then summarise")
    p.add_argument("--device", default=None, help="with --rebuild-from-log: the device the run used")
    p.add_argument("--command", default=None, help="with --rebuild-from-log: the command the run was")
    args = p.parse_args(argv)
    if args.rebuild_from_log is not None:
        if not (args.device and args.command):
            p.error("--rebuild-from-log needs --device and --command")
        data = rebuild_from_log(args.rebuild_from_log, device=args.device, command=args.command)
        stem = args.rebuild_from_log.name.removesuffix(".gz").removesuffix(".log")
        name = stem if stem.startswith("first_video_") else f"first_video_{stem}"
        (args.dir / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    loaded = load(args.dir, "first_video_*.json")
    videos = [(stem, d) for stem, d in loaded if "cases" in d]
    clis = [(stem, d) for stem, d in loaded if "cli" in d]
    scans = load(args.dir, "compare_scan_*.json")
    torch_runs = load(args.dir, "torch_release_*.json")
    if not (videos or clis or scans or torch_runs):
        raise SystemExit(f"no first_video_*, compare_scan_* or torch_release_* results in {args.dir}")
    rows = [r for stem, data in videos for r in first_video_rows(stem, data)]
    parts = ["# Time to first video: summary", "",
             "Generated by `python -m experiments.summarize_first_video` from the JSON files here; random weights "
             "(release architecture) wherever the size is full or full93. Commands:", ""]
    parts += [f"    {data['command']}" for _, data in videos + clis + scans + torch_runs]
    if rows:
        parts += ["", "## Fresh process to mp4", "", first_video_table(rows)]
    if clis:
        parts += ["", "## The command: `vdit sample` of a student folder (wall time around the process)", "",
                  cli_table(clis)]
    if any(d["cli"].get("server") for _, d in clis):
        parts += ["", "## The same command sent to a `vdit serve` process (`vdit sample --server`)", "",
                  server_table(clis)]
    if scans:
        parts += ["", "## Scanned vs unrolled transformer (student sampler)", "", scan_table(scans)]
    if torch_runs:
        parts += ["", "## Time to the first step: the PyTorch release and ours", "", torch_table(torch_runs, rows, clis)]
    (args.dir / "first_video.md").write_text("\n".join(parts) + "\n")
    if rows:
        plot(rows, args.dir / "first_video.png")
    print("\n".join(parts))


if __name__ == "__main__":
    main()
