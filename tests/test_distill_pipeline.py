"""End to end on CPU: mp4 videos + captions -> ``vdit prepare-data`` (tiny golden VAE, precomputed embeddings) ->
``vdit distill mlcd`` (tiny golden transformer as teacher) -> ``search-masks`` -> ``kd`` -> sampling the sparse
student through ``jax_vdit.student.load_student``. A killed MLCD run resumes to bit-identical weights; a changed
recipe is refused with the field named."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit import cli, sampling
from jax_vdit.data import ShardLoader, save_caption_embeddings, write_captions_jsonl
from jax_vdit.distill.recipe import DistillConfig
from jax_vdit.distill.stages import mlcd_folder
from jax_vdit.io import load_model
from jax_vdit.student import load_student
from jax_vdit.vae import write_video

GOLDEN = Path(__file__).parent / "data" / "golden"
TEACHER = GOLDEN / "opensora_v12" / "tiny_a"
VAE = GOLDEN / "causalvae_v12" / "tiny_a"
L, C_TEXT = 6, 64  # the tiny teacher's caption_channels
RECIPE = ["batch_size=2", "mlcd_steps=4", "kd_steps=2", "log_every=1", "checkpoint_every=2", "solver_points=10",
          "mlcd_warmup=1", "kd_warmup=1", "calibration_clips=2", "threshold=0.5", "mlcd_lr=1e-3", "kd_lr=1e-3"]

pytestmark = [pytest.mark.skipif(not (TEACHER.is_dir() and VAE.is_dir()), reason="golden folders not available"),
              pytest.mark.filterwarnings("ignore:os.fork")]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """4 moving-square clips (9 frames, 32x48 -> latents (4, 3, 4, 6)) prepared with the command."""
    root = tmp_path_factory.mktemp("videos")
    pairs = []
    for i in range(4):
        frames = np.full((12, 32, 48, 3), 50, np.uint8)
        for f in range(12):
            x = (3 * i + 2 * f) % 36
            frames[f, 8:20, x:x + 12] = (255 * (i % 2), 120, 255 * (i // 2))
        write_video(frames, root / f"v{i}.mp4", fps=8)
        pairs.append((f"v{i}.mp4", f"square {i} moves right"))
    captions = write_captions_jsonl(root / "captions.jsonl", pairs)
    rng = np.random.default_rng(0)
    mask = np.ones((4, L), np.int32)
    mask[:, 4:] = 0
    emb = save_caption_embeddings(root / "emb.safetensors", [c for _, c in pairs],
                                  rng.standard_normal((4, L, C_TEXT)).astype(np.float32), mask,
                                  np.zeros((L, C_TEXT), np.float32), np.eye(1, L, dtype=np.int32)[0])
    out = root / "data"
    assert cli.main(["prepare-data", "--videos", str(root), "--captions", str(captions), "--out", str(out),
                     "--vae", str(VAE), "--embeddings", str(emb), "--frames", "9", "--height", "32", "--width",
                     "48", "--fps", "8", "--shard-size", "2", "--latent-dtype", "float32", "--no-progress"]) == 0
    return out


def _weights(folder: Path) -> bytes:
    return (folder / "diffusion_pytorch_model.safetensors").read_bytes()


def test_pipeline_end_to_end_and_exact_resume(data_dir, tmp_path, capsys):
    runs = tmp_path / "runs"
    # MLCD, uninterrupted, through the command
    assert cli.main(["distill", "mlcd", "--teacher", str(TEACHER), "--data", str(data_dir), "--run",
                     str(runs / "mlcd"), "--no-progress", *_sets(RECIPE)]) == 0
    mlcd_student = runs / "mlcd" / "student"
    info = json.loads((mlcd_student / "student.json").read_text())
    assert info["sampler"] == "consistency" and info["edges"] == [0, 250, 500, 750]
    assert info["guidance_distilled"] == 4.0 and info["stage"] == "mlcd" and info["steps"] == 4
    assert info["recipe"]["mlcd_steps"] == 4 and info["teacher"] == str(TEACHER)
    assert (runs / "mlcd" / "metrics.png").is_file()
    rows = [json.loads(x) for x in (runs / "mlcd" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)
    # the student moved away from the teacher, and load_model reads it
    teacher = load_model(TEACHER, param_dtype="float32")
    student = load_model(mlcd_student, param_dtype="float32")
    k_t, k_s = teacher.blocks[0].attn1.to_q.kernel[...], student.blocks[0].attn1.to_q.kernel[...]
    assert float(jnp.abs(k_t - k_s).max()) > 1e-4

    # killed after step 3 (the newest checkpoint is step 2's), then resumed by the same command: bit-identical
    recipe = DistillConfig.from_dict(info["recipe"])
    part = mlcd_folder(TEACHER, data_dir, runs / "killed", recipe, stop_after=3, show_progress=False)
    assert part.student is None and part.steps == 3
    assert sorted(p.name for p in (runs / "killed" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    assert cli.main(["distill", "mlcd", "--teacher", str(TEACHER), "--data", str(data_dir), "--run",
                     str(runs / "killed"), "--no-progress"]) == 0  # the recorded recipe is reused
    assert _weights(runs / "killed" / "student") == _weights(mlcd_student)

    # resuming with another recipe is refused, naming the field
    capsys.readouterr()
    assert cli.main(["distill", "mlcd", "--teacher", str(TEACHER), "--data", str(data_dir), "--run",
                     str(runs / "mlcd"), "--set", "guidance=3.0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "guidance: 4.0 -> 3.0" in err and "cannot resume" in err

    # mask search over the tiny model's 2 layers (3 latent frames)
    assert cli.main(["distill", "search-masks", "--student", str(mlcd_student), "--data", str(data_dir),
                     "--run", str(runs / "search")]) == 0  # recipe inherited from the student's student.json
    report = json.loads((runs / "search" / "mask_search.json").read_text())
    from jax_vdit.distill import candidate_masks

    assert np.array(report["errors"]).shape == (2, len(candidate_masks(3)))
    for layer, row in zip(report["layers"], report["errors"]):  # the sparsest candidate under r, else dense
        ok = [e for e in row if e <= 0.5]
        assert layer["error"] == (ok[0] if ok else 0.0) and (layer["mask"] == "dense") == (not ok)
    searched = runs / "search" / "student"
    assert _weights(searched) == _weights(mlcd_student)
    assert json.loads((searched / "student.json").read_text())["mask_schedule"] is True

    # KD of the masked student
    assert cli.main(["distill", "kd", "--student", str(searched), "--data", str(data_dir), "--run",
                     str(runs / "kd"), "--no-progress"]) == 0
    sparse_dir = runs / "kd" / "student"
    kd_info = json.loads((sparse_dir / "student.json").read_text())
    assert kd_info["stage"] == "kd" and kd_info["mask_schedule"] is True and kd_info["teacher"] == str(TEACHER)
    assert (sparse_dir / "mask_schedule.json").read_text() == (searched / "mask_schedule.json").read_text()

    # sampling the sparse student (its own masks, consistency plan, no CFG)
    st = load_student(sparse_dir, tile_backend="gather")
    assert st.attention.masks is not None and len(st.attention.masks) == 2
    loader = ShardLoader(data_dir, 2, seed=0, process_index=0, process_count=1, verify="size")
    batch = loader.batch_at(0)
    z = sampling.sample(st.model, jnp.asarray(batch["text"]), jnp.asarray(batch["text_mask"]),
                        key=jax.random.key(0), latent_shape=(4, 3, 4, 6), plan=st.plan, attention=st.attention,
                        latent_dtype=jnp.float32)
    assert z.shape == (2, 4, 3, 4, 6) and bool(jnp.all(jnp.isfinite(z)))


def test_lean_mlcd_state_exports_the_trained_weights_with_bf16_first_moments(data_dir, tmp_path):
    """``mlcd_export=student`` keeps no exported EMA (only the loss's target), ``adam_mu_dtype=bfloat16`` keeps
    AdamW's first moment in bf16: the state is 14 instead of 20 bytes a parameter (and is restored from a
    checkpoint, verified), the student written is the trained parameters, and its check samples those weights."""
    import optax

    recipe = DistillConfig.from_dict({k: v for k, v in (item.split("=") for item in RECIPE)})
    lean = DistillConfig(**{**recipe.to_dict(), "mlcd_export": "student", "adam_mu_dtype": "bfloat16",
                            "check_every": 2})
    # killed after step 3 (checkpoint of step 2, bf16 moments in it), then resumed to the end
    part = mlcd_folder(TEACHER, data_dir, tmp_path / "lean", lean, stop_after=3, show_progress=False)
    assert part.student is None
    out = mlcd_folder(TEACHER, data_dir, tmp_path / "lean", lean, show_progress=False)
    assert out.result.resumed_from == 2
    state = out.result.state
    assert set(state.emas) == {"target"}
    adam = [s for s in jax.tree.leaves(state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)]
    assert len(adam) == 1
    assert {x.dtype for x in jax.tree.leaves(adam[0].mu)} == {jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(adam[0].nu)} == {jnp.dtype(jnp.float32)}
    n = sum(x.size for x in jax.tree.leaves(state.params))
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves((state.params, state.opt_state, state.emas)))
    assert abs(state_bytes - 14 * n) < 64  # params 4 + mu 2 + nu 4 + target 4 (+ a few scalar counters)
    # the exported student (bf16, the recipe's compute dtype) is the trained parameters, not the target EMA
    def q_kernel(model) -> np.ndarray:
        return np.asarray(model.blocks[0].attn1.to_q.kernel[...].astype(jnp.bfloat16).astype(jnp.float32))

    exported = q_kernel(load_model(out.student, param_dtype="float32"))
    np.testing.assert_array_equal(exported, q_kernel(out.result.model(None)))
    assert np.abs(exported - q_kernel(out.result.model("target"))).max() > 0
    checks = [json.loads(x) for x in (tmp_path / "lean" / "evals.jsonl").read_text().splitlines()]
    assert [c["step"] for c in checks] == [2, 4]
    last = np.load(tmp_path / "lean" / "samples" / "step0000004.npy")
    assert np.isfinite(last).all()
    assert json.loads((out.student / "student.json").read_text())["recipe"]["mlcd_export"] == "student"


def test_a_run_recorded_before_a_recipe_field_existed_resumes_with_its_default(tmp_path):
    from jax_vdit.distill.recipe import check_resume

    recipe = DistillConfig()
    old = recipe.to_dict()
    del old["mlcd_export"], old["adam_mu_dtype"]  # a recipe.json written before these fields
    (tmp_path / "recipe.json").write_text(json.dumps({"stage": "mlcd", "inputs": {}, "recipe": old}))
    check_resume(tmp_path, {"stage": "mlcd", "inputs": {}, "recipe": recipe.to_dict()})
    with pytest.raises(ValueError, match="mlcd_export: 'ema' -> 'student'"):
        check_resume(tmp_path, {"stage": "mlcd", "inputs": {},
                                "recipe": DistillConfig(mlcd_export="student").to_dict()})


def test_recipe_file_overrides_and_errors(tmp_path, capsys):
    from jax_vdit.distill.recipe import apply_overrides, check_resume, write_run_record

    path = tmp_path / "r.json"
    assert cli.main(["distill", "config", str(path), "--set", "segments=2"]) == 0
    recipe = DistillConfig.load(path)
    assert recipe.segments == 2 and recipe.guidance == 4.0
    assert apply_overrides(recipe, ["fsdp=true", "mlcd_lr=1e-4"]).fsdp is True
    with pytest.raises(ValueError, match="unknown recipe field 'gudiance'"):
        apply_overrides(recipe, ["gudiance=3"])
    with pytest.raises(ValueError, match="batch_size must be a int"):
        apply_overrides(recipe, ["batch_size=two"])
    with pytest.raises(ValueError, match="solver_points .48. must divide 1000"):
        DistillConfig(solver_points=48)
    with pytest.raises(ValueError, match=r"mlcd_export must be one of \('ema', 'target', 'student'\), got 'last'"):
        DistillConfig(mlcd_export="last")
    with pytest.raises(ValueError, match="adam_mu_dtype must be one of"):
        apply_overrides(recipe, ["adam_mu_dtype=float16"])
    write_run_record(tmp_path / "run", "mlcd", {"teacher": "a"}, recipe)
    # bookkeeping fields may change; recipe fields and inputs may not
    write_run_record(tmp_path / "run", "mlcd", {"teacher": "a"}, apply_overrides(recipe, ["log_every=7"]))
    with pytest.raises(ValueError, match=r"inputs.teacher: 'a' -> 'b'.*huber_c"):
        check_resume(tmp_path / "run", {"stage": "mlcd", "inputs": {"teacher": "b"},
                                        "recipe": apply_overrides(recipe, ["huber_c=0.1"]).to_dict()})


def test_toy_world_through_the_same_commands(tmp_path):
    """Toy samples written as shards -> `vdit distill mlcd` on the shipped toy teacher with a ToyBench check; the
    student records its toy world so `vdit toybench` can score it. (The full reproduction: docs/gpu_runbook.md.)"""
    from jax_vdit.data import ShardDataSource
    from jax_vdit.toy import TOY_TEACHER_DIR
    from jax_vdit.toy.models import recorded_world
    from jax_vdit.toy.world import get_config
    from jax_vdit.toy.world.training_set import ToyTrainingSet

    world = recorded_world(TOY_TEACHER_DIR)
    data = tmp_path / "toy"
    assert cli.main(["distill", "toy-data", "--world", world, "--samples", "4", "--shard-size", "3",
                     "--out", str(data)]) == 0
    direct = ToyTrainingSet.generate(get_config(world), 4, seed=1, workers=1)
    source = ShardDataSource(data)
    np.testing.assert_array_equal(source[3]["latents"], direct.latents[3])  # float32 shards: exact samples
    np.testing.assert_array_equal(source.unconditional()["uncond_text"], direct.unconditional()["uncond_text"])
    run = tmp_path / "mlcd"
    assert cli.main(["distill", "mlcd", "--teacher", str(TOY_TEACHER_DIR), "--data", str(data), "--run", str(run),
                     "--no-progress", *_sets(["batch_size=2", "mlcd_steps=1", "compute_dtype=float32",
                                              "check_every=1", "check_prompts=2", "log_every=1"])]) == 0
    evals = [json.loads(x) for x in (run / "evals.jsonl").read_text().splitlines()]
    assert evals[0]["step"] == 1 and 0.0 <= evals[0]["alignment"] <= 1.0
    assert recorded_world(run / "student") == world
    assert load_student(run / "student").plan.num_steps == 4
