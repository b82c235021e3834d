"""``vdit sample``: videos (mp4 + JSON sidecar each) and latents from a checkpoint and prompts or embeddings.

A thin front end over :class:`jax_vdit.pipeline.OpenSoraPipeline`: every input is checked before any model is
loaded (sizes, steps, finite guidance, paths, finite embeddings, the mesh), then the pipeline loads, the sampler
compiles once (a zero-step run of the same program the timed run uses) and every video is sampled with its own
seed. The JSON report on stdout gives load, compile and sampling times separately.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

from jax_vdit.cli.compile_cache import add_compile_cache_arguments, setup_compile_cache
from jax_vdit.mp4_presets import DEFAULT_MP4_PRESET, MP4_PRESETS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every flag whose default is not None/False (those say it in their help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def read_prompts(args: argparse.Namespace) -> list[str] | None:
    """``--prompt`` values then the lines of ``--prompt-file`` (blank lines and lines starting with # skipped)."""
    prompts = list(args.prompt or [])
    if args.prompt_file:
        path = Path(args.prompt_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--prompt-file not found: {path}")
        lines = [line.strip() for line in path.read_text().splitlines()]
        from_file = [line for line in lines if line and not line.startswith("#")]
        if not from_file:
            raise ValueError(f"--prompt-file {path} holds no prompts (one per line)")
        prompts += from_file
    return prompts or None


def has_texts(args: argparse.Namespace) -> bool:
    """Whether the command names prompts (``--prompt``, ``--prompt-file``) or ``--embeddings``."""
    return bool(args.prompt or args.prompt_file or args.embeddings)


def check_values(args: argparse.Namespace) -> None:
    """The job's numbers: sizes, guidance, counts, seed, edges."""
    from jax_vdit.config import VideoSize
    from jax_vdit.pipeline import SEED_LIMIT

    VideoSize(args.frames or 1, args.height or 16, args.width or 16)  # the values given; the rest from the model
    if args.guidance is not None and not math.isfinite(args.guidance):
        raise ValueError(f"--guidance must be a finite number, got {args.guidance}")
    for flag, value in (("--steps", args.steps), ("--num-videos-per-prompt", args.num_videos_per_prompt),
                        ("--fps", args.fps), ("--sp-size", args.sp_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.seed < SEED_LIMIT:
        raise ValueError(f"--seed must be in [0, 2**32), got {args.seed}")
    if args.edges is not None:
        try:
            [int(e) for e in args.edges.split(",")]
        except ValueError as err:
            raise ValueError(f"--edges must be comma-separated integers, got {args.edges!r}") from err


def check_model_inputs(args: argparse.Namespace) -> None:
    """What the model's load needs: the checkpoint, the VAE and text encoder named, the devices' flags."""
    from jax_vdit.io.hub import looks_like_repo_id

    if not Path(args.checkpoint).expanduser().exists() and not looks_like_repo_id(args.checkpoint):
        raise FileNotFoundError(f"no checkpoint at {args.checkpoint} (a local folder, or a Hugging Face repo id "
                                "such as LanguageBind/Open-Sora-Plan-v1.2.0)")
    if args.vae and not Path(args.vae).expanduser().exists():
        raise FileNotFoundError(f"--vae not found: {args.vae} (the release's vae/ folder: config.json + weights)")
    encoder = args.text_encoder
    if encoder not in ("auto", "none", "toy") and not Path(encoder).expanduser().is_dir() \
            and not looks_like_repo_id(encoder):
        raise FileNotFoundError(f"--text-encoder not found: {encoder} (a local google/mt5-xxl folder, a repo id, "
                                "'toy', 'auto' or 'none')")
    if args.sp_size and args.mesh:
        raise ValueError("give --sp-size or --mesh, not both")


def check_inputs(args: argparse.Namespace) -> tuple[list[str] | None, object | None]:
    """Everything that can be checked without loading a model; returns (prompts, embeddings or None)."""
    import numpy as np

    from jax_vdit.pipeline import TextEmbeddings

    check_values(args)
    check_model_inputs(args)
    attention = args.attention
    if attention and (attention.endswith(".json") or os.sep in attention) and not Path(attention).is_file():
        raise FileNotFoundError(f"--attention mask schedule not found: {attention}")
    prompts = read_prompts(args)
    if prompts is not None and args.embeddings:
        raise ValueError("give prompts (--prompt/--prompt-file) or --embeddings, not both")
    if prompts is None and not args.embeddings:
        raise ValueError("give --prompt/--prompt-file (with a text encoder: --text-encoder) or --embeddings")
    embeds = None
    if args.embeddings:
        embeds = TextEmbeddings.from_any(args.embeddings)  # reads the file: a missing one is named
        for name in ("text", "negative_text"):  # finite before any model work (the channels are checked later)
            value = getattr(embeds, name)
            if value is not None and not np.isfinite(value).all():
                raise ValueError(f"--embeddings {args.embeddings}: {name} holds NaN or infinite values")
    return prompts, embeds


def make_cli_mesh(args: argparse.Namespace):
    """``--sp-size N``: tokens over N devices; ``--mesh DxS``: D-way data (the CFG pair) x S-way sequence."""
    if not args.sp_size and not args.mesh:
        return None
    import jax

    from jax_vdit.parallel import make_mesh

    if args.sp_size:
        data, seq = 1, args.sp_size
    else:
        try:
            data, seq = (int(v) for v in args.mesh.lower().split("x"))
        except ValueError as err:
            raise ValueError(f"--mesh must be DATAxSEQ (e.g. 2x4), got {args.mesh!r}") from err
    available = len(jax.devices())
    if data * seq > available:
        raise ValueError(f"a {data}x{seq} mesh needs {data * seq} devices; {available} visible "
                         f"({jax.default_backend()})")
    return make_mesh(seq=seq, data=data)


SWITCH_INTERVAL_ENV = "JAX_VDIT_SWITCH_INTERVAL"


def set_switch_interval() -> float | None:
    """``$JAX_VDIT_SWITCH_INTERVAL`` seconds as Python's thread switch interval (``sys.setswitchinterval``; Python's
    default is 0.005): a shorter one lets the thread that loads the transformer (file reads and device copies that
    release Python's lock) take the lock back sooner from the VAE's background planning and tracing. Returns the
    value set, or None when the variable is unset."""
    value = os.environ.get(SWITCH_INTERVAL_ENV)
    if not value:
        return None
    try:
        interval = float(value)
    except ValueError as err:
        raise ValueError(f"${SWITCH_INTERVAL_ENV} must be a number of seconds, got {value!r}") from err
    if not 0 < interval <= 1:
        raise ValueError(f"${SWITCH_INTERVAL_ENV} must be in (0, 1] seconds, got {value!r}")
    sys.setswitchinterval(interval)
    return interval


def resolve_vae_compile_processes(value: str) -> int:
    """``--vae-compile-processes``: a count >= 0, or "auto": on a GPU host 3 with at least 8 CPU cores, 2 with 4-7
    (each process compiles on its own core), else 0 (a thread of this process)."""
    if value != "auto":
        try:
            count = int(value)
        except ValueError as err:
            raise ValueError(f"--vae-compile-processes must be a count or 'auto', got {value!r}") from err
        if count < 0:
            raise ValueError(f"--vae-compile-processes must be >= 0, got {count}")
        return count
    import jax

    from jax_vdit.vae.compile_worker import processes_for_cores

    return processes_for_cores(os.cpu_count() or 1) if jax.default_backend() == "gpu" else 0


def resolve_sampler_compile(value: str, *, embeddings: bool, one_device: bool) -> str:
    """``--sampler-compile``: "auto" is "early" where the sampler can compile while the weights load (precomputed
    ``--embeddings`` give the text's shapes; one device), else "after-load". On a device mesh it is always
    "after-load" (the early compile is single-device)."""
    if not one_device:
        return "after-load"
    if value != "auto":
        return value
    return "early" if embeddings else "after-load"


VAE_COMPILE_BEFORE_JAX_ENV = "JAX_VDIT_VAE_COMPILE_BEFORE_JAX"  # "0": the pipeline starts them, after JAX's start


def start_vae_compile_before_jax(args: argparse.Namespace):
    """The VAE's compile processes for this command's decode, started before JAX is imported
    (:func:`jax_vdit.vae.early_compile.start_before_jax`), or None where they do not apply (latents only, the
    VAE's warm-up not early, no compile cache, the decode already stored, no GPU, ...) or
    ``$JAX_VDIT_VAE_COMPILE_BEFORE_JAX=0``."""
    if args.latents_only or args.vae_warmup != "early" or getattr(args, "no_compile_cache", False) or \
            os.environ.get(VAE_COMPILE_BEFORE_JAX_ENV, "1") == "0":
        return None
    from jax_vdit.vae.early_compile import start_before_jax

    return start_before_jax(checkpoint=args.checkpoint, variant=args.variant or None, vae=args.vae,
                            frames=args.frames, height=args.height, width=args.width,
                            compute_dtype=args.compute_dtype, tiles=args.vae_tiles, cache=args.compile_cache,
                            processes=args.vae_compile_processes)


def _cmd_sample(args: argparse.Namespace) -> int:
    if args.server:
        from jax_vdit.cli.serve_client import run_on_server

        return run_on_server(args)
    with start_up(args) as (xla_flags_added, client_env_added, early_vae):
        return _sample(args, xla_flags_added, client_env_added, early_vae)


@contextlib.contextmanager
def start_up(args: argparse.Namespace):
    """The command's work before JAX is imported (``vdit sample`` and ``vdit serve``): XLA's GPU flags and client
    settings (before anything starts JAX's backends, which read them once, and before the VAE's compile processes,
    which inherit them: they are part of the compiled stages' keys), the VAE's compile processes, the weights'
    prefetch. Yields ``(xla_flags_added, client_env_added, early_vae)``; an error inside stops the VAE's processes
    (stopped already, or handed to the pipeline, which then finished or stopped them), and leaving drops what the
    prefetch read and no loader took."""
    from jax_vdit.cli.startup import start_weight_prefetch
    from jax_vdit.io import prefetch
    from jax_vdit.xla_defaults import add_gpu_client_defaults, add_gpu_compile_flags

    xla_flags_added = [] if args.triton_gemm else add_gpu_compile_flags()
    client_env_added = add_gpu_client_defaults()  # no 75% reservation of the card's memory at the start
    early_vae = start_vae_compile_before_jax(args)  # about 2 s before JAX would be imported and started
    try:
        start_weight_prefetch(args)  # the weights' reads overlap JAX's import and start
        yield xla_flags_added, client_env_added, early_vae
    except BaseException:
        if early_vae is not None:
            early_vae.stop()
        raise
    finally:
        prefetch.stop_all()


def _sample(args: argparse.Namespace, xla_flags_added: list[str], client_env_added: dict[str, str],
            early_vae) -> int:
    loaded = load_for_sampling(args, xla_flags_added, client_env_added, early_vae)
    report = run_job(loaded, args, loaded.prompts, loaded.embeds)
    return _finish(report, args, compile_only=args.compile_only)


@dataclasses.dataclass
class Loaded:
    """What :func:`load_for_sampling` built, for one job (``vdit sample``) or many (``vdit serve``).

    ``report``: the load's part of the JSON report (startup, load seconds by part, the start-up settings), the same
    for every job; ``prompts`` / ``embeds``: the texts of the command that loaded it (None when it named none)."""

    pipe: object
    mesh: object
    report: dict
    sampler_compile: str
    prompts: list[str] | None
    embeds: object | None


def job_arguments(args: argparse.Namespace, prompts, embeds) -> dict:
    """The keyword arguments of :meth:`OpenSoraPipeline.prepare` for this command's job."""
    import jax.numpy as jnp

    edges = None if args.edges is None else [int(e) for e in args.edges.split(",")]
    return dict(prompt=prompts, negative_prompt=args.negative_prompt, prompt_embeds=embeds,
                num_frames=args.frames, height=args.height, width=args.width, num_inference_steps=args.steps,
                guidance_scale=args.guidance, sampler=args.sampler, edges=edges, seed=args.seed,
                num_videos_per_prompt=args.num_videos_per_prompt, attention=args.attention,
                latent_dtype=jnp.float32 if args.fp32_latents else jnp.bfloat16, force=args.force)


def load_for_sampling(args: argparse.Namespace, xla_flags_added: list[str], client_env_added: dict[str, str],
                      early_vae, *, texts_required: bool = True) -> Loaded:
    """Import JAX, check the inputs, load the pipeline (its start-up work beside the load). With
    ``texts_required`` False (``vdit serve``) a command without prompts or embeddings loads the model alone."""
    from jax_vdit.cli.startup import import_jax_and_start_backend, place_prefetched_weights, prefetch_to_device_wanted

    t0 = time.perf_counter()
    # the prefetched weights go to the device in a warm command only (cold: the VAE's processes were started)
    to_device = prefetch_to_device_wanted(cold=early_vae is not None)
    startup, backend = import_jax_and_start_backend(to_device)
    if texts_required or has_texts(args):
        prompts, embeds = check_inputs(args)  # no model work before this passes (imports the pipeline's modules)
    else:
        check_values(args)
        check_model_inputs(args)
        prompts, embeds = None, None
    switch_interval = set_switch_interval()
    mesh = make_cli_mesh(args)
    cache = setup_compile_cache(args)
    vae_compile_processes = resolve_vae_compile_processes(args.vae_compile_processes)
    sampler_compile = resolve_sampler_compile(args.sampler_compile, embeddings=embeds is not None,
                                              one_device=mesh is None)

    import jax

    from jax_vdit.compile_meter import CompileMeter
    from jax_vdit.io import prefetch

    from jax_vdit.pipeline import OpenSoraPipeline

    startup["imports_s"] = round(time.perf_counter() - t0, 3)  # with the input checks
    if backend is not None:  # the backend's start beside the imports: its seconds, and what was left to wait for
        waited = time.perf_counter()
        startup["backend_s"] = backend.result()
        startup["backend_wait_s"] = round(time.perf_counter() - waited, 3)
    elif to_device:  # the backend starts here (its first use), then the prefetched weights go to the device
        place_prefetched_weights(jax)
    # with --embeddings no text is encoded: "auto" then loads no text encoder (no search of the Hub's cache)
    text_encoder = None if args.text_encoder == "none" or (embeds is not None and args.text_encoder == "auto") \
        else args.text_encoder
    job_args = None if prompts is None and embeds is None else job_arguments(args, prompts, embeds)
    startup["before_load_s"] = round(time.perf_counter() - t0, 3)  # from the start of _sample to the load
    t0 = time.perf_counter()
    load_meter = CompileMeter()  # this thread: the programs that place and lay out the weights, not the VAE's
    with load_meter:
        pipe = OpenSoraPipeline.from_pretrained(
            args.checkpoint, args.variant or None, config=args.config,
            vae=None if args.latents_only else (args.vae or "auto"),
            text_encoder=text_encoder,
            param_dtype=args.param_dtype, compute_dtype=args.compute_dtype, tile_backend=args.tile_backend,
            mixed_masks=args.mixed_masks, vae_tiles=args.vae_tiles, layer_loop=args.layer_loop,
            vae_parts="decoder",  # text-to-video only decodes: the encoder's weights are neither read nor placed
            # the VAE's stages start compiling as soon as the VAE is loaded (early), or after the transformer loads
            decode_size=None if args.latents_only or args.vae_warmup != "early" else
            (args.frames, args.height, args.width),
            # --sampler-compile early: the sampler compiles from the model's shapes while the weights load
            early_job=job_args if sampler_compile == "early" else None,
            vae_compile_processes=vae_compile_processes, vae_compile_started=early_vae,
            revision=args.revision, local_files_only=True if args.offline else None)
    load_s = time.perf_counter() - t0
    weights_prefetch = prefetch.stop_all()  # a prefetch the load did not claim frees its memory now
    report = {"startup": startup,  # the imports and JAX's backend before the load, seconds
              "load_s": round(load_s, 2), "load": pipe.load_seconds, "load_cpu": pipe.load_cpu_seconds,
              "load_parts": pipe.load_parts,
              # the transformer's weights read from the command's start, before JAX (None: no prefetch ran)
              "weights_prefetch": weights_prefetch[0] if len(weights_prefetch) == 1 else (weights_prefetch or None),
              "load_compile": load_meter.report(), "compile_cache": cache, "layer_loop": pipe.layer_loop,
              "vae_warmup": None if pipe.vae is None else args.vae_warmup, "switch_interval": switch_interval,
              "xla_flags_added": xla_flags_added, "client_env_added": client_env_added,
              "vae_compile_processes": vae_compile_processes,
              # the VAE's compile processes started before JAX: seconds after the process started, whether they
              # compiled this decode (else the pipeline stopped them), where the time before the start went, and
              # whether JAX was imported by then after all; None: none were (the pipeline started any)
              "vae_compile_before_jax": None if early_vae is None else
              {"started_s": early_vae.started_s, "used": pipe.vae_compile_started_used, "parts": early_vae.parts,
               "jax_imported": early_vae.jax_imported}}
    return Loaded(pipe=pipe, mesh=mesh, report=report, sampler_compile=sampler_compile, prompts=prompts,
                  embeds=embeds)


def run_job(loaded: Loaded, args: argparse.Namespace, prompts, embeds,
            on_step: Callable[[int, int], None] | None = None) -> dict:
    """One job on the loaded pipeline: prepare, warm up (compile or read the sampler once; a zero-step run of the
    program the timed run uses), sample, write the latents and sidecar, decode and write the mp4s. With
    ``args.compile_only`` it stops after compiling. Returns the JSON report (the load's fields, then the job's).
    ``on_step(done, total)``: called after every sampling step (``vdit serve`` forwards it to its client)."""
    import jax
    from safetensors.numpy import save_file

    from jax_vdit import sampling
    from jax_vdit.compile_meter import CompileMeter
    from jax_vdit.pipeline import write_sidecar
    from jax_vdit.sampling import StepTimer

    pipe, mesh = loaded.pipe, loaded.mesh
    job = pipe.prepare(**job_arguments(args, prompts, embeds))
    source = "student.json" if pipe.student is not None else "checkpoint defaults"
    print(f"vdit sample: {job.describe()} ({source}; seeds {job.videos[0].seed}..{job.videos[-1].seed})",
          file=sys.stderr)

    # the VAE's stages compile in a background thread (started when the VAE loaded, or now: --vae-warmup) while
    # the transformer loads, compiles and samples
    vae_warmup = None if args.vae_warmup == "off" else pipe.warm_up_decoder(job)  # None without a VAE
    # compile: a zero-step run of the very program the timed run uses (same progress setting, same shapes)
    t0, cpu0 = time.perf_counter(), time.thread_time()
    with CompileMeter() as warmup_compile:  # JAX's own compile-duration events, this thread only
        pipe.warm_up(job, mesh=mesh, progress=True)
    warmup_s = time.perf_counter() - t0
    warmup_cpu_s = time.thread_time() - cpu0  # below warmup_s: waits (the compiler's threads, the device, the lock)
    report = dict(loaded.report)
    report.update({
        "compile_s": round(warmup_compile.compile_s, 2),
        "compile": warmup_compile.report(),
        "sampler_from_store": sampling.samplers_loaded_from_store() > 0,  # not traced, lowered or compiled
        # compiled (or read from the store) in a background thread while the weights loaded: its seconds,
        # compile report, warm-up's wait for it, any error (then the warm-up compiled it); None: not tried
        "sampler_early": pipe.early_sampler, "sampler_compile": loaded.sampler_compile,
        "warmup_s": round(warmup_s, 2), "warmup_cpu_s": round(warmup_cpu_s, 2),
        "sampler": job.settings.describe(), "attention": job.attention_spec})
    if args.compile_only:  # every program of this command is compiled (and cached, stored): no sampling
        if pipe.vae is not None:
            report["vae_tiles"] = pipe.vae_tiles
            # the decode's stages too, even where --vae-warmup off would compile them as the decode reaches them
            _add_vae_warmup(report, vae_warmup or pipe.warm_up_decoder(job), pipe)
        return report
    total = job.plan.num_steps * len(job.videos)
    timer = StepTimer(total, disable=args.quiet or on_step is not None)

    def progress(step) -> None:
        timer(step)
        if on_step is not None:
            on_step(len(timer.times), total)

    t0 = time.perf_counter()
    with CompileMeter() as run_compile:
        latents = pipe.run(job, mesh=mesh, progress=progress)
        jax.effects_barrier()
    sample_s = time.perf_counter() - t0
    timer.close()
    steps = timer.times[1:] or timer.times
    step_median = sorted(steps)[len(steps) // 2] if steps else 0.0

    out = Path(args.out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    records = pipe.records(job, fps=None if pipe.vae is None else args.fps)
    latents_file = out if out.suffix == ".safetensors" else out.with_suffix(".safetensors")
    save_file({"latents": latents}, str(latents_file))
    write_sidecar(latents_file, {"videos": records, "command": ["vdit", "sample", *getattr(args, "argv", [])]})
    report.update({"run_compile": run_compile.report(), "sampling_s": round(sample_s, 2),
                   "s_per_step_median": round(step_median, 4), "videos": len(job.videos),
                   "latent_shape": list(latents.shape), "out": str(latents_file)})
    if pipe.vae is not None:
        t0 = time.perf_counter()
        report["vae_tiles"] = pipe.vae_tiles
        report["vae_has_encoder"] = pipe.vae.has_encoder  # False: loaded for decoding only
        _add_vae_warmup(report, vae_warmup, pipe)
        # each video's first time chunks are encoded while the device decodes its later ones
        written = pipe.decode_and_write(latents, records, out, fps=args.fps, mp4_preset=args.mp4_preset)
        report["mp4_preset"] = args.mp4_preset
        report["vae_decode_s"] = round(written.decoded_s, 2)  # until the last frames reached the host
        report["write_s"] = round(written.total_s - written.decoded_s, 2)  # the encoding left then, sidecars
        report["decode_s"] = round(time.perf_counter() - t0, 2)  # the wait for the VAE's stages, both above
        report["videos_written"] = [str(p) for p in written.paths]
    return report


def _add_vae_warmup(report: dict, vae_warmup, pipe) -> None:
    """Wait for the VAE's background warm-up (if one runs) and add what it did to ``report``."""
    if vae_warmup is None:
        return
    t0 = time.perf_counter()
    warm = vae_warmup.result()
    report["vae_stages"] = warm.stages
    report["vae_stages_loaded"] = warm.loaded  # from the executable store, not compiled
    report["vae_planned"] = warm.planned  # False: a recorded plan, no tracing of the decode
    report["vae_compile_s"] = warm.total_s  # background, overlapping the transformer's work
    report["vae_compile_wait_s"] = round(time.perf_counter() - t0, 2)
    report["vae_compile_workers"] = pipe.vae_compile_workers  # None: compiled in a thread of this process


def complete_report(report: dict, compile_only: bool = False) -> dict:
    """``report`` with ``compile_only`` and the executable store's problems (files ignored or not written, and
    why) added."""
    from jax_vdit import executable_store

    report["compile_only"] = compile_only
    report["executable_store_problems"] = executable_store.problems()
    return report


def _finish(report: dict, args: argparse.Namespace, compile_only: bool = False) -> int:
    """Print the command's JSON report (last line of stdout) with the store's problems and the process's times."""
    from jax_vdit.process_clock import command_times

    report = complete_report(report, compile_only)
    report.update(command_times(args))
    print(json.dumps(report))
    return 0


def register(sub) -> None:
    s = sub.add_parser(
        "sample", formatter_class=HelpFormatter, help="generate videos / latents from prompts or embeddings",
        description="Sample videos from an Open-Sora-Plan v1.2 checkpoint (release folder or repo id, orbax "
                    "checkpoint, or a distilled student folder). Writes the latents (--out), one mp4 per video "
                    "when a VAE is found, and a JSON sidecar (<file>.json) beside each output.")
    add_sample_arguments(s)
    s.set_defaults(func=_cmd_sample)


def add_sample_arguments(s: argparse.ArgumentParser, serving: bool = False) -> None:
    """``vdit sample``'s flags on ``s``; ``vdit serve`` (``serving``) takes the same ones but ``--server``."""
    g = s.add_argument_group("model")
    g.add_argument("checkpoint", help="local folder (release layout with 29x720p/ ... and vae/, one transformer "
                   "folder, our orbax checkpoint, or a student folder with student.json), a Hugging Face cache "
                   "folder, or a repo id such as LanguageBind/Open-Sora-Plan-v1.2.0")
    g.add_argument("--variant", default="29x720p", help="transformer subfolder of a release-layout folder or repo "
                   "(29x480p, 29x720p, 93x480p, 93x720p); unused when the folder holds the transformer itself")
    g.add_argument("--config", default=None, help="preset name for a weights folder without config.json "
                   "(default: the folder's config.json)")
    g.add_argument("--vae", default=None, help="CausalVAE folder (default: the vae/ folder beside the transformer, "
                   "if any; without a VAE only latents are written)")
    g.add_argument("--latents-only", action="store_true", help="do not load or run the VAE; write latents only")
    g.add_argument("--compile-only", action="store_true",
                   help="load and compile everything this command needs (the weights' layout, the sampler, the VAE's "
                        "decode stages) into the compile cache and executable store, then stop: no sampling, no "
                        "files written; a later command with the same shapes and settings starts warm (e.g. run "
                        "it when deploying, with --compile-cache next to the checkpoint)")
    g.add_argument("--text-encoder", default="auto", help="local google/mt5-xxl folder or repo id, 'toy' (toy-world "
                   "models), 'none', or 'auto': a text_encoder/ folder, the toy stand-in for toy models, or "
                   "google/mt5-xxl if already in the local Hugging Face cache (none with --embeddings)")
    g.add_argument("--revision", default=None, help="Hub revision of a repo id (default: main)")
    g.add_argument("--offline", action="store_true", help="never download: read repo ids from the local Hugging "
                   "Face cache only (as HF_HUB_OFFLINE=1)")
    g.add_argument("--param-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                   help="storage dtype of the transformer weights")
    g.add_argument("--compute-dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
                   help="activation / matmul dtype (the VAE runs in bf16 when this is bfloat16, else fp32)")

    g = s.add_argument_group("text")
    g.add_argument("--prompt", action="append", help="text prompt (repeat for several)")
    g.add_argument("--prompt-file", default=None, help="text file with one prompt per line (# comments and blank "
                   "lines skipped), after any --prompt")
    g.add_argument("--negative-prompt", default=None, help="negative prompt for CFG (default: the release's "
                   "negative prompt with an mT5 encoder, '' with the toy stand-in)")
    g.add_argument("--embeddings", default=None, help="precomputed text embeddings (.safetensors with text, "
                   "text_mask and optionally negative_text, negative_mask) instead of prompts")

    g = s.add_argument_group("sampling (defaults: the checkpoint's; for a student, its student.json)")
    g.add_argument("--frames", type=int, default=None, help="pixel frames, 4k+1 (default: the checkpoint's "
                   "sample size, e.g. 29 for 29x720p)")
    g.add_argument("--height", type=int, default=None, help="pixel height, a multiple of 16 (default: the "
                   "checkpoint's, e.g. 720)")
    g.add_argument("--width", type=int, default=None, help="pixel width, a multiple of 16 (default: the "
                   "checkpoint's, e.g. 1280)")
    g.add_argument("--sampler", default=None, choices=["euler_ancestral", "ddim", "consistency"],
                   help="default: euler_ancestral (release), consistency for a student")
    g.add_argument("--steps", type=int, default=None, help="sampling steps (default: 100; a student's own count)")
    g.add_argument("--edges", default=None, help="consistency sampler segment edges, comma-separated, e.g. "
                   "0,250,500,750 (default: uniform for --steps; a student's own edges)")
    g.add_argument("--guidance", type=float, default=None, help="CFG scale; 1 disables CFG (default: 7.5; none "
                   "for a distilled student). Without negative embeddings the default negative prompt is encoded")
    g.add_argument("--seed", type=int, default=0, help="seed of the first video; video k uses seed + k, whatever "
                   "the batch")
    g.add_argument("--num-videos-per-prompt", type=int, default=1, help="videos per prompt (consecutive seeds)")
    g.add_argument("--attention", default=None, help="dense | full (dense through the tile kernel) | k:m (e.g. "
                   "1:7) on every layer | a mask schedule JSON (default: dense; a sparse student's schedule)")
    g.add_argument("--tile-backend", default="auto", help="tile attention backend (auto, mosaic_gpu, triton, tpu, "
                   "gather, cpu, reference)")
    g.add_argument("--mixed-masks", choices=("runs", "switch"), default="runs",
                   help="a mask schedule that changes from layer to layer: scan runs of equal masks (runs), or all "
                        "layers in one scan with a switch over the masks (switch: compiles one block per distinct "
                        "mask)")
    g.add_argument("--layer-loop", choices=("scan", "unrolled"), default="scan",
                   help="the transformer's blocks in one scanned loop (scan: compiles in seconds) or each compiled "
                        "on its own (unrolled: 30-70 s more to compile at full size, 0.6-1.2%% faster per step "
                        "on an H100; for many videos of one shape)")
    g.add_argument("--vae-tiles", choices=("exact", "uniform"), default="uniform",
                   help="decode the release's VAE tiles every one zero-padded to the full tile size (uniform, the "
                        "default: one set of VAE programs for all tile shapes, 10 instead of 40 at 29x720p; 16 s "
                        "instead of 63 s of cold compiling on an H100; the same pixels up to float rounding; the "
                        "edge tiles cost full-tile compute), or each at its own shape (exact)")
    g.add_argument("--sampler-compile", choices=("auto", "early", "after-load"), default="auto",
                   help="when the sampler compiles (or loads from the executable store): in a background thread "
                        "from the model's shapes while the weights load (early; needs --embeddings and one device), "
                        "or in the warm-up after the load (after-load); auto (the default): early where it can "
                        "(on an H100 at 29x720p, one run each: warm 11.2 s against 12.3 s, cold 23.6 against "
                        "23.9 s, 22.1 s with three VAE compile processes)")
    g.add_argument("--vae-warmup", choices=("early", "after-load", "off"), default="early",
                   help="when the VAE's decode stages start compiling (or loading from the executable store) in a "
                        "background thread: as soon as the VAE is loaded (early, beside the transformer's load), "
                        "once the transformer is loaded (after-load: beside its compile and sampling only), or not "
                        "at all (off: each stage compiles when the decode reaches it)")
    g.add_argument("--vae-compile-processes", default="auto", metavar="N",
                   help="compile the VAE's decode stages in N separate processes (each with its own Python lock; "
                        "they hand the stages over through the executable store) instead of a background thread "
                        "(0); auto: on a GPU host 3 with 8+ CPU cores, 2 with 4-7 (on an H100 two made a cold "
                        "29x720p run 2.9-5.1 s shorter, three 1.5 s shorter again, one run), else 0. Only with "
                        "--vae-warmup early and the compile cache on, and only when the store lacks a stage (a warm "
                        "run starts none)")
    g.add_argument("--triton-gemm", action="store_true",
                   help="keep XLA:GPU's autotuned Triton GEMM fusions (by default `vdit sample` adds "
                        "--xla_gpu_enable_triton_gemm=false to XLA_FLAGS unless XLA_FLAGS sets it: on an H100 the "
                        "student's sampler then compiled about 3 s faster and ran no slower)")
    g.add_argument("--fp32-latents", action="store_true", help="keep latents in fp32 between steps (default bf16)")
    g.add_argument("--force", action="store_true", help="allow flags that contradict a student's student.json "
                   "(recorded in the sidecar)")

    g = s.add_argument_group("devices")
    g.add_argument("--sp-size", type=int, default=None, help="sequence parallel over this many visible devices "
                   "(Ulysses; FastVideo's --sp_size); default: one device")
    g.add_argument("--mesh", default=None, help="DATAxSEQ mesh, e.g. 2x4: the CFG pair over DATA, tokens over SEQ")

    g = s.add_argument_group("output")
    g.add_argument("--out", default="outputs/sample.safetensors", help="latents file; videos go beside it as "
                   "<stem>.mp4 (or <stem>_<k>.mp4), each with a <file>.json sidecar")
    g.add_argument("--fps", type=int, default=24, help="frames per second of the mp4s")
    g.add_argument("--mp4-preset", default=DEFAULT_MP4_PRESET, choices=MP4_PRESETS,
                   help="libx264's speed preset for the mp4s: faster ones write larger files at the same quality "
                        "setting (CRF 23); 'medium' is ffmpeg's own default")
    add_compile_cache_arguments(g)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    if not serving:
        from jax_vdit.cli.serve_client import DEFAULT_SOCKET

        s.add_argument_group("server").add_argument(
            "--server", nargs="?", const=DEFAULT_SOCKET, default=None, metavar="SOCKET",
            help=f"send this job to a `vdit serve` process listening at SOCKET (default {DEFAULT_SOCKET}) that "
                 "holds the same model flags: no JAX import, load or compile here; the report and files are the "
                 "same as a local run's")
