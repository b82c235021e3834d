"""Shard files, the unconditional-text file and ``manifest.json``: atomic writes and integrity checks.

Every file is written as ``NAME.partial``, flushed and fsynced, then renamed to ``NAME`` (and the folder fsynced),
and only then listed in the manifest, which is itself replaced atomically. A reader accepts only files the manifest
lists, with the recorded size, record count and sha256, so a killed run never leaves a shard a reader would take.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "jax-vdit-clip-shards"
VERSION = 1
MANIFEST = "manifest.json"
UNCONDITIONAL = "unconditional.safetensors"
SHARD_PREFIX = "shard-"
SHARD_SUFFIX = ".array_record"
PARTIAL = ".partial"
WRITER_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: cheap random access; latents barely compress
VERIFY_LEVELS = ("sha256", "size", "none")


class DatasetIntegrityError(RuntimeError):
    """A prepared dataset whose files do not match its manifest (missing, truncated, altered)."""


def shard_name(number: int) -> str:
    return f"{SHARD_PREFIX}{number:05d}{SHARD_SUFFIX}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def publish(partial: Path, final: Path) -> None:
    """fsync ``partial``, rename it to ``final``, fsync the folder."""
    _fsync_file(partial)
    os.replace(partial, final)
    fsync_dir(final.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    partial = path.with_name(path.name + PARTIAL)
    partial.write_bytes(data)
    publish(partial, path)
    return path


@dataclass(frozen=True)
class ShardInfo:
    """A complete shard: file name, record count, byte size, sha256 and the clip indices it holds, in order."""

    file: str
    records: int
    bytes: int
    sha256: str
    clips: tuple[int, ...]

    @classmethod
    def from_dict(cls, d: dict) -> ShardInfo:
        return cls(file=d["file"], records=int(d["records"]), bytes=int(d["bytes"]), sha256=d["sha256"],
                   clips=tuple(int(c) for c in d["clips"]))


def write_shard(out_dir: str | os.PathLike, number: int, records: Sequence[bytes], clips: Sequence[int]) -> ShardInfo:
    """Write ``records`` (bytes) as ArrayRecord shard ``number`` atomically; returns its :class:`ShardInfo`."""
    from array_record.python.array_record_module import ArrayRecordWriter

    if len(records) != len(clips) or not records:
        raise ValueError(f"a shard needs one clip index per record and at least one record "
                         f"({len(records)} records, {len(clips)} clips)")
    out_dir = Path(out_dir)
    final = out_dir / shard_name(number)
    partial = final.with_name(final.name + PARTIAL)
    writer = ArrayRecordWriter(str(partial), WRITER_OPTIONS)
    try:
        for record in records:
            writer.write(record)
        if not writer.ok():
            raise OSError(f"ArrayRecord writer failed on {partial}")
    finally:
        writer.close()
    publish(partial, final)
    return ShardInfo(file=final.name, records=len(records), bytes=final.stat().st_size, sha256=sha256_file(final),
                     clips=tuple(int(c) for c in clips))


def count_records(path: str | os.PathLike) -> int:
    """Records in an ArrayRecord file; raises :class:`DatasetIntegrityError` if it cannot be opened."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
    try:
        if not reader.ok():
            raise DatasetIntegrityError(f"{path} is not a readable ArrayRecord file")
        return int(reader.num_records())
    finally:
        reader.close()


