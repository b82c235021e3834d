"""``OpenSoraPipeline``: text encoder, transformer, VAE and sampler in one object that turns prompts into videos.

::

    import jax_vdit
    pipe = jax_vdit.OpenSoraPipeline.from_pretrained("LanguageBind/Open-Sora-Plan-v1.2.0", variant="29x720p")
    out = pipe("a red panda eating bamboo", seed=0, output_path="outputs/panda.mp4")
    out.frames  # (1, 29, 720, 1280, 3) uint8; outputs/panda.mp4 and its sidecar outputs/panda.mp4.json

Every video is sampled on its own (one prompt, or one [negative; positive] CFG pair) with the key
``jax.random.key(seed)``: a video depends only on its prompt, its seed and the settings, never on the other prompts
of the call (the same compiled program serves every video of a call). ``seed=s`` gives the k-th video of a call
the seed ``s + k``; pass a list for explicit seeds.

A distilled student folder (``student.json``, see :mod:`jax_vdit.student`) loads as a pipeline whose defaults are
the student's: consistency jumps at its edges, no CFG (the teacher's guidance is distilled in), its mask schedule.
Arguments that contradict ``student.json`` are refused unless ``force=True``.

All inputs are checked (sizes, steps, finite guidance, finite embeddings, seeds, negative conditioning for CFG)
before any text encoding or sampling; a sample that becomes non-finite raises :class:`NonFiniteSampleError`
naming the first bad step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_vdit import executable_store, sampling
from jax_vdit import pipeline_startup as startup
from jax_vdit.config import VideoSize
from jax_vdit.host_arrays import to_device
from jax_vdit.io.load_timing import collect_load_timing, timed
from jax_vdit.model.attention import AttentionConfig, attention_from_spec
from jax_vdit.text_encoder import TextEncoder
from jax_vdit.pipeline_types import (  # noqa: F401 - the pipeline's public types, importable from here too
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    RELEASE_SETTINGS,
    DecodedVideos,
    Job,
    NonFiniteSampleError,
    PipelineInputError,
    PipelineOutput,
    SamplerSettings,
    TextEmbeddings,
    VideoJob,
    default_size,
)
from jax_vdit.vae.config import VAE_PARTS

if TYPE_CHECKING:
    from jax_vdit.vae.early_compile import EarlyWorkers

SEED_LIMIT = 2**32


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("jax-vdit", "jax", "jaxlib", "flax", "numpy", "huggingface_hub"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _mask_labels(attention: AttentionConfig, num_layers: int) -> list[str]:
    if attention.masks is None:
        return ["dense"] * num_layers
    return ["dense" if m is None else m.label() for m in attention.masks]


VAE_TILES = ("exact", "uniform")
LAYER_LOOPS = ("scan", "unrolled")


@dataclass
class OpenSoraPipeline:
    """An Open-Sora-Plan v1.2 text-to-video pipeline: ``transformer`` (:class:`~jax_vdit.model.OpenSoraT2V`),
    optional ``vae`` (:class:`~jax_vdit.vae.CausalVAE`), optional ``text_encoder``
    (:class:`~jax_vdit.text_encoder.TextEncoder`), the default sampler ``settings`` and ``attention_spec``
    ("dense", "k:m" or a mask schedule JSON), ``student`` (the ``student.json`` of a distilled student, or None),
    ``source`` (where each part came from; recorded in sidecars) and ``mixed_masks`` (how a scanned forward runs a
    schedule whose mask changes from layer to layer: "runs" or "switch", see
    :class:`~jax_vdit.model.AttentionConfig`) and ``vae_tiles`` (how the VAE decodes the release's tiles: "exact",
    each tile shape its own programs, or "uniform" (the default), every tile zero-padded to the full tile size so that the edge
    tiles share the interior tiles' programs: 4-8x fewer programs to compile at 720p, the same pixels up to
    float rounding, edge tiles at full-tile compute; see :class:`~jax_vdit.vae.TilingConfig`) and ``layer_loop``
    (the transformer's blocks in one scanned loop, "scan": compiles in seconds; or "unrolled": each block compiled on
    its own, 30-70 s more to compile at full size and 0.6-1.2% faster per step on an H100, for long runs of many
    videos of one shape)."""

    def __post_init__(self) -> None:
        if self.vae_tiles not in VAE_TILES:
            raise PipelineInputError(f"vae_tiles must be one of {VAE_TILES}, not {self.vae_tiles!r}")
        if self.layer_loop not in LAYER_LOOPS:
            raise PipelineInputError(f"layer_loop must be one of {LAYER_LOOPS}, not {self.layer_loop!r}")

    transformer: Any
    vae: Any = None
    text_encoder: TextEncoder | None = None
    settings: SamplerSettings = RELEASE_SETTINGS
    attention_spec: str = "dense"
    tile_backend: str = "auto"
    student: dict | None = None
    source: dict = field(default_factory=dict)
    mixed_masks: str = "runs"
    vae_tiles: str = "uniform"
    layer_loop: str = "scan"
    load_seconds: dict = field(default_factory=dict, compare=False)  # from_pretrained: wall seconds per part
    # from_pretrained: CPU seconds of the thread that loaded each part; well below its wall seconds when the thread
    # waited (for the file, the device, or Python's lock held by the other loading thread)
    load_cpu_seconds: dict = field(default_factory=dict, compare=False)
    # from_pretrained: where the transformer's load seconds went (jax_vdit.io.load_timing: file reads waited for,
    # host-to-device copies, layout programs, the final checks, building the model)
    load_parts: dict = field(default_factory=dict, compare=False)
    _decoder_warmups: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _early_sampler: Future | None = field(default=None, init=False, repr=False, compare=False)
    # from_pretrained(early_job=...): seconds of the background compile, its compile report, its wait, any error
    early_sampler: dict | None = field(default=None, init=False, repr=False, compare=False)
    # from_pretrained(vae_compile_processes=N): each compile process's report, once the decode's warm-up has them
    vae_compile_workers: list | None = field(default=None, init=False, repr=False, compare=False)
    # whether the compile processes started before JAX (``vae_compile_started``) did this pipeline's decode
    vae_compile_started_used: bool = field(default=False, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | os.PathLike,
        variant: str | None = "29x720p",
        *,
        config: str | None = None,
        vae: str | os.PathLike | bool | None = "auto",
        text_encoder: str | os.PathLike | TextEncoder | None = "auto",
        param_dtype: str = "bfloat16",
        compute_dtype: str = "bfloat16",
        tile_backend: str = "auto",
        mixed_masks: str = "runs",
        vae_tiles: str = "uniform",
        layer_loop: str = "scan",
        vae_parts: str = "all",
        decode_size: tuple[int | None, int | None, int | None] | None = None,
        early_job: Mapping[str, Any] | None = None,
        vae_compile_processes: int = 0,
        vae_compile_started: EarlyWorkers | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
    ) -> OpenSoraPipeline:
        """Load a pipeline from a local folder, the local Hugging Face cache, or a Hub repo id.

        ``config``: a preset name for a weights folder without ``config.json``.
        ``path_or_repo_id``: a release-layout folder or repo (``29x720p/``, ``vae/``, ...; ``variant`` picks the
        transformer subfolder), a folder that holds the transformer itself (release folder, our orbax checkpoint
        or a distilled student with ``student.json``; ``variant`` is then unused), or a cache folder
        ``models--OWNER--NAME``. Repo ids are downloaded (only the variant and ``vae/``) when online and read from
        the cache when offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``).

        ``vae``: "auto" (the ``vae/`` folder beside the transformer, if any; required for a repo id), a path, or
        None/False (latents only). ``text_encoder``: "auto" (a ``text_encoder/`` folder, the toy stand-in for
        toy-world models, or ``google/mt5-xxl`` if it is already in the local Hugging Face cache; else none),
        "toy", a local mT5 folder or repo id, a :class:`TextEncoder`, or None (embeddings only).
        ``tile_backend``, ``mixed_masks`` and ``layer_loop`` go into every attention config the pipeline builds;
        ``vae_tiles``: "exact" or "uniform" (see the class docstring). ``vae_parts``: "all", or "decoder" (the
        VAE without its encoder, which text-to-video never runs: 40% of the release VAE's weights neither read nor
        placed; encoding with ``pipe.vae`` then raises :class:`~jax_vdit.vae.VAEEncoderMissingError`).
        ``decode_size``: (frames, height, width) of
        the videos that will be decoded (None entries: the checkpoint's defaults, as :meth:`prepare` fills them): the VAE's
        stages for that size start compiling in a background thread as soon as the VAE is loaded, while the
        transformer and the text encoder load; :meth:`warm_up_decoder` of a job of that size returns that warm-up.
        The VAE itself loads in a background thread beside the transformer. ``load_seconds``: wall seconds of each
        part ("vae" overlaps "transformer"; "vae_wait": how long the VAE kept the pipeline waiting after the rest).
        ``early_job``: the keyword arguments of the :meth:`prepare` call that will follow, with ``prompt_embeds``
        (precomputed embeddings: no text encoder is needed to know the text's shape): the sampler for that job then
        compiles in a background thread from the model's shapes alone while the weights load, and
        :meth:`warm_up` waits for it instead of compiling. It needs the executable store
        (:mod:`jax_vdit.executable_store`: JAX's persistent cache on) and one device; otherwise, or with prompts,
        it is ignored. A failure there (e.g. a bad input) is only recorded in ``early_sampler``: :meth:`prepare`
        raises it in the caller's thread. ``vae_compile_processes`` (with ``decode_size``, the executable store on):
        the VAE's stages compile in that many separate processes (:mod:`jax_vdit.vae.compile_worker`), which have
        their own Python lock, instead of a thread of this process; their reports go into ``vae_compile_workers``.
        ``vae_compile_started``: such processes already started before JAX was imported
        (:func:`jax_vdit.vae.early_compile.start_before_jax`): used when they compile the decode this pipeline
        needs, else stopped (another decode, one already stored, or no processes wanted here).
        """
        if vae_tiles not in VAE_TILES:
            raise PipelineInputError(f"vae_tiles must be one of {VAE_TILES}, not {vae_tiles!r}")
        if layer_loop not in LAYER_LOOPS:
            raise PipelineInputError(f"layer_loop must be one of {LAYER_LOOPS}, not {layer_loop!r}")
        if vae_parts not in VAE_PARTS:
            raise PipelineInputError(f"vae_parts must be one of {VAE_PARTS}, not {vae_parts!r}")
        from jax_vdit.io import load_model
        from jax_vdit.io.hub import has_weights, looks_like_repo_id, resolve_pretrained
        from jax_vdit.student import is_student_folder, read_student_info

        name = os.fspath(path_or_repo_id)
        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        is_repo = not Path(name).expanduser().exists() and looks_like_repo_id(name)
        want_vae = vae == "auto" or vae is True
        subfolders = ([variant] if variant else [""]) + (["vae"] if is_repo and want_vae else [])
        root = resolve_pretrained(name, subfolders=subfolders if is_repo else (), **hub)
        if variant and (root / variant).is_dir():
            model_dir = root / variant
        elif has_weights(root) or is_student_folder(root):
            model_dir = root
        else:
            raise FileNotFoundError(f"{root} holds no transformer: expected a {variant or '<variant>'}/ subfolder "
                                    f"(release layout: {', '.join(_release_variants())}) or weights in the folder")
        student = read_student_info(model_dir) if is_student_folder(model_dir) else None

        vae_dir = None
        if vae not in (None, False, "auto", True):
            vae_dir = Path(vae).expanduser()
            if not vae_dir.exists():
                raise FileNotFoundError(f"VAE not found: {vae_dir}")
        elif want_vae:
            for candidate in (root / "vae", model_dir.parent / "vae"):
                if candidate.is_dir():
                    vae_dir = candidate
                    break
            if vae is True and vae_dir is None:
                raise FileNotFoundError(f"no vae/ folder beside {model_dir}; pass vae=PATH")
        if student is not None:
            settings = SamplerSettings("consistency", len(student["edges"]), tuple(sorted(student["edges"])), None)
            attention_spec = student["mask_schedule_file"] or "dense"
        else:
            settings, attention_spec = RELEASE_SETTINGS, "dense"
        parts = dict(settings=settings, attention_spec=attention_spec, tile_backend=tile_backend, student=student,
                     mixed_masks=mixed_masks, vae_tiles=vae_tiles, layer_loop=layer_loop)
        seconds, cpu_seconds = {}, {}
        # the VAE loads in a background thread while the transformer and text encoder load here; its stages then
        # compile in the background (decode_size given) while the transformer compiles and samples
        cancel = threading.Event()
        workers = None
        started = vae_compile_started  # processes started before JAX: adopted below, or stopped
        started_used = False
        if vae_dir is not None and decode_size is not None and vae_compile_processes > 0 and \
                executable_store.store_directory() is not None:
            from jax_vdit.vae import compile_worker, early_compile

            shape = startup.decode_shape(model_dir, config, decode_size)
            vae_dtype = "bfloat16" if compute_dtype == "bfloat16" else "float32"
            cache = jax.config.jax_compilation_cache_dir
            if started is not None and (shape is None or not started.matches(vae_dir, shape, vae_dtype, vae_tiles,
                                                                              cache)):
                started.stop()
                started = None
            if shape is not None and compile_worker.needed(vae_dir, shape, dtype=vae_dtype, tiles=vae_tiles):
                started_used = started is not None
                workers = (started.workers if started_used else  # each reads the VAE's config
                           compile_worker.start(vae_dir, shape, dtype=vae_dtype, tiles=vae_tiles, cache=cache,
                                                processes=vae_compile_processes), [])
                started = None
            elif shape is not None:  # stored: the next command need not start processes before JAX
                early_compile.mark_decode_stored(cache, vae_dir, shape, vae_dtype, vae_tiles)
        if started is not None:
            started.stop()
        vae_load = None if vae_dir is None else startup.load_vae_in_background(
            vae_dir, jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32,
            None if decode_size is None else (model_dir, config, decode_size, vae_tiles, workers), cancel,
            parts=vae_parts)
        early_sampler = None
        if early_job is not None and early_job.get("prompt_embeds") is not None and \
                executable_store.store_directory() is not None and jax.local_device_count() == 1:
            early_sampler = startup.compile_sampler_in_background(
                cls, model_dir, dict(config=config, param_dtype=param_dtype, compute_dtype=compute_dtype), parts,
                early_job, cancel)
        try:
            t0, cpu0 = time.perf_counter(), time.thread_time()
            with collect_load_timing() as transformer_parts:
                transformer = load_model(model_dir, param_dtype=param_dtype, compute_dtype=compute_dtype,
                                         config=config)
                with timed("ready"):  # placed on the device, not just queued
                    jax.block_until_ready(jax.tree.leaves(nnx.state(transformer)))
            seconds["transformer"] = time.perf_counter() - t0
            cpu_seconds["transformer"] = time.thread_time() - cpu0
            t0 = time.perf_counter()
            encoder = _resolve_text_encoder(text_encoder, root, model_dir, hub)
            seconds["text_encoder"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            if vae_load is None:
                vae_model, seconds["vae"], early = None, 0.0, None
            else:
                vae_model, seconds["vae"], cpu_seconds["vae"], early = vae_load.result()
            seconds["vae_wait"] = time.perf_counter() - t0
        except BaseException:
            cancel.set()  # no decode will follow: stop the VAE's work, so the error ends the process promptly
            raise
        source = {"model": name, "variant": variant if model_dir != root else None, "transformer": str(model_dir),
                  "vae": None if vae_dir is None else str(vae_dir),
                  "text_encoder": None if encoder is None else encoder.source,
                  "param_dtype": param_dtype, "compute_dtype": compute_dtype}
        pipe = cls(transformer, vae_model, encoder, source=source,
                   load_seconds={k: round(v, 3) for k, v in seconds.items()},
                   load_cpu_seconds={k: round(v, 3) for k, v in cpu_seconds.items()},
                   load_parts={"transformer": {k: round(v, 3) for k, v in transformer_parts.items()}}, **parts)
        pipe._early_sampler = early_sampler
        pipe.vae_compile_workers = None if workers is None else workers[1]  # filled once they have finished
        pipe.vae_compile_started_used = started_used
        if early is not None:
            shape, future = early
            pipe._decoder_warmups[shape] = future  # warm_up_decoder() of a job of this size returns it
        return pipe

    # ---------------------------------------------------------------------------------------------------------
    @property
    def default_size(self) -> VideoSize:
        return default_size(self.transformer.cfg)

    def resolve_settings(self, *, sampler: str | None = None, num_inference_steps: int | None = None,
                         edges: Sequence[int] | None = None, guidance_scale: float | None = None,
                         attention: str | None = None, force: bool = False) -> tuple[SamplerSettings, str, list[str]]:
        """The settings that will run: the checkpoint's defaults with the given values replaced. For a student,
        values that contradict ``student.json`` raise unless ``force``; returns (settings, attention, notes)."""
        if guidance_scale is not None and not math.isfinite(guidance_scale):
            raise PipelineInputError(f"guidance_scale must be a finite number, got {guidance_scale}")
        if num_inference_steps is not None and not 1 <= num_inference_steps <= sampling.MAX_PLAN_STEPS:
            raise PipelineInputError(f"num_inference_steps must be in [1, {sampling.MAX_PLAN_STEPS}], got "
                                     f"{num_inference_steps}")
        base = self.settings
        wanted = {"sampler": sampler, "num_inference_steps": num_inference_steps,
                  "edges": None if edges is None else tuple(sorted(int(e) for e in edges)),
                  "guidance_scale": guidance_scale}
        final_sampler = sampler or base.sampler
        if wanted["edges"] is not None and final_sampler != "consistency":
            raise PipelineInputError(f"edges apply to the consistency sampler only, the sampler is {final_sampler!r}")
        notes: list[str] = []
        if self.student is not None:
            contradictions = [f"{k}={v!r} (student.json: {getattr(base, k)!r})" for k, v in wanted.items()
                              if v is not None and v != getattr(base, k)
                              and not (k == "guidance_scale" and v == 1.0)]
            if attention is not None and attention != self.attention_spec:
                contradictions.append(f"attention={attention!r} (student.json: {self.attention_spec!r})")
            if contradictions and not force:
                raise PipelineInputError(
                    f"{', '.join(contradictions)} contradict{'s' if len(contradictions) == 1 else ''} how this "
                    f"distilled student samples ({base.describe()}, attention {self.attention_spec}); drop "
                    "them or force them (force=True, vdit sample --force)")
            notes += [f"forced {c}" for c in contradictions]
        if wanted["num_inference_steps"] is not None and wanted["edges"] is None:
            base = dataclasses.replace(base, edges=None)  # a step count of its own: uniform consistency edges
        settings = dataclasses.replace(base, **{k: v for k, v in wanted.items() if v is not None})
        if settings.sampler != "consistency":
            settings = dataclasses.replace(settings, edges=None)
        try:
            settings = dataclasses.replace(settings, num_inference_steps=settings.plan().num_steps)
        except ValueError as err:
            raise PipelineInputError(str(err)) from err
        return settings, attention or self.attention_spec, notes

    def prepare(
        self,
        prompt: str | Sequence[str] | None = None,
        negative_prompt: str | None = None,
        *,
        prompt_embeds: TextEmbeddings | Mapping | str | os.PathLike | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        edges: Sequence[int] | None = None,
        seed: int | Sequence[int] = 0,
        num_videos_per_prompt: int = 1,
        attention: str | AttentionConfig | None = None,
        latent_dtype=jnp.bfloat16,
        force: bool = False,
    ) -> Job:
        """Check every input, then encode the text: a :class:`Job` for :meth:`run`. Nothing is sampled."""
        cfg = self.transformer.cfg
        base = self.default_size
        size = VideoSize(num_frames or base.frames, height or base.height, width or base.width)
        custom = isinstance(attention, AttentionConfig)
        settings, spec, notes = self.resolve_settings(
            sampler=sampler, num_inference_steps=num_inference_steps, edges=edges, guidance_scale=guidance_scale,
            attention="custom" if custom else attention, force=force)
        if custom:
            attention_config = attention
        else:
            try:
                attention_config = dataclasses.replace(
                    attention_from_spec(spec, cfg.num_layers, size.latent_shape[1], tile_backend=self.tile_backend),
                    mixed_masks=self.mixed_masks, scan_layers=self.layer_loop == "scan")
            except (ValueError, FileNotFoundError) as err:
                raise PipelineInputError(f"attention {spec!r}: {err}") from err
        if num_videos_per_prompt < 1:
            raise PipelineInputError(f"num_videos_per_prompt must be >= 1, got {num_videos_per_prompt}")

        # text: prompts xor embeddings; negatives for CFG
        if (prompt is None) == (prompt_embeds is None):
            raise PipelineInputError("give prompts or prompt_embeds (precomputed embeddings), exactly one of them")
        prompts = [prompt] if isinstance(prompt, str) else None if prompt is None else list(prompt)
        if prompts is not None:
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise PipelineInputError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
            if self.text_encoder is None:
                raise PipelineInputError(
                    "this pipeline has no text encoder: pass prompt_embeds (precomputed embeddings), or load it "
                    "with text_encoder= (a local google/mt5-xxl folder or repo id, or 'toy' for toy-world models)")
        embeds = None if prompt_embeds is None else TextEmbeddings.from_any(prompt_embeds)
        if embeds is not None:
            embeds.check(cfg.caption_channels)
            if negative_prompt is not None and embeds.negative_text is not None:
                raise PipelineInputError("the embeddings already hold a negative prompt; drop negative_prompt")
        n_prompts = len(prompts) if prompts is not None else embeds.batch
        encode_negative = None
        if settings.uses_cfg and (embeds is None or embeds.negative_text is None):
            if self.text_encoder is None:
                raise PipelineInputError(
                    f"guidance_scale={settings.guidance_scale:g} needs negative embeddings: these embeddings have "
                    "none and there is no text encoder to encode the default negative prompt; pass embeddings with "
                    "negative_text/negative_mask, a text encoder, or guidance_scale=1 (no CFG)")
            encode_negative = self.text_encoder.default_negative_prompt if negative_prompt is None else negative_prompt
        elif not settings.uses_cfg and negative_prompt is not None:
            raise PipelineInputError(f"negative_prompt is given but CFG is off ({settings.describe()}); "
                                     "set guidance_scale > 1 or drop negative_prompt")
        count = n_prompts * num_videos_per_prompt
        seeds = _seeds(seed, count)

        # model work starts here: text encoding
        if prompts is not None:
            data = self.text_encoder.encode(prompts, negative_prompt=encode_negative)
            embeds = TextEmbeddings.from_any(data | {"prompts": prompts, "negative_prompt": encode_negative})
        elif encode_negative is not None:
            neg_text, neg_mask = self.text_encoder.encode_texts([encode_negative], template=False)
            embeds = dataclasses.replace(embeds, negative_text=neg_text, negative_mask=neg_mask,
                                         negative_prompt=encode_negative)
        elif embeds.negative_text is not None and embeds.negative_prompt is None and settings.uses_cfg:
            embeds = dataclasses.replace(embeds, negative_prompt="<from the embeddings>")
        embeds.check(cfg.caption_channels)
        if not settings.uses_cfg:
            embeds = dataclasses.replace(embeds, negative_text=None, negative_mask=None, negative_prompt=None)
        videos = tuple(VideoJob(k, k // num_videos_per_prompt, seeds[k], embeds.prompts[k // num_videos_per_prompt]
                                if embeds.prompts else None) for k in range(count))
        return Job(size, settings, settings.plan(), attention_config, spec, embeds, videos,
                   jnp.dtype(latent_dtype), tuple(notes))

    # ---------------------------------------------------------------------------------------------------------
    def _sampler_arguments(self, job: Job, video: VideoJob) -> tuple[jax.Array, jax.Array, dict]:
        """(text (1, L, C), text mask (1, L), the other keyword arguments of :func:`~jax_vdit.sampling.sample`)
        for ``video`` of ``job``."""
        t = job.text
        p = video.prompt_index
        kwargs = dict(latent_shape=job.latent_shape, attention=job.attention, latent_dtype=job.latent_dtype)
        if job.settings.uses_cfg:
            q = 0 if t.negative_text.shape[0] == 1 else p
            kwargs.update(negative_text=to_device(t.negative_text[q:q + 1]),
                          negative_mask=to_device(t.negative_mask[q:q + 1]), guidance_scale=job.settings.guidance_scale)
        return to_device(t.text[p:p + 1]), to_device(t.text_mask[p:p + 1]), kwargs

    def _sample_one(self, job: Job, video: VideoJob, *, plan: sampling.SamplingPlan | None = None,
                    mesh=None, progress: Callable[[int], None] | None = None) -> jax.Array:
        text, mask, kwargs = self._sampler_arguments(job, video)
        return sampling.sample(self.transformer, text, mask,
                               key=jax.random.key(to_device(video.seed, np.uint32)),  # no staging program
                               plan=job.plan if plan is None else plan, progress=progress, mesh=mesh, **kwargs)

    def compile_sampler(self, job: Job, *, mesh=None) -> sampling.CompiledSampler:
        """The sampler program of ``job`` (:func:`~jax_vdit.sampling.compile_sampler`), compiled or read from the
        executable store, not run. The transformer may be abstract (``jax.ShapeDtypeStruct`` leaves, e.g.
        :func:`~jax_vdit.model.abstract_model`): only shapes matter, and with the executable store on, a pipeline
        of the loaded model then runs this executable without tracing it again."""
        text, mask, kwargs = self._sampler_arguments(job, job.videos[0])
        return sampling.compile_sampler(self.transformer, text, mask, plan=job.plan, mesh=mesh, **kwargs)

    def draw_first_noise(self, job: Job) -> None:
        """Draw the first video's initial noise once and drop it: this process then has the two small programs
        that make a key and the noise (:meth:`warm_up` and :meth:`run` find them compiled)."""
        key = jax.random.key(to_device(job.videos[0].seed, np.uint32))
        jax.block_until_ready(sampling.initial_latents(key, job.plan, (1, *job.latent_shape), job.latent_dtype))

    def warm_up(self, job: Job, *, mesh=None, progress: bool = False) -> None:
        """Compile the sampler for ``job``: its first video's initial noise and a run of zero steps of the same
        program as :meth:`run` (the step range is data), so that no step is spent (``progress``: whether that run
        has a progress callback). Waits first for the sampler that :meth:`from_pretrained` compiled in the
        background (``early_job``), whose figures go into ``early_sampler``."""
        if self._early_sampler is not None:
            t0 = time.perf_counter()
            done = self._early_sampler.result()
            self.early_sampler = dict(done, wait_s=round(time.perf_counter() - t0, 3))
            self._early_sampler = None
        out = self._sample_one(job, job.videos[0], plan=job.plan.truncated(0), mesh=mesh,
                               progress=(lambda step: None) if progress else None)
        jax.block_until_ready(out)

    def first_bad_step(self, job: Job, video: VideoJob, *, mesh=None) -> int:
        """The first step (1-based) after which ``video``'s latents are non-finite (bisection on truncated plans,
        each a run of the same compiled program)."""
        lo, hi = 0, job.plan.num_steps  # finite after lo steps (the noise), non-finite after hi

        def finite_after(k: int) -> bool:
            return bool(jnp.isfinite(self._sample_one(job, video, plan=job.plan.truncated(k), mesh=mesh)).all())

        if not finite_after(0):
            return 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if finite_after(mid) else (lo, mid)
        return hi

    def run(self, job: Job, *, mesh=None, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Sample every video of ``job``: latents (N, C, T, H, W) float32 on the host. Raises
        :class:`NonFiniteSampleError` naming the first step whose result is NaN or infinite."""
        out = []
        for video in job.videos:
            latents = jax.block_until_ready(self._sample_one(job, video, mesh=mesh, progress=progress))
            latents = np.asarray(jax.device_get(latents), np.float32)
            if not np.isfinite(latents).all():
                step = self.first_bad_step(job, video, mesh=mesh)
                t = float(job.plan.t_model[max(step - 1, 0)])
                where = "in the initial noise" if step == 0 else f"at step {step} of {job.plan.num_steps} (model " \
                        f"timestep {t:g})"
                raise NonFiniteSampleError(f"video {video.index} (prompt {video.prompt!r}, seed {video.seed}): the "
                                           f"latents became NaN or infinite {where}; {job.settings.describe()}")
            out.append(latents[0])
        return np.stack(out)

    def warm_up_decoder(self, job: Job):
        """Start compiling every VAE stage that decoding ``job``'s videos needs, in a background thread, so
        that it overlaps the transformer's compile and sampling; :meth:`decode` waits for it. Returns the
        future (its result is a :class:`jax_vdit.vae.warmup.WarmupReport`), or None without a VAE."""
        if self.vae is None:
            return None
        from jax_vdit.vae.warmup import precompile_decode_in_background

        shape = (1, *job.latent_shape)
        if shape not in self._decoder_warmups:
            self._decoder_warmups[shape] = precompile_decode_in_background(self.vae, shape, tiling=self.decode_tiling)
        return self._decoder_warmups[shape]

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Latents (N, C, T, H, W) -> uint8 frames (N, 4T-3, 8H, 8W, 3), one video at a time (no VAE: raises
        :class:`PipelineInputError`, see :meth:`decode_parts`)."""
        from jax_vdit.vae.pipeline import frames_on_host

        return np.concatenate([frames_on_host(self.decode_parts(latents[i:i + 1])) for i in range(len(latents))])

    def decode_parts(self, latents: np.ndarray) -> list[jax.Array]:
        """One video's latents (1, C, T, H, W) -> its uint8 frames on the device, one (1, T_i, 8H, 8W, 3) array per
        time chunk of the decode tiling, all dispatched (see ``jax_vdit.vae.decode_latents_to_video_parts``)."""
        if self.vae is None:
            raise PipelineInputError("this pipeline has no VAE: load it with vae=PATH (the release's vae/ folder) "
                                     "or ask for output_type='latent'")
        from jax_vdit.vae import decode_latents_to_video_parts

        pending = self._decoder_warmups.pop((1, *np.shape(latents)[1:]), None)
        if pending is not None:
            pending.result()  # the stages this decode needs are (being) compiled in the background
        return decode_latents_to_video_parts(self.vae, latents, tiling=self.decode_tiling)

    def decode_and_write(self, latents: np.ndarray, records: list[dict], output_path: str | os.PathLike, *,
                         fps: int = 24, keep_frames: bool = False, mp4_preset: str | None = None) -> DecodedVideos:
        """Decode each video and write it as :func:`save_outputs` does (``name.mp4`` or ``name_0.mp4``, ... with
        a JSON sidecar each), encoding a video's first time chunks while the device decodes its later ones.
        ``keep_frames``: also return the frames (N, F, H, W, 3) uint8. ``mp4_preset``: libx264's speed preset
        (``jax_vdit.vae.MP4_PRESETS``; None: ``DEFAULT_MP4_PRESET``)."""
        from jax_vdit.vae import DEFAULT_MP4_PRESET, write_video_parts

        preset = mp4_preset or DEFAULT_MP4_PRESET

        t0 = time.perf_counter()
        out = DecodedVideos(paths=[])
        kept: list[np.ndarray] = []  # (T_i, H, W, 3) parts of every video, in order

        def arrived(index: int, frames: np.ndarray) -> None:
            out.decoded_s = time.perf_counter() - t0  # the newest part reached the host
            if keep_frames:
                kept.append(frames)

        for i, (path, record) in enumerate(zip(output_files(output_path, len(latents)), records)):
            final = write_video_parts(self.decode_parts(latents[i:i + 1]), path, fps=fps, on_part=arrived,
                                      preset=preset)
            write_video_sidecar(final, record, fps, preset)
            out.paths.append(final)
        out.total_s = time.perf_counter() - t0
        if keep_frames:
            out.frames = np.concatenate(kept).reshape(len(latents), -1, *kept[0].shape[1:])
        return out

    @property
    def decode_tiling(self):
        """The release's decode tiling (``sample_t2v.py --enable_tiling``), run as ``vae_tiles`` says."""
        return startup.decode_tiling(self.vae_tiles)

    def records(self, job: Job, *, fps: int | None = None) -> list[dict]:
        """One sidecar dict per video: prompt, negative prompt, seed, sampler, steps, guidance, masks, model
        and package versions."""
        s = job.settings
        common = {
            "negative_prompt": job.text.negative_prompt if s.uses_cfg else None,
            "sampler": s.sampler, "steps": job.plan.num_steps, "edges": list(s.edges) if s.edges else None,
            "guidance_scale": s.guidance_scale if s.uses_cfg else None, "cfg": s.uses_cfg,
            "size": {"frames": job.size.frames, "height": job.size.height, "width": job.size.width},
            "latent_shape": list(job.latent_shape), "latent_dtype": jnp.dtype(job.latent_dtype).name,
            "attention": job.attention_spec, "masks": _mask_labels(job.attention, self.transformer.cfg.num_layers),
            "model": dict(self.source), "student": None if self.student is None else
            {k: v for k, v in self.student.items() if k != "mask_schedule_file"},
            "notes": list(job.notes), "fps": fps, "versions": package_versions(),
        }
        return [{"index": v.index, "prompt": v.prompt, "prompt_index": v.prompt_index, "seed": v.seed} | common
                for v in job.videos]

    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        negative_prompt: str | None = None,
        *,
        output_type: str = "np",
        output_path: str | os.PathLike | None = None,
        fps: int = 24,
        mp4_preset: str | None = None,
        mesh=None,
        progress: Callable[[int], None] | None = None,
        **kwargs,
    ) -> PipelineOutput:
        """Prompts (or ``prompt_embeds=``) -> videos. Keyword arguments of :meth:`prepare` (``num_frames``,
        ``height``, ``width``, ``num_inference_steps``, ``guidance_scale``, ``seed``, ``num_videos_per_prompt``,
        ``attention``, ``force``, ...) set the request; ``mesh`` (``jax_vdit.parallel.make_mesh(seq=N)``) runs it
        sequence-parallel. ``output_type``: "np" (decoded uint8 frames) or "latent". ``output_path``: write each
        video there (``name.mp4``, or ``name_0.mp4``, ``name_1.mp4``, ... for several) at ``fps`` (libx264 speed
        ``mp4_preset``, default ``jax_vdit.vae.DEFAULT_MP4_PRESET``) with a JSON sidecar ``name.mp4.json``; with
        ``output_type="latent"`` a ``.safetensors`` of all latents instead."""
        if output_type not in ("np", "latent"):
            raise PipelineInputError(f"output_type must be 'np' or 'latent', got {output_type!r}")
        if output_type == "np" and self.vae is None:
            raise PipelineInputError("this pipeline has no VAE to decode frames: load it with vae=PATH or pass "
                                     "output_type='latent'")
        if not isinstance(fps, int) or fps < 1:
            raise PipelineInputError(f"fps must be a positive integer, got {fps!r}")
        if mp4_preset is not None:
            from jax_vdit.vae import MP4_PRESETS

            if mp4_preset not in MP4_PRESETS:
                raise PipelineInputError(f"unknown mp4_preset {mp4_preset!r}: one of {', '.join(MP4_PRESETS)}")
        job = self.prepare(prompt, negative_prompt, **kwargs)
        if output_type == "np":
            self.warm_up_decoder(job)
        latents = self.run(job, mesh=mesh, progress=progress)
        records = self.records(job, fps=fps if output_type == "np" else None)
        if output_type == "np" and output_path is not None:  # each video encoded while the device decodes it
            written = self.decode_and_write(latents, records, output_path, fps=fps, keep_frames=True,
                                            mp4_preset=mp4_preset)
            return PipelineOutput(latents, written.frames, records, written.paths)
        out = PipelineOutput(latents, self.decode(latents) if output_type == "np" else None, records)
        if output_path is not None:
            out.paths = save_outputs(out, output_path, fps=fps, mp4_preset=mp4_preset)
        return out


def _seeds(seed: int | Sequence[int], count: int) -> list[int]:
    """Per-video seeds: ``seed + k`` for the k-th video, or one given seed per video, each in [0, 2**32)."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        seeds = [int(seed) + k for k in range(count)]
    elif isinstance(seed, Sequence) and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                            for s in seed):
        seeds = [int(s) for s in seed]
        if len(seeds) != count:
            raise PipelineInputError(f"{len(seeds)} seeds for {count} videos: give one int, or one seed per video")
    else:
        raise PipelineInputError(f"seed must be an int or a list of ints (one per video), got {seed!r}")
    bad = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if bad:
        raise PipelineInputError(f"seeds must be in [0, 2**32), got {bad}")
    return seeds


def _release_variants() -> tuple[str, ...]:
    from jax_vdit.io.hub import RELEASE_VARIANTS

    return RELEASE_VARIANTS


def _resolve_text_encoder(text_encoder, root: Path, model_dir: Path, hub: dict) -> TextEncoder | None:
    from jax_vdit.io.hub import TEXT_ENCODER_REPO, PretrainedNotFoundError, looks_like_repo_id, resolve_pretrained

    if text_encoder is None or text_encoder is False:
        return None
    if isinstance(text_encoder, TextEncoder):
        return text_encoder
    if text_encoder == "auto":
        if (model_dir / "toy_world.json").is_file():
            return TextEncoder("toy")
        if (root / "text_encoder" / "config.json").is_file():
            return TextEncoder(root / "text_encoder")
        try:  # only what is already cached: never a 10 GB download nobody asked for
            return TextEncoder(resolve_pretrained(TEXT_ENCODER_REPO, subfolders=[""],
                                                  **(hub | {"local_files_only": True, "revision": None})))
        except (PretrainedNotFoundError, OSError):
            return None
    name = os.fspath(text_encoder)
    if name == "toy" or Path(name).expanduser().is_dir():
        return TextEncoder(name if name == "toy" else Path(name).expanduser())
    if looks_like_repo_id(name):
        return TextEncoder(resolve_pretrained(name, subfolders=[""], **(hub | {"revision": None})))
    raise FileNotFoundError(f"text encoder not found: {name} (a local google/mt5-xxl folder, a repo id, or 'toy')")


def output_files(output_path: str | os.PathLike, count: int, suffix: str = ".mp4") -> list[Path]:
    """``name.mp4`` for one video, ``name_0.mp4``, ``name_1.mp4``, ... for several."""
    path = Path(output_path)
    stem = path.with_suffix("") if path.suffix else path
    if count == 1:
        return [stem.with_suffix(suffix)]
    return [stem.with_name(f"{stem.name}_{i}").with_suffix(suffix) for i in range(count)]


def write_sidecar(path: Path, record: dict) -> Path:
    """``<file>.json`` beside ``path``."""
    sidecar = path.with_name(path.name + ".json")
    sidecar.write_text(json.dumps(record | {"file": path.name}, indent=2) + "\n")
    return sidecar


def write_video_sidecar(video: Path, record: dict, fps: int, preset: str) -> Path:
    """The sidecar of a written video: ``record`` with its fps and, for an mp4 (not the GIF fallback), the
    libx264 preset it was encoded with."""
    return write_sidecar(video, record | {"fps": fps, "mp4_preset": preset if video.suffix == ".mp4" else None})


def save_outputs(out: PipelineOutput, output_path: str | os.PathLike, *, fps: int = 24,
                 mp4_preset: str | None = None) -> list[Path]:
    """Write each video (mp4 with libx264's speed ``mp4_preset``, default ``jax_vdit.vae.DEFAULT_MP4_PRESET``; a
    GIF when ffmpeg is missing) or, without frames, one latents ``.safetensors``, each with its JSON sidecar.
    Returns the files written (not the sidecars)."""
    written = []
    if out.frames is None:
        from safetensors.numpy import save_file

        (path,) = output_files(output_path, 1, ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": out.latents.astype(np.float32)}, str(path))
        write_sidecar(path, {"videos": out.records})
        return [path]
    from jax_vdit.vae import DEFAULT_MP4_PRESET, write_video

    preset = mp4_preset or DEFAULT_MP4_PRESET
    for path, video, record in zip(output_files(output_path, len(out.frames)), out.frames, out.records):
        final = write_video(video, path, fps=fps, preset=preset)
        write_video_sidecar(final, record, fps, preset)
        written.append(final)
    return written
