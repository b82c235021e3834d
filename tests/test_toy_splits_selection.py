"""Selection never sees the test split (teacher checks, best-EMA choice, mask-search calibration), and
`vdit toybench` reports a split over several noise seeds (mean, sd, per seed, device)."""

from __future__ import annotations

import ast
import gc
import inspect
import json

import numpy as np
import pytest

from jax_vdit.cli import main
from jax_vdit.config import get_preset
from jax_vdit.model import init_model
from jax_vdit.toy import DistillRecipe, TeacherCheck, TeacherRecipe, calibration_batches, export_release_folder, heldout
from jax_vdit.toy import recipes
from jax_vdit.toy.bench import summarise_seeds
from jax_vdit.toy.world import encode_captions, get_config, report_split, validation_split
from jax_vdit.toy.world.training_set import ToyTrainingSet

TINY = "toy-tiny-5x16x16"


def test_recipes_module_cannot_name_the_test_split():
    """Structural: the selection code imports only the validation accessor."""
    gc.collect()  # no finalizer may run inside ast.parse (CPython 3.11 then can raise a recursion-depth SystemError)
    gc.disable()
    try:
        tree = ast.parse(inspect.getsource(recipes))
    finally:
        gc.enable()
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "validation_split" in names
    assert not names & {"report_split", "_test_set", "TestSplit", "reserved_keys", "test_seed"}


def test_teacher_check_refuses_the_test_split(tmp_path):
    world = get_config(TINY)
    with pytest.raises(TypeError, match="got the test split"):
        recipes._teacher_check_fn(TeacherCheck(), report_split(world, "test"), tmp_path)
    with pytest.raises(TypeError, match="got tuple"):
        recipes._teacher_check_fn(TeacherCheck(), heldout(world), tmp_path)


def test_teacher_checks_and_best_ema_read_only_validation_prompts(monkeypatch, tmp_path):
    world = get_config(TINY)
    seen = []
    real = recipes.sample_specs

    def spy(model, specs, world, **kw):
        seen.append(tuple(specs))
        return real(model, specs, world, **kw)

    monkeypatch.setattr(recipes, "sample_specs", spy)
    recipe = TeacherRecipe(world=TINY, model="toy-tiny", steps=2, batch_size=2, compute_dtype="float32",
                           warmup_steps=0, log_every=1, checkpoint_every=2)
    data = ToyTrainingSet.generate(world, 8, workers=1)
    recipes.train_teacher(recipe, tmp_path / "run", data=data, show_progress=False,
                          check=TeacherCheck(every=1, prompts=3, steps=1))
    assert len(seen) == 2 and all(s == validation_split(world).take(3) for s in seen)
    test_keys = report_split(world, "test").keys
    assert not {s.key for specs in seen for s in specs} & test_keys
    assert (tmp_path / "run" / recipes.BEST_EMA / "check.json").is_file()


class _FixedModel:
    """Stands in for a RunResult: its EMA model is ``model``."""

    def __init__(self, model):
        self._model = model

    def model(self, ema=None):
        return self._model


def test_teacher_check_averages_its_noise_seeds_and_keeps_each_one(monkeypatch, tmp_path):
    """Two seeds: two sampling passes with keys 1234 and 1235, the alignment of the check (and the best-EMA
    choice) is their mean, each seed's alignment is kept in the row and in best_ema/check.json."""
    import jax

    world = get_config(TINY)
    keys = []

    def fake_sample(model, specs, world, *, key, **kw):
        keys.append(int(jax.random.key_data(key)[-1]))
        return np.full((len(specs), 1), float(keys[-1]))

    def fake_bench(videos, specs, world):  # an alignment that depends on the noise seed
        seed = float(videos[0, 0])
        return {"alignment": 0.8 + (seed - 1234) * 0.1, "direction_acc": 0.5, "overall": 0.7}

    monkeypatch.setattr(recipes, "sample_specs", fake_sample)
    monkeypatch.setattr(recipes, "toybench", fake_bench)
    model = init_model(get_preset("toy-tiny", compute_dtype="float32"))
    run = recipes._teacher_check_fn(TeacherCheck(every=1, prompts=2, steps=1, seeds=2), validation_split(world),
                                    tmp_path)
    row = run(5, _FixedModel(model))
    assert keys == [1234, 1235]
    assert row["alignment"] == pytest.approx(0.85) and row["is_best"] == 1.0
    assert row["alignment_seed1234"] == pytest.approx(0.8) and row["alignment_seed1235"] == pytest.approx(0.9)
    saved = json.loads((tmp_path / recipes.BEST_EMA / "check.json").read_text())
    assert saved["step"] == 5 and saved["noise_seeds"] == [1234, 1235]
    assert saved["alignment"] == pytest.approx(0.85) and saved["alignment_per_seed"] == pytest.approx([0.8, 0.9])


