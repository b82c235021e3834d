"""The device-call scripts (experiments/device_calls/*.sh) parse, and every kept checkpoint they start from is in the
tree or named as removed (with the commit that restores it) in experiments/checkpoints/README.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "experiments" / "device_calls").glob("*.sh"))
CHECKPOINT_REF = re.compile(r"experiments/checkpoints/([A-Za-z0-9_.-]+)")


def test_there_are_device_call_scripts():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_script_parses(script: Path):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_checkpoint_a_script_names_is_kept_or_recorded_as_removed(script: Path):
    readme = (ROOT / "experiments" / "checkpoints" / "README.md").read_text()
    removed = readme.split("Removed once used", 1)[1] if "Removed once used" in readme else ""
    for name in set(CHECKPOINT_REF.findall(script.read_text())):
        folder = ROOT / "experiments" / "checkpoints" / name
        if folder.is_dir():
            assert (folder / "diffusion_pytorch_model.safetensors").is_file(), f"{script.name}: {name} has no weights"
            assert f"`{name}/`" in readme.split("Removed once used", 1)[0], f"{name} kept but not described"
        else:
            row = next((line for line in removed.splitlines() if f"`{name}/`" in line), None)
            assert row is not None, f"{script.name} starts from {name}, which is neither kept nor recorded as removed"
            assert re.search(r"`[0-9a-f]{7,40}`", row), f"the removed {name} names no commit to restore it from"
