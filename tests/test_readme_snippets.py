"""The python blocks of docs/usage.md run as written, on tiny models.

The release repo id resolves offline to a fake Hugging Face cache (``HF_HUB_CACHE``, ``HF_HUB_OFFLINE=1``) holding
the tiny golden transformer and VAE; ``prompt.safetensors`` holds tiny embeddings; the toy blocks use the shipped
toy models. The blocks run in a subprocess (in order, one namespace), the sequence-parallel block in another one
with 4 fake CPU devices (XLA creates them only if asked before jax is imported, as in tests/test_parallel.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from fake_hub import build_fake_hub_cache, embeddings  # tests/fake_hub.py
from subprocess_flags import child_xla_flags  # tests/subprocess_flags.py

ROOT = Path(__file__).resolve().parents[1]
USAGE = ROOT / "docs" / "usage.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("snippets")
    build_fake_hub_cache(work / "hf_cache")
    save_file(embeddings(1), str(work / "prompt.safetensors"))
    return work


def run_blocks(blocks: list[str], work: Path, devices: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(work / "hf_cache"), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["XLA_FLAGS"] = child_xla_flags(devices if devices > 1 else None)
    script = work / f"snippets_{devices}.py"
    script.write_text("\n\n".join(blocks))
    proc = subprocess.run([sys.executable, str(script)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"docs/usage.md blocks failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def test_usage_has_the_blocks_and_the_side_by_side_table():
    text = USAGE.read_text()
    blocks = python_blocks(text)
    assert len(blocks) == 5 and sum("mesh=" in b for b in blocks) == 1
    for task in ("load", "sample", "negative prompt", "seed", "batch", "save video", "sequence parallel",
                 "distilled student"):
        assert re.search(rf"^\| {task} \|", text, flags=re.M), task


def test_single_device_blocks_run_as_written(workdir):
    blocks = [b for b in python_blocks(USAGE.read_text()) if "mesh=" not in b]
    proc = run_blocks(blocks, workdir)
    video = workdir / "outputs" / "video.mp4"
    assert video.is_file() and json.loads((workdir / "outputs" / "video.mp4.json").read_text())["seed"] == 0
    lines = proc.stdout.splitlines()
    assert "(1, 9, 64, 80, 3)" in lines[0]  # the tiny checkpoint's own size
    assert any(line.startswith("WarmupReport(stages=") for line in lines)  # the decode warm-up block ran
    assert "('a red circle moves left', 0), ('a red circle moves left', 1), ('a blue square moves up', 2)" in lines[1]
    assert lines[2].startswith("consistency 4 [0, 250, 500, 750] None")


def test_sequence_parallel_block_runs_on_4_devices(workdir):
    (block,) = [b for b in python_blocks(USAGE.read_text()) if "mesh=" in b]
    run_blocks([block, "import jax\nassert len(mesh.devices.flat) == 4 == jax.device_count()"], workdir, devices=4)
    latents = load_file(str(workdir / "outputs" / "sp.safetensors"))["latents"]
    assert latents.shape == (1, 4, 3, 8, 10) and np.isfinite(latents).all()


def test_readme_python_blocks_are_run_blocks_of_usage():
    """README.md shows only python blocks that this file runs (copies of docs/usage.md blocks), so they too run
    as written."""
    readme_blocks = python_blocks((ROOT / "README.md").read_text())
    usage_blocks = python_blocks(USAGE.read_text())
    assert readme_blocks, "README.md should show the pipeline"
    for block in readme_blocks:
        assert block in usage_blocks, f"README block not among the tested docs/usage.md blocks:\n{block}"
