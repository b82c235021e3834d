"""Caption files: which video goes with which caption.

Two layouts are read:

* JSONL (any file whose first non-blank character is ``{``): one JSON object per line,
  ``{"video": "relative/path.mp4", "caption": "a dog runs on a beach"}``; blank lines are ignored.
* The Open-Sora-Plan annotation layout (first non-blank character ``[``): a JSON list of objects with ``path`` and
  ``cap``, where ``cap`` is a string or a list of strings (the first is used). Other keys are ignored.

Either layout accepts either pair of key names. Video paths are relative to the videos folder (absolute paths are
kept). Malformed input raises :class:`CaptionFileError` naming the file and the line (JSONL) or item (JSON list).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PATH_KEYS = ("video", "path")
_CAPTION_KEYS = ("caption", "cap")


class CaptionFileError(ValueError):
    """A caption file that cannot be parsed; the message names the file and the line or item."""


@dataclass(frozen=True)
class CaptionEntry:
    """One clip to prepare: ``index`` (position in the caption file, 0-based; the clip's id in the dataset),
    ``video`` (path as written in the file), ``caption``, and ``where`` (e.g. "line 3") for messages."""

    index: int
    video: str
    caption: str
    where: str


def _entry(obj: Any, index: int, where: str, file: Path) -> CaptionEntry:
    if not isinstance(obj, dict):
        raise CaptionFileError(f"{file}, {where}: expected a JSON object, got {type(obj).__name__}")
    video = next((obj[k] for k in _PATH_KEYS if k in obj), None)
    caption = next((obj[k] for k in _CAPTION_KEYS if k in obj), None)
    if video is None or caption is None:
        raise CaptionFileError(f"{file}, {where}: needs keys 'video' and 'caption' (or 'path' and 'cap'); "
                               f"found {sorted(obj)}")
    if isinstance(caption, list):
        if not caption:
            raise CaptionFileError(f"{file}, {where}: 'cap' is an empty list")
        caption = caption[0]
    if not isinstance(video, str) or not video:
        raise CaptionFileError(f"{file}, {where}: the video path must be a non-empty string, got {video!r}")
    if not isinstance(caption, str):
        raise CaptionFileError(f"{file}, {where}: the caption must be a string, got {type(caption).__name__}")
    return CaptionEntry(index=index, video=video, caption=caption, where=where)


def read_captions(path: str | os.PathLike) -> list[CaptionEntry]:
    """Parse a caption file (JSONL or Open-Sora-Plan JSON list) into entries in file order."""
    path = Path(path)
    if not path.is_file():
        raise CaptionFileError(f"caption file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CaptionFileError(f"{path}: not UTF-8 text ({err})") from err
    stripped = text.lstrip()
    entries: list[CaptionEntry] = []
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise CaptionFileError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
        for i, obj in enumerate(items):
            entries.append(_entry(obj, len(entries), f"item {i}", path))
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise CaptionFileError(f"{path}, line {lineno}: invalid JSON ({err.msg} at column {err.colno})") from err
            entries.append(_entry(obj, len(entries), f"line {lineno}", path))
    if not entries:
        raise CaptionFileError(f"{path}: no captions")
    return entries


def write_captions_jsonl(path: str | os.PathLike, pairs: list[tuple[str, str]]) -> Path:
    """Write ``[(video, caption), ...]`` as a JSONL caption file (UTF-8, one object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"video": v, "caption": c}, ensure_ascii=False) + "\n" for v, c in pairs),
                    encoding="utf-8")
    return path
