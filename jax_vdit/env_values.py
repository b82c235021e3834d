"""Settings read from environment variables, checked: a value that does not fit is a ValueError naming the
variable and what it must be, never a silent default. No JAX import (the command's start reads some)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def number_from_env(name: str, default: Any, cast: Callable[[str], Any], ok: Callable[[Any], bool], what: str,
                    environ: Mapping[str, str] | None = None) -> Any:
    """``cast($name)`` (``default`` when unset or empty); a ValueError naming the variable and ``what`` it must
    be when the text does not cast or ``ok(value)`` is false."""
    text = (os.environ if environ is None else environ).get(name, "").strip()
    try:
        value = cast(text) if text else default
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ValueError(f"${name} must be {what}, got {text!r}")
    return value


def choice_from_env(name: str, default: str, choices: Sequence[str],
                    environ: Mapping[str, str] | None = None) -> str:
    """``$name`` (``default`` when unset or empty), one of ``choices``; else a ValueError listing them."""
    value = (os.environ if environ is None else environ).get(name, "").strip() or default
    if value not in choices:
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
        raise ValueError(f"${name} must be {listed}, got {value!r}")
    return value