@dataclass
class Manifest:
    """The dataset's table of contents (``manifest.json``); see ``docs/data_format.md`` for every field."""

    settings: dict[str, Any]
    total_clips: int
    latent_shape: tuple[int, ...] | None = None
    text_shape: tuple[int, ...] | None = None
    unconditional: dict[str, Any] | None = None  # {"file", "sha256", "bytes"}
    shards: list[ShardInfo] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # {"clip_index", "video", "reason", "detail"}
    sources: dict[str, Any] = field(default_factory=dict)  # informational: where the inputs were read from
    complete: bool = False

    @property
    def num_records(self) -> int:
        return sum(s.records for s in self.shards)

    def done_clips(self) -> set[int]:
        """Clips already decided: written in a complete shard, or skipped."""
        return {c for s in self.shards for c in s.clips} | {int(s["clip_index"]) for s in self.skipped}

    def skip_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[s["reason"]] = counts.get(s["reason"], 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "complete": self.complete,
            "counts": {"clips": self.total_clips, "records": self.num_records, "skipped": len(self.skipped),
                       "skipped_by_reason": self.skip_counts(), "shards": len(self.shards)},
            "latent_shape": None if self.latent_shape is None else list(self.latent_shape),
            "text_shape": None if self.text_shape is None else list(self.text_shape),
            "settings": self.settings,
            "sources": self.sources,
            "unconditional": self.unconditional,
            "shards": [dict(dataclasses.asdict(s), clips=list(s.clips)) for s in self.shards],
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = MANIFEST) -> Manifest:
        if d.get("format") != FORMAT:
            raise DatasetIntegrityError(f"{where} is not a {FORMAT} manifest (format {d.get('format')!r})")
        if d.get("version") != VERSION:
            raise DatasetIntegrityError(f"{where} has format version {d.get('version')}; this code reads {VERSION}")
        try:
            return cls(
                settings=d["settings"], total_clips=int(d["counts"]["clips"]),
                latent_shape=None if d["latent_shape"] is None else tuple(d["latent_shape"]),
                text_shape=None if d["text_shape"] is None else tuple(d["text_shape"]),
                unconditional=d["unconditional"], shards=[ShardInfo.from_dict(s) for s in d["shards"]],
                skipped=list(d["skipped"]), sources=dict(d.get("sources", {})), complete=bool(d["complete"]))
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetIntegrityError(f"{where} is malformed: {err!r}") from err

    def save(self, out_dir: str | os.PathLike) -> Path:
        return atomic_write_bytes(Path(out_dir) / MANIFEST, (json.dumps(self.to_dict(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, data_dir: str | os.PathLike) -> Manifest:
        path = Path(data_dir) / MANIFEST
        if not path.is_file():
            raise DatasetIntegrityError(f"no {MANIFEST} in {data_dir} (not a prepared dataset, or its preparation "
                                        "never finished a shard)")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DatasetIntegrityError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(raw, str(path))


def _check_file(path: Path, size: int, sha256: str, level: str) -> None:
    if not path.is_file():
        raise DatasetIntegrityError(f"{path.name} is listed in the manifest but missing from {path.parent}")
    if level in ("size", "sha256") and path.stat().st_size != size:
        raise DatasetIntegrityError(f"{path.name}: {path.stat().st_size} bytes, the manifest says {size}")
    if level == "sha256" and sha256_file(path) != sha256:
        raise DatasetIntegrityError(f"{path.name}: sha256 differs from the manifest (file altered or corrupted)")


def verify_dataset(data_dir: str | os.PathLike, *, level: str = "sha256", require_complete: bool = True) -> Manifest:
    """Load the manifest and check every listed file (``level``: "sha256" = size + hash + record count,
    "size" = size + record count, "none" = existence only). Raises :class:`DatasetIntegrityError` naming the file."""
    if level not in VERIFY_LEVELS:
        raise ValueError(f"level must be one of {VERIFY_LEVELS}, got {level!r}")
    data_dir = Path(data_dir)
    manifest = Manifest.load(data_dir)
    if require_complete and not manifest.complete:
        raise DatasetIntegrityError(f"{data_dir} is not completely prepared ({manifest.num_records} records so far); "
                                    "rerun prepare-data to finish it, or open it with allow_incomplete=True")
    if not manifest.shards:
        raise DatasetIntegrityError(f"{data_dir} has no shards")
    if manifest.unconditional is None:
        raise DatasetIntegrityError(f"{data_dir}: the manifest lists no unconditional-text file")
    u = manifest.unconditional
    _check_file(data_dir / u["file"], int(u["bytes"]), u["sha256"], level)
    for shard in manifest.shards:
        path = data_dir / shard.file
        _check_file(path, shard.bytes, shard.sha256, level)
        if level != "none":
            n = count_records(path)
            if n != shard.records:
                raise DatasetIntegrityError(f"{shard.file}: {n} records, the manifest says {shard.records}")
    return manifest


def stray_files(out_dir: str | os.PathLike, listed: Iterable[str]) -> list[Path]:
    """Files a killed run may leave: ``*.partial``, and shard files the manifest does not list."""
    listed = set(listed)
    out = []
    for path in sorted(Path(out_dir).iterdir()):
        if path.name.endswith(PARTIAL) or path.name.startswith(SHARD_PREFIX) and path.name.endswith(SHARD_SUFFIX) and path.name not in listed:
            out.append(path)
    return out
