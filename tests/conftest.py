"""Shared test fixtures: paths to golden data, platform checks."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

DATA_DIR = Path(__file__).parent / "data"
GOLDEN_DIR = DATA_DIR / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden reference files (copied verbatim from ../shared/golden)."""
    return GOLDEN_DIR


def has_gpu() -> bool:
    try:
        return jax.default_backend() == "gpu"
    except RuntimeError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_gpu():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
