"""Benchmark: time to first video, from a fresh process to an mp4 on disk, with a cold and a warm compilation cache.

Cases (random weights, bf16 parameters and compute at full size):

* ``student``: the 4-step consistency student (edges 0, 250, 500, 750; no CFG) with the 1:7 tile mask on every
  layer, 29x720p (latents 4x8x90x160), decoded by the CausalVAE (release widths and tiling) to mp4;
* ``teacher``: the release sampler, Euler-ancestral 100 steps with CFG (batch 2), dense attention, same size.

Each case runs in two child processes sharing one fresh ``jax_compilation_cache_dir``: "cold" (empty cache) and
"warm" (the cache the cold run filled). A child reports, from its own start: imports, weight init, the sampler's
trace+lower and compile seconds (``sampling.compile_sampler``), sampling, the VAE decode (with its stage-compile
seconds from ``vae.compile_log``), the mp4 write, the total, and the persistent cache's hits and misses.

``--compare-scan`` instead compiles the student sampler in-process for several depths with the transformer's
blocks scanned (``AttentionConfig(scan_layers=True)``) and unrolled, and reports trace+lower and compile seconds
and the ``while`` loops in the compiled HLO (no persistent cache).

``--cli`` times the command a user types instead: it writes a random-weight student folder in the release format
(``config.json`` + bf16 safetensors, ``student.json`` with the 4 edges, ``mask_schedule.json`` with the case's mask
on every layer), a release-format VAE folder and a caption-embeddings file, then runs
``vdit sample STUDENT --vae VAE --embeddings E`` twice with one fresh ``--compile-cache``: cold, then warm. Each
wall time is measured around the process and includes reading the checkpoint (from the page cache: it was just
written), the CLI's zero-step warm-up, the 4 steps, the decode and the mp4.

``--size full93`` runs the student at 93x720p (latents 4x24x90x160) with the paper's 3:21 mask on every layer.
``--size tiny`` runs everything at a CPU-sized scale (the ``tiny`` preset with 8 latent frames, a narrow VAE) so
the script can be checked anywhere; its times say nothing about a GPU.

    python -m experiments.bench_first_video --size full --out experiments/results/first_video
    python -m experiments.bench_first_video --size tiny --compare-scan --out experiments/results/first_video
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # the child's clock starts before jax is imported

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gzip  # noqa: E402
import os  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

from experiments.child_env import child_env, parent_releases_gpu_memory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = ("student", "teacher")
# size -> (model preset, latent (C, T, H, W), text length, teacher steps)
SIZES = {
    "full": ("osp-v1.2-29x720p", (4, 8, 90, 160), 512, 100),
    "full93": ("osp-v1.2-93x720p", (4, 24, 90, 160), 512, 100),
    "tiny": ("tiny", (4, 8, 4, 4), 8, 4),
}
STUDENT_EDGES = (0, 250, 500, 750)
STUDENT_MASK = {"full": "1:7", "full93": "3:21", "tiny": "1:7"}  # the paper's masks at 29 and 93 frames


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ one child
def _setup(size: str, case: str, scan: bool = True, *, depth: int | None = None, attention: str | None = None,
           teacher_steps: int | None = None, scan_unroll: int = 1):
    """(model, sampler kwargs, text, mask) for a case; random weights. ``depth`` overrides the layer count,
    ``attention`` the case's attention ("1:7", "3:21", "dense", ...), ``teacher_steps`` the teacher's steps."""
    import jax
    import jax.numpy as jnp

    from jax_vdit import sampling
    from jax_vdit.config import get_preset
    from jax_vdit.model import random_model
    from jax_vdit.model.attention import attention_from_spec

    preset, latent_shape, text_len, default_steps = SIZES[size]
    dtype = "bfloat16" if size.startswith("full") else "float32"
    cfg = get_preset(preset, param_dtype=dtype, compute_dtype=dtype)
    if depth is not None:
        cfg = cfg.replace(num_layers=depth)
    model = random_model(cfg, seed=0)
    k1, k2 = jax.random.split(jax.random.key(1))
    text = jax.random.normal(k1, (1, text_len, cfg.caption_channels), cfg.compute_jnp_dtype)
    mask = (jnp.arange(text_len)[None] < max(1, text_len * 3 // 4)).astype(jnp.int32)
    if case == "student":
        spec = attention or STUDENT_MASK[size]
        kwargs = dict(plan=sampling.consistency(STUDENT_EDGES))
    elif case == "teacher":
        spec = attention or "dense"
        neg = jax.random.normal(k2, text.shape, text.dtype)
        kwargs = dict(plan=sampling.euler_ancestral(teacher_steps or default_steps), negative_text=neg,
                      negative_mask=mask, guidance_scale=7.5)
    else:
        raise ValueError(f"unknown case {case!r}; use one of {CASES}")
    if spec.startswith("mixed"):  # a searched-like schedule: the mask changes every layer
        import pallas_kernels

        frames = latent_shape[1]
        cycle = [pallas_kernels.TileMask.k_m(k, frames) for k in range(1, min(frames, 5))]
        attention_cfg = dataclasses.replace(attention_from_spec(None, cfg.num_layers, frames),
                                            masks=tuple(cycle[i % len(cycle)] for i in range(cfg.num_layers)),
                                            mixed_masks="switch" if spec == "mixed-switch" else "runs")
    else:
        attention_cfg = attention_from_spec(None if spec == "dense" else spec, cfg.num_layers, latent_shape[1])
    attention_cfg = dataclasses.replace(attention_cfg, scan_layers=scan, scan_unroll=scan_unroll)
    kwargs.update(latent_shape=latent_shape, attention=attention_cfg, latent_dtype=jnp.bfloat16)
    return model, kwargs, text, mask


def _vae(size: str):
    import jax.numpy as jnp

    from jax_vdit.vae import VAEConfig, random_vae

    if size.startswith("full"):
        return random_vae(VAEConfig(), seed=0, dtype=jnp.bfloat16)
    return random_vae(VAEConfig(hidden_size=32), seed=0, dtype=jnp.float32)


def child(size: str, case: str, cache_dir: str, video: str, vae_warmup: bool = True,
          teacher_steps: int | None = None, vae_tiles: str = "exact") -> dict:
    """One time-to-first-video run in this (fresh) process; returns its timings."""
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    events: list[str] = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    from jax_vdit import sampling
    from jax_vdit.vae import TilingConfig, compile_log, decode_latents_to_video, write_video

    from jax_vdit.vae.warmup import precompile_decode_in_background

    row: dict = {"import_s": time.perf_counter() - _T0}
    t = time.perf_counter()
    model, kwargs, text, mask = _setup(size, case, teacher_steps=teacher_steps)
    jax.block_until_ready(jax.tree.leaves(model))
    vae = _vae(size)
    jax.block_until_ready(jax.tree.leaves(vae))
    row["init_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # the VAE's stages compile in a background thread while the transformer compiles and samples
    tiling = TilingConfig.sample_script(uniform_tiles=vae_tiles == "uniform")
    warmup = (precompile_decode_in_background(vae, (1, *kwargs["latent_shape"]), tiling=tiling) if vae_warmup
              else None)
    sampler = sampling.compile_sampler(model, text, mask, **kwargs)
    row.update(sampler_lower_s=sampler.lower_s, sampler_compile_s=sampler.compile_s)
    t = time.perf_counter()
    latents = jax.block_until_ready(sampler(jax.random.key(0)))
    row["sample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if warmup is not None:
        report = warmup.result()
        row.update(vae_warmup_s=report.total_s, vae_warmup_wait_s=time.perf_counter() - t,
                   vae_warmup_workers=report.workers)
    t = time.perf_counter()
    frames = decode_latents_to_video(vae, latents, tiling=tiling)
    row["decode_s"] = time.perf_counter() - t
    row["vae_stage_compile_s"] = sum(e["seconds"] for e in compile_log())  # compiled or loaded from the store
    row["vae_stages_compiled"] = sum(not e.get("loaded") for e in compile_log())
    row["vae_stages_loaded"] = sum(bool(e.get("loaded")) for e in compile_log())
    t = time.perf_counter()
    path = write_video(frames[0], video, fps=24)
    row["write_s"] = time.perf_counter() - t
    row["total_s"] = time.perf_counter() - _T0
    row.update(video=str(path), frames=list(frames.shape), steps=int(kwargs["plan"].num_steps),
               vae_warmup=vae_warmup, vae_tiles=vae_tiles, cache_hits=events.count("/jax/compilation_cache/cache_hits"),
               cache_misses=events.count("/jax/compilation_cache/cache_misses"))
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def run_case(size: str, case: str, work: Path, *, vae_warmup: bool = True, teacher_steps: int | None = None,
             vae_tiles: str = "exact") -> dict:
    """The cold and the warm child of one case, sharing a fresh cache under ``work``."""
    tag = case_name(case, vae_warmup, vae_tiles)
    cache = work / f"xla-{tag}"
    cache.mkdir(parents=True, exist_ok=False)
    env = child_env()
    out = {}
    for phase in ("cold", "warm"):
        cmd = [sys.executable, "-m", "experiments.bench_first_video", "--child", case, "--size", size,
               "--cache", str(cache), "--video", str(work / f"{tag}_{phase}.mp4")]
        cmd += [] if vae_warmup else ["--vae-warmup", "off"]
        cmd += ["--vae-tiles", vae_tiles]
        cmd += [] if teacher_steps is None else ["--teacher-steps", str(teacher_steps)]
        log(f"{tag} {phase}: {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{tag} {phase} child failed:\n{proc.stderr[-6000:]}")
        out[phase] = json.loads(proc.stdout.strip().splitlines()[-1])
        log(f"{tag} {phase}: {out[phase]}")
    return out


# ---------------------------------------------------------------------------------------------- the CLI itself
def write_student_inputs(size: str, work: Path) -> tuple[Path, Path, Path]:
    """A random-weight student folder (release format, bf16 at full size), a VAE folder and an embeddings file
    (with a negative, so that a variant may sample it as a teacher with CFG)."""
    import jax
    import numpy as np
    from safetensors.numpy import save_file

    import pallas_kernels
    from jax_vdit.io.release import write_release_folder
    from jax_vdit.io.vae_weights import write_vae_folder
    from jax_vdit.student import MASK_SCHEDULE_FILE, write_student_info

    model, kwargs, text, mask = _setup(size, "student")
    dtype = "bfloat16" if size.startswith("full") else "float32"
    student = write_release_folder(model, work / "student", dtype=dtype)
    write_student_info(student, edges=STUDENT_EDGES, guidance_distilled=4.5, mask_schedule=True,
                       teacher="random weights (benchmark)")
    frames = kwargs["latent_shape"][1]
    pallas_kernels.MaskSchedule.uniform(pallas_kernels.TileMask.from_string(STUDENT_MASK[size], frames),
                                        model.cfg.num_layers).save(student / MASK_SCHEDULE_FILE)
    del model
    vae = write_vae_folder(_vae(size), work / "vae", dtype=dtype)
    embeddings = work / "embeddings.safetensors"
    text = np.asarray(jax.device_get(text), np.float32)  # a negative too: the teacher's CFG path (--cli variants)
    save_file({"text": text, "text_mask": np.asarray(mask, np.int32), "negative_text": -text,
               "negative_mask": np.asarray(mask, np.int32)}, str(embeddings))
    return student, vae, embeddings


def case_name(case: str, vae_warmup: bool, vae_tiles: str) -> str:
    """``student``, ``student-sequential-vae``, ``student-uniform-vae``, ...: the case and how its VAE ran."""
    return case + ("" if vae_warmup else "-sequential-vae") + ("" if vae_tiles == "exact" else f"-{vae_tiles}-vae")


def parse_cli_variant(text: str) -> tuple[str, list[str], dict[str, str]]:
    """``NAME=TOKENS``: a variant of the command, its extra arguments and environment (tokens ``KEY=VALUE`` with
    an upper-case KEY set the environment; the rest are arguments), e.g. ``after-load=--vae-warmup after-load``
    or ``switch=JAX_VDIT_SWITCH_INTERVAL=0.001``."""
    name, sep, tokens = text.partition("=")
    if not sep or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a CLI variant is NAME=ARGS (NAME of letters, digits, - and _), got {text!r}")
    args, env = [], {}
    for token in tokens.split():
        key, is_env, value = token.partition("=")
        if is_env and key.isupper() and not key.startswith("-"):
            env[key] = value
        else:
            args.append(token)
    return name, args, env


def run_command(cmd: list[str], cwd: Path, env: dict, timeout: float | None) -> dict:
    """Run ``cmd`` in a session of its own (its helper processes, e.g. the VAE's compile workers, with it): its
    return code (None when it ran past ``timeout`` seconds and was killed with its whole process group), stdout,
    the end of its stderr and the wall seconds. Past the timeout the group first gets SIGABRT, on which Python's
    fault handler (switched on here) writes every thread's stack to stderr: where the command was stuck."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=dict(env, PYTHONFAULTHANDLER="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGABRT)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the whole group has already ended
            pass
        stdout, stderr = proc.communicate()
        code = None
    return {"returncode": code, "stdout": stdout, "stderr_tail": stderr[-6000:],
            "wall_s": time.perf_counter() - t}


def run_cli(size: str, work: Path, vae_tiles: str = "exact", baseline_tree: Path | None = None,
            variants: list[str] = (), command_timeout: float | None = None,
            on_update: Callable[[dict], None] | None = None, server_runs: int = 0) -> dict:
    """``vdit sample`` of a random student, cold then warm (one fresh compile cache); wall seconds and reports.

    ``baseline_tree``: also run the command from that source tree (another commit's checkout), on the same inputs
    with its own fresh cache; its runs are under ``"baseline"``. ``variants`` (see :func:`parse_cli_variant`): this
    tree's command with other arguments or environment, each under its name with its own cache. All cold runs come
    first, in the order baseline, this tree, the variants, then the warm runs in the same order.
    ``command_timeout``: seconds one command may run; one that runs longer is killed (with its helper processes)
    and recorded as ``{"timed_out": true, "wall_s", "command", "stderr_tail"}``, one that fails as ``{"returncode",
    ...}``, and the other runs go on (a run whose cold command did not succeed has no warm run).
    ``on_update``: called with the results so far after every command (e.g. to write them, so that a bench stopped
    from outside keeps what it measured). ``server_runs``: then start ``vdit serve`` with this tree's command (on
    the cache its runs filled) and time that many ``vdit sample --server`` commands of the same job, under
    ``"server"`` (:func:`run_server`)."""
    t = time.perf_counter()
    student, vae, embeddings = write_student_inputs(size, work)
    out = {"write_inputs_s": round(time.perf_counter() - t, 1)}
    _, (_, t, h, w), _, _ = SIZES[size]
    video = ["--frames", str((t - 1) * 4 + 1), "--height", str(h * 8), "--width", str(w * 8)]
    variant_runs = [(name, ROOT, args, env) for name, args, env in map(parse_cli_variant, variants)]
    for name, _, args, env in variant_runs:
        out[name] = {"args": args, "env": env}
    runs = [("", ROOT, [], {}), *variant_runs]

    def sample_flags(cache: Path) -> list[str]:  # the command's flags but --out, the same for every run
        flags = [str(student), "--vae", str(vae), "--embeddings", str(embeddings), "--compile-cache", str(cache),
                 "--quiet", "--vae-tiles", vae_tiles, *video]
        return flags if size.startswith("full") else flags + ["--param-dtype", "float32", "--compute-dtype", "float32"]

    if baseline_tree:
        runs.insert(0, ("baseline", Path(baseline_tree).resolve(), [], {}))
        out["baseline"] = {"tree": str(runs[0][1])}
    for phase in ("cold", "warm"):
        for name, tree, extra_args, extra_env in runs:
            tag = f"{name} {phase}".strip()
            # the console entry `vdit` (console_main: its prompt exit), or main in a tree that has no console_main
            cmd = [sys.executable, "-c", "import sys, jax_vdit.cli as c; "
                   "sys.exit(getattr(c, 'console_main', c.main)(sys.argv[1:]))",
                   "sample", *sample_flags(work / f"xla-cli{'-' + name if name else ''}"),
                   "--out", str(work / f"cli_{tag.replace(' ', '_')}.safetensors"), *extra_args]
            shown = " ".join(f"{k}={v}" for k, v in extra_env.items()) + (" " if extra_env else "")
            shown += "vdit " + " ".join(cmd[3:])
            log(f"cli {tag}: {shown}")
            runs_of = out[name] if name else out
            if phase == "warm" and "report" not in runs_of.get("cold", {}):
                log(f"cli {tag}: skipped (its cold run did not succeed)")
                continue
            # run from the tree's root, the tree first on the path
            ran = run_command(cmd, tree, child_env(tree, **extra_env), command_timeout)
            wall = ran["wall_s"]
            entry = {"wall_s": round(wall, 2), "command": shown}
            if ran["returncode"] != 0:
                entry.update({"timed_out": True} if ran["returncode"] is None else {"returncode": ran["returncode"]},
                             stderr_tail=ran["stderr_tail"])
                log(f"cli {tag}: {'timed out' if ran['returncode'] is None else 'failed'} after {wall:.1f} s; "
                    f"stderr ends:\n{ran['stderr_tail'][-2000:]}")
            else:
                entry["report"] = report = json.loads(ran["stdout"].strip().splitlines()[-1])
                if phase == "warm":  # the same inputs and seed: a warm run must reproduce its cold run's latents
                    entry["latents_match_cold"] = compare_latents(
                        work / f"cli_{f'{name} cold'.strip().replace(' ', '_')}.safetensors",
                        work / f"cli_{tag.replace(' ', '_')}.safetensors")
                log(f"cli {tag}: {wall:.1f} s; {report}; {entry.get('latents_match_cold', '')}")
            runs_of[phase] = entry
            if on_update is not None:
                on_update(out)
    if server_runs and "report" in out.get("cold", {}):
        out["server"] = run_server(sample_flags(work / "xla-cli"), work, server_runs, command_timeout,
                                   cold_latents=work / "cli_cold.safetensors")
        if on_update is not None:
            on_update(out)
    return out


def run_server(flags: list[str], work: Path, runs: int, command_timeout: float | None,
               cold_latents: Path | None = None) -> dict:
    """``vdit serve FLAGS`` (its ready line's seconds after its start: the load and the warm-up job), then ``runs``
    ``vdit sample FLAGS --server`` commands, each timed around its process (a light client; the job runs in the
    server) with its report and whether its latents equal ``cold_latents``; the server stops after the last."""
    sock = work / "serve.sock"
    cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import main; sys.exit(main(sys.argv[1:]))", "serve",
           *flags, "--socket", str(sock), "--max-jobs", str(runs)]
    log(f"server: vdit {' '.join(cmd[3:])}")
    result: dict = {"command": "vdit " + " ".join(cmd[3:]), "runs": []}
    t = time.perf_counter()
    with open(work / "serve.log", "w") as server_log:
        server = subprocess.Popen(cmd, cwd=ROOT, env=child_env(ROOT), stdout=subprocess.PIPE, stderr=server_log,
                                  text=True, start_new_session=True)
        try:
            line = server.stdout.readline()
            if not line:
                result["error"] = "the server ended before it was ready: " + (work / "serve.log").read_text()[-2000:]
                log(f"server: {result['error']}")
                return result
            result["ready"] = json.loads(line)
            result["ready_s"] = round(time.perf_counter() - t, 2)
            log(f"server: ready after {result['ready_s']:.1f} s: {result['ready']}")
            for i in range(runs):
                latents = work / f"cli_server_{i}.safetensors"
                client = [sys.executable, "-c", "import sys, jax_vdit.cli as c; sys.exit(c.console_main(sys.argv[1:]))",
                          "sample", *flags, "--out", str(latents), "--server", str(sock)]
                ran = run_command(client, ROOT, child_env(ROOT), command_timeout)
                entry = {"wall_s": round(ran["wall_s"], 2)}
                if ran["returncode"] != 0:
                    entry.update(returncode=ran["returncode"], stderr_tail=ran["stderr_tail"])
                else:
                    entry["report"] = json.loads(ran["stdout"].strip().splitlines()[-1])
                    if cold_latents is not None and cold_latents.exists():
                        entry["latents_match_cold"] = compare_latents(cold_latents, latents)
                log(f"server run {i}: {entry['wall_s']:.1f} s; {entry.get('latents_match_cold', entry)}")
                result["runs"].append(entry)
            server.wait(timeout=60)
            result["returncode"] = server.returncode
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    return result