def test_a_resumed_run_refuses_other_check_settings(tmp_path):
    world = get_config(TINY)
    recipes._teacher_check_fn(TeacherCheck(prompts=2, seeds=1), validation_split(world), tmp_path)
    recorded = json.loads((tmp_path / recipes.CHECK_SETTINGS).read_text())
    assert recorded == {"prompts": 2, "steps": 100, "guidance": 4.0, "seed": 1234, "seeds": 1}
    # the same settings (another check interval) resume; other seeds or prompts would compare unlike checks
    recipes._teacher_check_fn(TeacherCheck(every=7, prompts=2, seeds=1), validation_split(world), tmp_path)
    with pytest.raises(ValueError, match=r"seeds 1 -> 3.*same --check-\* flags"):
        recipes._teacher_check_fn(TeacherCheck(prompts=2, seeds=3), validation_split(world), tmp_path)
    with pytest.raises(ValueError, match="prompts 2 -> 4"):
        recipes._teacher_check_fn(TeacherCheck(prompts=4, seeds=1), validation_split(world), tmp_path)


@pytest.mark.parametrize("field", ["seeds", "prompts", "steps", "every"])
def test_teacher_check_refuses_counts_below_one(field):
    with pytest.raises(ValueError, match=f"TeacherCheck.{field} must be >= 1"):
        TeacherCheck(**{field: 0})


def test_calibration_inputs_never_include_a_validation_or_test_prompt():
    """The sign world has 120 scenes, 48 of them reserved: 200 unexcluded draws would hit them."""
    world = get_config("toy-sign-5x16x16")
    recipe = DistillRecipe(world=world.name, calibration_prompts=200)
    (batch,) = calibration_batches(world, recipe, [500])
    text = np.asarray(batch["text"])
    reserved = [s.caption for s in validation_split(world).specs + report_split(world, "test").specs]
    reserved_text, _ = encode_captions(reserved, world)
    match = (np.abs(text[:, None] - reserved_text[None]).max(axis=(-1, -2)) == 0)  # (200, 48)
    assert not match.any()
    # the comparison has power: 200 samples cover most of the 72 scenes left for training
    assert len({t.tobytes() for t in text}) > 50


def test_summarise_seeds_mean_sd_per_seed():
    out = summarise_seeds({0: {"alignment": 0.5, "overall": 0.2}, 1: {"alignment": 0.7, "overall": float("nan")},
                           2: {"alignment": 0.9, "overall": 0.4}})
    assert out["seeds"] == [0, 1, 2]
    assert out["mean"]["alignment"] == pytest.approx(0.7) and out["sd"]["alignment"] == pytest.approx(0.2)
    assert out["mean"]["overall"] == pytest.approx(0.3)  # the NaN seed is left out
    assert out["per_seed"][1]["alignment"] == 0.7
    assert summarise_seeds({3: {"alignment": 0.5}})["sd"]["alignment"] is None
    with pytest.raises(ValueError, match="at least one seed"):
        summarise_seeds({})


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_teacher")
    export_release_folder(init_model(get_preset("toy-tiny", compute_dtype="float32"), seed=0), folder,
                          dtype="float32", world=TINY)
    return folder


