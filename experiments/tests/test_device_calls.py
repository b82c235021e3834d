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


def _fake_run(root: Path, last_step: int) -> Path:
    run = root / "run_x"
    (run / "best_ema").mkdir(parents=True)
    (run / "best_ema" / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    for step in (100, 200):
        (run / "checkpoints" / str(step)).mkdir(parents=True)
        (run / "checkpoints" / str(step) / "state").write_bytes(b"x" * step)
    (run / "metrics.jsonl").write_text(f'{{"loss": 0.1, "step": {last_step}, "steps_per_s": 40.0}}\n')
    (run / "evals.jsonl").write_text('{"step": 100, "alignment": 0.9}\n')
    (run / "train_config.json").write_text("{}")
    return run


def _bring_back(run: Path, last: int, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    env = dict(OUT=str(out), REC_DIR=str(tmp_path / "rec"), FULL_DIR=str(tmp_path / "full"), PATH="/usr/bin:/bin")
    script = f"source {ROOT / 'experiments/device_calls/bring_back.sh'}; bring_back_teacher_run {run} {last} x"
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def test_a_finished_run_brings_back_its_best_teacher(tmp_path):
    import tarfile

    out = _bring_back(_fake_run(tmp_path, 200), 200, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["full_teacher.tgz", "record_x.tgz"]
    with tarfile.open(out / "full_teacher.tgz") as tar:
        assert "full/best_ema/diffusion_pytorch_model.safetensors" in tar.getnames()
    with tarfile.open(out / "record_x.tgz") as tar:
        assert {"rec/metrics.jsonl", "rec/evals.jsonl", "rec/train_config.json"} <= set(tar.getnames())
    assert (tmp_path / "full" / "best_ema" / "diffusion_pytorch_model.safetensors").read_bytes() == b"weights"


def test_an_unfinished_run_brings_back_its_folder_with_only_the_newest_checkpoint(tmp_path):
    import io
    import tarfile

    # 2000 is not reached: "step": 200 must not match a prefix of it, nor 20 match 200
    out = _bring_back(_fake_run(tmp_path, 200), 2000, tmp_path)
    parts = sorted(p for p in out.iterdir() if p.name.startswith("run_x.tgz.part-"))
    assert parts and not (out / "full_teacher.tgz").exists()
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
        names = set(tar.getnames())
    assert "run_x/checkpoints/200/state" in names and not any("checkpoints/100" in n for n in names)
    assert {"run_x/metrics.jsonl", "run_x/best_ema/diffusion_pytorch_model.safetensors"} <= names
    assert not (_bring_back(_fake_run(tmp_path / "b", 200), 20, tmp_path / "b") / "full_teacher.tgz").exists()
