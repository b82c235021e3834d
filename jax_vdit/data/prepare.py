"""``prepare_data``: videos + captions -> ArrayRecord shards of (latents, text embedding, mask) per clip.

For every caption entry, in caption-file order: read the clip (:mod:`jax_vdit.data.video`), encode it with the
VAE (:mod:`jax_vdit.data.latents`), and once ``shard_size`` clips are collected, encode their captions with the
text source and write the shard atomically (:mod:`jax_vdit.data.shards`), then update ``manifest.json``. Clips that
cannot be used are skipped and listed in the manifest with a reason. The empty caption's encoding is stored once
(``unconditional.safetensors``) for caption dropout / CFG.

Resume: rerunning with the same settings on the same output folder keeps every shard the manifest lists (after
checking its size and sha256), deletes leftovers of a killed run (``*.partial`` files, shards not in the
manifest), and encodes only the clips that are neither in a listed shard nor recorded as skipped. Latents depend
only on (frames, seed, clip index), so the finished dataset is the same as an uninterrupted run's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from jax_vdit.data.captions import CaptionEntry, read_captions
from jax_vdit.data.codec import STORAGE_DTYPES, encode_tensors
from jax_vdit.data.latents import LatentSettings, VAEEncoder
from jax_vdit.data.records import ClipRecord, encode_record
from jax_vdit.data.shards import (
    SHARD_PREFIX,
    SHARD_SUFFIX,
    UNCONDITIONAL,
    DatasetIntegrityError,
    Manifest,
    atomic_write_bytes,
    sha256_file,
    stray_files,
    write_shard,
)
from jax_vdit.data.text import FunctionTextSource, TextEncodeFn, TextSource
from jax_vdit.data.video import Clip, ClipError, ClipSpec, read_clip

T = TypeVar("T")

# DiT patch (2 x 2 latent pixels) times the VAE's 8x spatial compression
DIT_PATCH = 2


class PrepareError(ValueError):
    """prepare-data cannot go on: inconsistent settings for an existing output folder, bad arguments, ..."""


class NothingUsableError(PrepareError):
    """Every clip was skipped; the message counts the reasons (details in the manifest)."""


@dataclass(frozen=True)
class PrepareConfig:
    """Settings of a prepare-data run.

    frames/height/width/fps/clip_start/allow_upscale: the clip cut from each video (:class:`ClipSpec`).
    latent_dtype: storage dtype of latents; "float16" (default: scaled latents are O(1), where float16 keeps 3 more
      mantissa bits than bfloat16 at the same size), or "float32" (exact), or "bfloat16".
    text_dtype: storage dtype of caption embeddings; "bfloat16" (default: mT5 runs in bfloat16 in the release, so
      its outputs are stored exactly), "float16" or "float32".
    trim_text: store only the valid (unmasked) token rows of each caption embedding; rows after them read back as
      zeros (they are masked out of cross-attention). Saves ~L/n x space with mT5's 512-token padding.
    posterior / seed / tiling: VAE encoding (:class:`~jax_vdit.data.latents.LatentSettings`).
    shard_size: clips per shard. text_batch_size: captions per text-encoder call. read_workers: threads decoding
      videos ahead of the VAE (0: decode in the main thread). These three do not change the data.
    """

    frames: int
    height: int
    width: int
    fps: float | None = 24.0
    clip_start: str = "center"
    allow_upscale: bool = False
    latent_dtype: str = "float16"
    text_dtype: str = "bfloat16"
    trim_text: bool = True
    posterior: str = "sample"
    seed: int = 0
    tiling: str = "sample-script"
    shard_size: int = 64
    text_batch_size: int = 16
    read_workers: int = 2

    def __post_init__(self) -> None:
        self.clip_spec()  # validates frames, size, fps, clip_start
        self.latent_settings()  # validates posterior, tiling
        for name in ("latent_dtype", "text_dtype"):
            if getattr(self, name) not in STORAGE_DTYPES:
                raise ValueError(f"{name} must be one of {sorted(STORAGE_DTYPES)}, got {getattr(self, name)!r}")
        if self.shard_size < 1 or self.text_batch_size < 1 or self.read_workers < 0:
            raise ValueError("shard_size and text_batch_size must be >= 1 and read_workers >= 0")

    def clip_spec(self) -> ClipSpec:
        return ClipSpec(frames=self.frames, height=self.height, width=self.width, fps=self.fps,
                        start=self.clip_start, allow_upscale=self.allow_upscale)

    def latent_settings(self) -> LatentSettings:
        return LatentSettings(posterior=self.posterior, seed=self.seed, tiling=self.tiling)

    def data_settings(self) -> dict[str, Any]:
        """The fields that determine the records (a resumed run must repeat them)."""
        skip = {"shard_size", "text_batch_size", "read_workers"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


def check_size_for_vae(config: PrepareConfig, vae_config) -> None:
    """frames must be k * temporal_compression + 1; height and width multiples of 8 * 2 (VAE x DiT patch)."""
    multiple = vae_config.spatial_compression * DIT_PATCH
    if config.height % multiple or config.width % multiple:
        raise PrepareError(f"height and width must be multiples of {multiple} (the VAE's {vae_config.spatial_compression}x "
                           f"downsampling times the DiT's {DIT_PATCH}x{DIT_PATCH} patches); got "
                           f"{config.height} x {config.width}")
    tc = vae_config.temporal_compression
    if (config.frames - 1) % tc:
        raise PrepareError(f"frames must be {tc}k+1 for this VAE, got {config.frames}")


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir/.lock`` (released when the process ends, even if killed)."""
    import fcntl

    with open(out_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PrepareError(f"another prepare-data run is writing to {out_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _read_ahead(items: Sequence[T], fn: Callable[[T], Any], workers: int) -> Iterator[tuple[T, Any]]:
    """Yield ``(item, fn(item) or the ClipError it raised)`` in order, with up to 2 * workers reads in flight."""

    def attempt(item: T) -> Any:
        try:
            return fn(item)
        except ClipError as err:
            return err

    if workers == 0:
        for item in items:
            yield item, attempt(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="prepare-read") as pool:
        source = iter(items)
        window = collections.deque((item, pool.submit(attempt, item)) for item in itertools.islice(source, 2 * workers))
        while window:
            item, future = window.popleft()
            for nxt in itertools.islice(source, 1):
                window.append((nxt, pool.submit(attempt, nxt)))
            yield item, future.result()


def _as_text_source(text: TextSource | TextEncodeFn, name: str | None) -> TextSource:
    if hasattr(text, "encode") and hasattr(text, "unconditional"):
        return text  # type: ignore[return-value]
    if callable(text):
        return FunctionTextSource(text, name or getattr(text, "__qualname__", "function"))
    raise PrepareError(f"text must be a TextSource or a function captions -> (text, mask), got {type(text).__name__}")


def _open_manifest(out_dir: Path, settings: dict, total: int, sources: dict, log: Callable[[str], None]) -> Manifest:
    """The existing manifest (checked against ``settings``, damaged shards dropped) or a new one."""
    try:
        manifest = Manifest.load(out_dir)
    except DatasetIntegrityError:
        if (out_dir / "manifest.json").exists():
            raise
        manifest = Manifest(settings=settings, total_clips=total)
    diffs = _differences(manifest.settings, settings)
    if diffs:
        raise PrepareError(f"{out_dir} was prepared with other settings; use a new output folder, or the same "
                           "settings to resume. Differences:\n  " + "\n  ".join(diffs))
    kept = []
    for shard in manifest.shards:
        path = out_dir / shard.file
        if path.is_file() and path.stat().st_size == shard.bytes and sha256_file(path) == shard.sha256:
            kept.append(shard)
        else:
            log(f"shard {shard.file} is missing or damaged; its {shard.records} clips will be encoded again")
    manifest.shards = kept
    u = manifest.unconditional
    if u is not None and not ((out_dir / u["file"]).is_file() and sha256_file(out_dir / u["file"]) == u["sha256"]):
        manifest.unconditional = None
    for path in stray_files(out_dir, [s.file for s in manifest.shards]):
        log(f"removing {path.name} (left by an interrupted run)")
        path.unlink()
    manifest.sources = sources
    manifest.complete = False
    return manifest


def _next_shard_number(manifest: Manifest) -> int:
    numbers = [int(s.file[len(SHARD_PREFIX) : -len(SHARD_SUFFIX)]) for s in manifest.shards]
    return max(numbers, default=-1) + 1


def prepare_data(
    videos_dir: str | os.PathLike,
    captions: str | os.PathLike | Sequence[CaptionEntry],
    out_dir: str | os.PathLike,
    *,
    vae,
    text: TextSource | TextEncodeFn,
    config: PrepareConfig | None = None,
    vae_path: str | os.PathLike | None = None,
    text_name: str | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> Manifest:
    """Encode every usable clip listed in ``captions`` into shards under ``out_dir``; returns the final manifest.

    Args:
      videos_dir: folder the caption file's video paths are relative to.
      captions: a caption file (JSONL or Open-Sora-Plan JSON, see :mod:`jax_vdit.data.captions`) or entries.
      out_dir: output folder (created; resumed if it holds a manifest with the same settings).
      vae: a :class:`~jax_vdit.vae.CausalVAE` (``load_vae(folder)``).
      text: a :class:`~jax_vdit.data.text.TextSource` (mT5, precomputed embeddings, toy) or a function
        ``captions -> (text (B, L, C), mask (B, L))`` (named ``text_name`` in the manifest).
      config: a :class:`PrepareConfig`, or pass its fields as keyword arguments (``frames=29, height=720, ...``).
      vae_path: where the VAE came from (recorded in the manifest and compared on resume).

    Raises :class:`NothingUsableError` if no clip could be used, :class:`PrepareError` for settings that do not
    match an existing output folder or the VAE.
    """
    from tqdm import tqdm

    if config is None:
        try:
            config = PrepareConfig(**settings)
        except TypeError as err:
            raise PrepareError(f"prepare_data: {err}") from err
    elif settings:
        config = dataclasses.replace(config, **settings)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_size_for_vae(config, vae.config)
    videos_dir, out_dir = Path(videos_dir), Path(out_dir)
    if not videos_dir.is_dir():
        raise PrepareError(f"videos folder not found: {videos_dir}")
    text_source = _as_text_source(text, text_name)
    if isinstance(captions, (str, os.PathLike)):
        entries = read_captions(captions)
        captions_id = sha256_file(captions)
        sources = {"videos_dir": str(videos_dir.resolve()), "captions": str(Path(captions).resolve())}
    else:
        entries = list(captions)
        captions_id = hashlib.sha256(json.dumps([[e.index, e.video, e.caption] for e in entries]).encode()).hexdigest()
        sources = {"videos_dir": str(videos_dir.resolve()), "captions": None}
    if len({e.index for e in entries}) != len(entries):
        raise PrepareError("caption entries must have distinct indices")
    encoder = VAEEncoder(vae, config.latent_settings())
    latent_shape = encoder.latent_shape(config.frames, config.height, config.width)
    recorded = _normalise({
        **config.data_settings(),
        "vae": {**encoder.describe(), "path": None if vae_path is None else str(vae_path)},
        "text_encoder": text_source.name,
        "captions_sha256": captions_id,
    })
    spec = config.clip_spec()
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        manifest = _open_manifest(out_dir, recorded, len(entries), sources, log)
        if manifest.unconditional is None:
            u_text, u_mask = text_source.unconditional()
            data = encode_tensors({"uncond_text": np.asarray(u_text, np.float32),
                                   "uncond_mask": np.asarray(u_mask, np.int32)}, {"text_encoder": text_source.name})
            path = atomic_write_bytes(out_dir / UNCONDITIONAL, data)
            manifest.unconditional = {"file": UNCONDITIONAL, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
            manifest.text_shape = tuple(int(x) for x in np.shape(u_text))
        manifest.latent_shape = latent_shape
        manifest.save(out_dir)

        done = manifest.done_clips()
        pending = [e for e in entries if e.index not in done]
        number = _next_shard_number(manifest)
        buffer: list[tuple[CaptionEntry, Clip, np.ndarray]] = []

        def skip(entry: CaptionEntry, reason: str, detail: str) -> None:
            manifest.skipped.append({"clip_index": entry.index, "video": entry.video, "where": entry.where,
                                     "reason": reason, "detail": detail})

        def flush() -> None:
            nonlocal number
            if not buffer:
                return
            caps = [e.caption for e, _, _ in buffer]
            texts, masks = [], []
            for i in range(0, len(caps), config.text_batch_size):
                t, m = text_source.encode(caps[i : i + config.text_batch_size])
                texts.append(t)
                masks.append(m)
            text_arr, mask_arr = np.concatenate(texts), np.concatenate(masks)
            if tuple(text_arr.shape[1:]) != tuple(manifest.text_shape):
                raise PrepareError(f"the text source gave embeddings {text_arr.shape[1:]}, but the empty caption's "
                                   f"are {manifest.text_shape}")
            records = [
                encode_record(
                    ClipRecord(clip_index=e.index, video=e.video, caption=e.caption, latents=z, text=text_arr[k],
                               text_mask=mask_arr[k], start_frame=clip.start_frame, frame_stride=clip.stride,
                               source_fps=clip.source_fps),
                    latent_dtype=config.latent_dtype, text_dtype=config.text_dtype, trim_text=config.trim_text)
                for k, (e, clip, z) in enumerate(buffer)
            ]
            manifest.shards.append(write_shard(out_dir, number, records, [e.index for e, _, _ in buffer]))
            manifest.save(out_dir)
            number += 1
            buffer.clear()

        def load(entry: CaptionEntry) -> Clip | None:
            if not entry.caption.strip():
                return None
            if hasattr(text_source, "__contains__") and entry.caption not in text_source:  # type: ignore[operator]
                return None
            path = Path(entry.video)
            return read_clip(path if path.is_absolute() else videos_dir / path, spec)

        if pending:
            compile_s = encoder.warm_up(config.frames, config.height, config.width)
            log(f"prepare-data: compiled the VAE encoder for {config.frames}x{config.height}x{config.width} clips in "
                f"{compile_s:.1f} s")
        t_loop, n_done, n_encoded = time.perf_counter(), 0, 0
        bar = tqdm(total=len(entries), initial=len(entries) - len(pending), desc="prepare-data", unit="clip",
                   disable=not show_progress)
        try:
            for entry, outcome in _read_ahead(pending, load, config.read_workers):
                if outcome is None:
                    if not entry.caption.strip():
                        skip(entry, "empty_caption", "the caption is empty")
                    else:
                        skip(entry, "no_embedding", f"{text_source.name} has no embedding for this caption")
                elif isinstance(outcome, ClipError):
                    skip(entry, outcome.reason, outcome.detail)
                else:
                    z = encoder(outcome.frames, entry.index)
                    if tuple(z.shape) != latent_shape:
                        raise PrepareError(f"clip {entry.index}: latents {z.shape}, expected {latent_shape}")
                    buffer.append((entry, outcome, z))
                    n_encoded += 1
                    if len(buffer) >= config.shard_size:
                        flush()
                bar.update(1)
                n_done += 1
                bar.set_postfix(written=manifest.num_records + len(buffer), skipped=len(manifest.skipped))
            flush()
        finally:
            bar.close()
        if n_done:
            loop_s = time.perf_counter() - t_loop
            log(f"prepare-data: {n_encoded} of {n_done} clips encoded and written in {loop_s:.1f} s "
                f"({n_encoded / max(loop_s, 1e-9):.2f} clips/s)")
        manifest.complete = True
        manifest.save(out_dir)
    if manifest.num_records == 0:
        counts = ", ".join(f"{n} {reason}" for reason, n in manifest.skip_counts().items())
        raise NothingUsableError(f"no usable clip among {len(entries)} ({counts}); see 'skipped' in "
                                 f"{out_dir / 'manifest.json'}")
    return manifest
