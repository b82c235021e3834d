"""What the studies share: the command line they record, how they save a report, a median (min-max) cell."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path


def command_line() -> str:
    """The command that ran this study, as recorded in its report (``python -m experiments.studies.NAME ARGS``)."""
    return f"python -m experiments.studies.{Path(sys.argv[0]).stem} " + " ".join(sys.argv[1:])


def save_report(out: str | Path | None, stem: str, text: str, payload: dict) -> Path | None:
    """Write ``text`` to ``out/stem.md`` and ``payload`` to ``out/stem.json`` (``out`` is created); nothing if
    ``out`` is None. Returns the folder."""
    if out is None:
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    return out


def median_range(values: Sequence[float]) -> str:
    """``median (min-max)`` of ``values`` with three decimals, for a table cell."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
