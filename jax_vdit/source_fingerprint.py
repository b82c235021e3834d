"""A digest of a package's Python sources: what keys of stored programs and markers record of the code that built
them (any change to any ``.py`` file is a new digest). No JAX import: the CLI reads it before JAX starts."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


@functools.lru_cache(maxsize=None)
def source_fingerprint(*package_dirs: str) -> str:
    """SHA-256 over the ``.py`` files under ``package_dirs`` (names and contents): any code change is a new key."""
    digest = hashlib.sha256()
    for root in package_dirs:
        for path in sorted(Path(root).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