def cli_runs_not_done(cli: dict) -> list[str]:
    """The runs of a :func:`run_cli` result that timed out or failed, as "NAME PHASE" ("this" for this tree's)."""
    from experiments.summarize_first_video import named_cli_runs

    return [f"{name} {phase}" for name, runs in named_cli_runs(cli) for phase in ("cold", "warm")
            if isinstance(runs.get(phase), dict) and "report" not in runs[phase]]


def compare_latents(first: Path, second: Path) -> dict:
    """Whether two `vdit sample` latents files hold the same tensors: ``{"equal": bool, "max_abs_diff": float}``
    (bitwise equality of every tensor, and the largest difference in float32)."""
    import numpy as np
    from safetensors.numpy import load_file

    a, b = load_file(str(first)), load_file(str(second))
    if sorted(a) != sorted(b) or any(a[k].shape != b[k].shape for k in a):
        return {"equal": False, "max_abs_diff": float("inf"), "problem": "different tensors or shapes"}
    equal = all(np.array_equal(a[k], b[k]) for k in a)
    diff = max((float(np.max(np.abs(a[k].astype(np.float32) - b[k].astype(np.float32)))) for k in a if a[k].size),
               default=0.0)
    return {"equal": equal, "max_abs_diff": diff}


# ------------------------------------------------------------------------------------------- scan vs unrolled
def compare_scan(size: str, depths: list[int], specs: list[str], runs: int = 3, unrolls: tuple[int, ...] = (1,),
                 hlo_dir: Path | None = None, profile_dir: Path | None = None) -> list[dict]:
    """Compile the student sampler for each attention spec and depth, scanned (once per ``unrolls`` value, the
    layers per scan iteration) and unrolled (no persistent cache), then time ``runs`` runs of each executable
    (median). ``hlo_dir``: also write each compiled program's HLO text there (gzipped), to see where the scanned
    and unrolled programs differ. ``profile_dir``: after the timed runs, one more run under ``jax.profiler.trace``
    (a folder per program there) whose GPU kernel time by kind (:mod:`experiments.gpu_trace`) goes into the row as
    ``gpu_ms_by_kind`` (ms per sampler call), with ``gpu_kernels_by_kind`` (launches) and ``gpu_top_kernels`` (the
    25 longest kernels)."""
    import jax

    from jax_vdit import sampling

    jax.config.update("jax_compilation_cache_dir", None)
    rows = []
    for spec in specs:
        for depth in depths:
            variants = [(True, u) for u in unrolls] + ([] if spec == "mixed-switch" else [(False, 1)])
            for scan, unroll in variants:
                model, kwargs, text, mask = _setup(size, "student", scan=scan, depth=depth, attention=spec,
                                                   scan_unroll=unroll)
                sampler = sampling.compile_sampler(model, text, mask, **kwargs)
                times = []
                for r in range(runs + 1):  # the first run is not timed (allocations, autotuning caches)
                    t = time.perf_counter()
                    jax.block_until_ready(sampler(jax.random.key(r)))
                    times.append(time.perf_counter() - t)
                timed = sorted(times[1:])
                row = {"attention": spec, "layers": depth, "scan_layers": scan, "scan_unroll": unroll,
                       "lower_s": round(sampler.lower_s, 3),
                       "compile_s": round(sampler.compile_s, 3), "sample_s_median": round(timed[len(timed) // 2], 4),
                       "sample_s_runs": [round(x, 4) for x in times[1:]],
                       "hlo_while_loops": sampler.hlo_text().count(" while(")}
                program = f"{spec.replace(':', '-')}_l{depth}_{'scan' if scan else 'unrolled'}_u{unroll}"
                if hlo_dir is not None:
                    hlo_dir.mkdir(parents=True, exist_ok=True)
                    name = f"{program}.hlo.txt.gz"
                    with gzip.open(hlo_dir / name, "wt") as f:
                        f.write(sampler.hlo_text())
                    row["hlo_file"] = name
                if profile_dir is not None:
                    from experiments.gpu_trace import summarize

                    trace = profile_dir / program
                    with jax.profiler.trace(str(trace)):
                        jax.block_until_ready(sampler(jax.random.key(runs + 1)))
                    kinds = summarize(trace, steps=1, top=25)
                    row["gpu_ms_by_kind"] = {k: round(v["ms_per_step"], 3) for k, v in kinds["kinds"].items()}
                    row["gpu_kernels_by_kind"] = {k: int(v["kernels_per_step"]) for k, v in kinds["kinds"].items()}
                    row["gpu_ms"] = round(kinds["ms_per_step"], 3)
                    row["gpu_top_kernels"] = [{"kernel": t["kernel"], "kind": t["kind"],
                                               "ms": round(t["ms_per_step"], 3), "launches": int(t["per_step"])}
                                              for t in kinds["top"]]
                log(row)
                rows.append(row)
                del model, sampler
    return rows


# ------------------------------------------------------------------------------------------------------ main
def _meta(args) -> dict:
    import jax

    flags = os.environ.get("XLA_FLAGS")  # the children inherit it: part of what was measured
    prefix = f"XLA_FLAGS={flags} " if flags else ""
    return {"date": dt.date.today().isoformat(), "command": prefix + "python -m experiments.bench_first_video " +
            " ".join(sys.argv[1:]), "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
            "jax": jax.__version__, "python": platform.python_version(), "size": args.size, "xla_flags": flags}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="full")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated: student,teacher")
    p.add_argument("--vae-warmup", choices=("background", "off", "both"), default="background",
                   help="compile the VAE's stages in a background thread during sampling (background), only when the "
                        "decode reaches them (off), or run each case both ways (both)")
    p.add_argument("--teacher-steps", type=int, default=None, help="teacher steps (default: the size's, 100 at full)")
    p.add_argument("--compare-scan", action="store_true", help="scan vs unrolled sampler compile and run times instead")
    p.add_argument("--depths", default="4,8,16", help="layer counts for --compare-scan")
    p.add_argument("--attention", default="1:7", help="comma-separated attention specs for --compare-scan: dense, "
                   "k:m, mixed (k:m cycling over 1:m.. every layer, scanned in runs) or mixed-switch (the same "
                   "schedule in one scan with a switch over its masks)")
    p.add_argument("--hlo-dir", default=None, help="--compare-scan also writes each compiled program's HLO text "
                   "here (gzipped)")
    p.add_argument("--profile-dir", default=None, help="--compare-scan also profiles one more run of each program "
                   "here and records its GPU kernel time by kind")
    p.add_argument("--runs", type=int, default=3, help="timed runs per executable for --compare-scan")
    p.add_argument("--scan-unroll", default="1", help="comma-separated layers per scan iteration for the scanned "
                   "rows of --compare-scan (AttentionConfig.scan_unroll), e.g. 1,2")
    p.add_argument("--vae-tiles", default="uniform", help="comma-separated: exact (each tile shape its own VAE "
                   "programs), uniform (every tile zero-padded to the full tile: one set of programs)")
    p.add_argument("--cli", action="store_true", help="time `vdit sample` of a random student folder instead")
    p.add_argument("--baseline-tree", default=None, help="--cli also runs the command from this source tree (a "
                   "checkout of another commit) on the same inputs, alternating with this one")
    p.add_argument("--cli-variant", action="append", default=[], help="--cli also runs NAME=ARGS: this tree's "
                   "command with more arguments (KEY=VALUE tokens with an upper-case KEY set the environment), on "
                   "the same inputs with its own cache; repeat for several")
    p.add_argument("--cli-timeout", type=float, default=None, help="--cli: seconds one command may run; one that "
                   "runs longer is killed with its helper processes and recorded as timed out, and the others go on")
    p.add_argument("--cli-server", type=int, default=0, metavar="N", help="--cli: then start `vdit serve` with this "
                   "tree's command on its warm cache and time N `vdit sample --server` commands of the same job")
    p.add_argument("--out", default=None, help="write results JSON here (a folder)")
    p.add_argument("--tag", default=None, help="suffix of the results file name")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    p.add_argument("--video", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for variant in args.cli_variant:
        try:
            parse_cli_variant(variant)
        except ValueError as err:
            p.error(str(err))
    if args.child:
        print(json.dumps(child(args.size, args.child, args.cache, args.video, vae_warmup=args.vae_warmup != "off",
                               teacher_steps=args.teacher_steps, vae_tiles=args.vae_tiles)))
        return
    suffix = f"_{args.tag}" if args.tag else ""
    tiles = [v for v in args.vae_tiles.split(",") if v]
    if not tiles or any(v not in ("exact", "uniform") for v in tiles):
        p.error(f"--vae-tiles takes exact and/or uniform, not {args.vae_tiles!r}")
    if not args.compare_scan:  # children do the timed work: leave them the GPU's memory
        parent_releases_gpu_memory()
    not_done: list[str] = []
    if args.cli:
        name = f"first_video_cli_{args.size}{suffix}.json"

        def write_partial(cli: dict) -> None:  # what is measured so far, in case the bench is stopped from outside
            if args.out:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                (Path(args.out) / name).write_text(json.dumps({**_meta(args), "cli": cli, "partial": True},
                                                              indent=2) + "\n")

        with tempfile.TemporaryDirectory(prefix="first_video_cli_") as work:
            result = {**_meta(args), "cli": run_cli(args.size, Path(work), vae_tiles=tiles[0],
                                                    baseline_tree=args.baseline_tree, variants=args.cli_variant,
                                                    command_timeout=args.cli_timeout, on_update=write_partial,
                                                    server_runs=args.cli_server)}
        not_done = cli_runs_not_done(result["cli"])
    elif args.compare_scan:
        rows = compare_scan(args.size, [int(d) for d in args.depths.split(",")],
                            [a for a in args.attention.split(",") if a], runs=args.runs,
                            unrolls=tuple(int(u) for u in args.scan_unroll.split(",") if u),
                            hlo_dir=Path(args.hlo_dir) if args.hlo_dir else None,
                            profile_dir=Path(args.profile_dir) if args.profile_dir else None)
        result = {**_meta(args), "rows": rows}
        name = f"compare_scan_{args.size}{suffix}.json"
    else:
        cases = [c for c in args.cases.split(",") if c]
        modes = {"background": [True], "off": [False], "both": [True, False]}[args.vae_warmup]
        result = {**_meta(args), "cases": {}}
        with tempfile.TemporaryDirectory(prefix="first_video_") as work:
            for c in cases:
                for warm in modes:
                    for vae_tiles in tiles:
                        result["cases"][case_name(c, warm, vae_tiles)] = run_case(
                            args.size, c, Path(work), vae_warmup=warm, teacher_steps=args.teacher_steps,
                            vae_tiles=vae_tiles)
        name = f"first_video_{args.size}{suffix}.json"
    print(json.dumps(result, indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {out / name}")
    if not_done:
        raise SystemExit(f"these runs timed out or failed (see their stderr_tail): {', '.join(not_done)}")


if __name__ == "__main__":
    main()