def test_toybench_reports_a_split_over_seeds(tiny_teacher, tmp_path, monkeypatch, capsys):
    from jax_vdit import toy

    seen = []
    real = toy.sample_specs

    def spy(model, specs, world, **kw):
        seen.append((tuple(specs), kw["key"]))
        return real(model, specs, world, **kw)

    monkeypatch.setattr(toy, "sample_specs", spy)
    world = get_config(TINY)
    out = tmp_path / "tb.json"
    assert main(["toybench", str(tiny_teacher), "--setting", "ddim:2:none", "--prompts", "3", "--seeds", "0,5",
                 "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    h = saved["header"]
    assert h["split"] == "test" and h["seeds"] == [0, 5] and h["prompts"] == 3 and h["platform"] == "cpu"
    assert h["device_kind"] and "--seeds 0,5" in h["command"]
    assert [s for s, _ in seen] == [report_split(world, "test").take(3)] * 2  # the test split by default
    row = saved["results"]["ddim:2:none"]
    assert list(row["per_seed"]) == ["0", "5"] and row["seeds"] == [0, 5]
    for k in ("alignment", "smoothness", "consistency"):
        vals = [row["per_seed"][s][k] for s in ("0", "5")]
        assert row["mean"][k] == pytest.approx(np.mean(vals))
        assert row["sd"][k] == pytest.approx(np.std(vals, ddof=1))
    assert row["per_seed"]["0"]["smoothness"] != row["per_seed"]["5"]["smoothness"]  # different noise
    assert "test split" in capsys.readouterr().out

    seen.clear()
    assert main(["toybench", str(tiny_teacher), "--setting", "ddim:2:none", "--split", "validation",
                 "--seeds", "1", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["header"]["split"] == "validation" and saved["header"]["prompts"] == 32
    assert [s for s, _ in seen] == [validation_split(world).specs]
    assert saved["results"]["ddim:2:none"]["sd"]["alignment"] is None  # one seed: no sd


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "--seeds must be comma-separated integers"),
    (["--seeds", "1,1"], "no seed twice"),
    (["--prompts", "129"], "test split of 'toy-tiny-5x16x16' has 128 prompts; asked for 129"),
])
def test_toybench_bad_arguments_are_named(tiny_teacher, capsys, args, message):
    assert main(["toybench", str(tiny_teacher), "--setting", "ddim:1:none", *args]) == 2
    assert message in capsys.readouterr().err


def test_toybench_extend_adds_seeds_to_an_earlier_run(tiny_teacher, tmp_path, capsys):
    """`--extend` joins runs of the same evaluation: the result equals one run over all the seeds."""
    one, parts = tmp_path / "one.json", tmp_path / "parts.json"
    base = ["toybench", str(tiny_teacher), "--setting", "ddim:2:none", "--prompts", "3"]
    assert main([*base, "--seeds", "0,1,2", "--json", str(one)]) == 0
    assert main([*base, "--seeds", "0", "--json", str(parts)]) == 0
    assert main([*base, "--seeds", "1,2", "--json", str(parts), "--extend"]) == 0
    whole, joined = json.loads(one.read_text()), json.loads(parts.read_text())
    assert joined["header"]["seeds"] == [0, 1, 2]
    assert [c.split("--seeds ")[1].split()[0] for c in joined["header"]["commands"]] == ["0", "1,2"]
    assert joined["results"] == whole["results"]
    assert "noise seeds [0, 1, 2]" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "noise seeds [0] are already in the earlier toybench results"),
    (["--seeds", "3", "--prompts", "2"], "prompts (3 vs 2)"),
    (["--seeds", "3", "--split", "validation"], "split ('test' vs 'validation')"),
    (["--seeds", "3", "--setting", "ddim:1:none"], "settings (['ddim:2:none'] vs ['ddim:1:none'])"),
])
def test_toybench_extend_refuses_a_different_evaluation(tiny_teacher, tmp_path, capsys, args, message):
    out = tmp_path / "tb.json"
    assert main(["toybench", str(tiny_teacher), "--setting", "ddim:2:none", "--prompts", "3", "--seeds", "0",
                 "--json", str(out)]) == 0
    before = out.read_text()
    extra = [] if "--setting" in args else ["--setting", "ddim:2:none"]
    extra += [] if "--prompts" in args or "--split" in args else ["--prompts", "3"]
    assert main(["toybench", str(tiny_teacher), *extra, *args, "--json", str(out), "--extend"]) == 2
    assert message in capsys.readouterr().err
    assert out.read_text() == before  # nothing lost


def test_toybench_extend_needs_an_existing_file(tiny_teacher, tmp_path, capsys):
    assert main(["toybench", str(tiny_teacher), "--setting", "ddim:1:none", "--seeds", "0", "--extend",
                 "--json", str(tmp_path / "none.json")]) == 2
    assert "--extend adds seeds to an existing --json file" in capsys.readouterr().err


def test_extend_seeds_reads_the_checkpoint_of_older_files_from_their_command():
    from jax_vdit.toy.bench import extend_seeds, summarise_seeds

    def run(seed, command, **header):
        return {"header": {"command": command, "world": "w", "split": "test", "prompts": 4, "platform": "cpu",
                           "device_kind": "cpu", "jax": "0.10.2", "seeds": [seed], **header},
                "results": {"s": summarise_seeds({seed: {"alignment": 0.5 + seed / 10}})}}

    old = run(0, "vdit toybench runs/teacher --seeds 0")  # written before headers named the checkpoint
    joined = extend_seeds(old, run(1, "vdit toybench runs/teacher --seeds 1", checkpoint="runs/teacher"))
    assert joined["results"]["s"]["mean"]["alignment"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="checkpoint \\('runs/teacher' vs 'runs/other'\\)"):
        extend_seeds(old, run(1, "vdit toybench runs/other --seeds 1", checkpoint="runs/other"))
