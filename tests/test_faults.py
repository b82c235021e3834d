"""Fault injection (issue 21): damaged checkpoints, unsafe overwrites, bad configs and bad kernel inputs give a
named error (or an identical result), never a silent wrong answer or lost work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit.config import UnsupportedConfigError, config_from_release, get_preset
from jax_vdit.io.checkpoints import (INTEGRITY_NAME, OUTPUT_MARKER, load_model_checkpoint, save_model_checkpoint,
                                     save_params_tree)
from jax_vdit.io.integrity import CheckpointIntegrityError, NonFiniteStateError, checksum_numpy, checksums_jax
from jax_vdit.io.key_map import NonFiniteWeightError
from jax_vdit.io.params import pure_params
from jax_vdit.io.release import params_to_release_tensors, release_config_dict, write_release_config
from jax_vdit.model import init_model

CFG = get_preset("tiny").replace(num_layers=1)


@pytest.fixture(scope="module")
def params():
    return jax.tree.map(np.asarray, pure_params(init_model(CFG, seed=0)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, params):
    return save_model_checkpoint(tmp_path_factory.mktemp("ck") / "model", CFG, params)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def _flip(file: Path, offset: int | None = None, mask: int = 0x10) -> None:
    data = bytearray(file.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= mask
    file.write_bytes(bytes(data))


def _same_params(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------------------------------------
# integrity records


def test_numpy_and_device_checksums_agree_and_see_one_bit():
    import ml_dtypes

    rng = np.random.default_rng(0)
    arrays = {"f32": rng.normal(size=(33, 7)).astype(np.float32), "bf16": rng.normal(size=(5,)).astype(ml_dtypes.bfloat16),
              "i32": np.arange(12, dtype=np.int32)}
    on_device = checksums_jax({k: jnp.asarray(v) for k, v in arrays.items()})
    for k, v in arrays.items():
        assert on_device[k].checksum == checksum_numpy(v)
        flipped = v.copy().reshape(-1)
        flipped.view(np.uint8)[3] ^= 1
        assert checksum_numpy(flipped) != checksum_numpy(v)


# ------------------------------------------------------------------------------------------------------------
# model checkpoints (orbax)


def test_model_checkpoint_round_trip_writes_integrity_and_marker(model_dir, params):
    assert (model_dir / INTEGRITY_NAME).is_file() and (model_dir / OUTPUT_MARKER).is_file()
    assert _same_params(pure_params(load_model_checkpoint(model_dir)), params)


def test_nan_written_into_model_checkpoint_is_named(model_dir, tmp_path, params):
    """Overwrite the main group's data with a NaN in one array (a valid orbax tree): the checksum names it; without
    the integrity file the finiteness check still names it."""
    bad = _copy(model_dir, tmp_path / "bad")
    main = {k: v for k, v in params.items() if k != "blocks"}
    main["proj_out"] = dict(main["proj_out"], bias=main["proj_out"]["bias"].copy())
    main["proj_out"]["bias"][0] = np.nan
    shutil.rmtree(bad / "params" / "main")
    save_params_tree(bad / "params" / "main", main)
    with pytest.raises(CheckpointIntegrityError, match="proj_out/bias"):
        load_model_checkpoint(bad)
    (bad / INTEGRITY_NAME).unlink()
    with pytest.warns(UserWarning, match="no jax_vdit_integrity.json"), \
            pytest.raises(NonFiniteWeightError, match="proj_out/bias"):
        load_model_checkpoint(bad)


def test_flipped_byte_in_model_data_is_an_error(model_dir, tmp_path):
    bad = _copy(model_dir, tmp_path / "bad")
    _flip(_largest_file(bad / "params"))
    with pytest.raises(CheckpointIntegrityError, match="bad"):
        load_model_checkpoint(bad)


def test_changed_model_config_file_is_an_error(model_dir, tmp_path):
    bad = _copy(model_dir, tmp_path / "bad")
    text = (bad / "jax_vdit_model.json").read_text()
    (bad / "jax_vdit_model.json").write_text(text.replace("1e-06", "1e-05"))
    with pytest.raises(CheckpointIntegrityError, match="jax_vdit_model.json"):
        load_model_checkpoint(bad)


def test_save_refuses_non_finite_parameters(tmp_path, params):
    broken = jax.tree.map(np.copy, params)
    broken["blocks"][0]["attn1"]["to_q"]["kernel"][0, 0] = np.inf
    with pytest.raises(NonFiniteWeightError, match="attn1/to_q/kernel"):
        save_model_checkpoint(tmp_path / "out", CFG, broken)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))


# ------------------------------------------------------------------------------------------------------------
# train-state checkpoints


def _state(params, tx=None):
    from jax_vdit.training import TrainConfig, init_state, make_optimizer

    cfg = TrainConfig(steps=10, learning_rate=1e-3)
    tx = make_optimizer(cfg)
    return init_state(jax.tree.map(jnp.asarray, params), cfg, tx), cfg


def _saved_steps(directory: Path, params, steps=(1, 2)) -> None:
    from jax_vdit.training import StateCheckpoints, TrainState

    state, cfg = _state(params)
    ckpts = StateCheckpoints(directory, keep=5)
    for step in steps:
        shifted = jax.tree.map(lambda a, s=step: a + s if jnp.issubdtype(a.dtype, jnp.floating) else a, state.params)
        ckpts.save(TrainState(jnp.asarray(step, jnp.int32), shifted, state.opt_state,
                              {"ema": shifted}), {"train_config": cfg.to_dict(), "recipe": {"batch_size": 8}})
    ckpts.close()


def test_non_finite_ema_is_never_checkpointed(tmp_path, params):
    from jax_vdit.training import StateCheckpoints, TrainState

    state, cfg = _state(params)
    ema = jax.tree.map(lambda a: a, state.emas["ema"])
    ema["proj_out"]["bias"] = ema["proj_out"]["bias"].at[0].set(jnp.nan)
    ckpts = StateCheckpoints(tmp_path / "checkpoints", keep=2)
    with pytest.raises(NonFiniteStateError, match=r"emas.*proj_out.*bias"):
        ckpts.save(TrainState(jnp.asarray(3, jnp.int32), state.params, state.opt_state, {"ema": ema}), {})
    assert ckpts.latest_step() is None
    ckpts.close()


@pytest.mark.parametrize("damage", ["flip", "empty", "truncate"])
def test_damaged_latest_train_checkpoint_falls_back_with_a_warning(tmp_path, params, damage):
    from jax_vdit.training import StateCheckpoints

    directory = tmp_path / "checkpoints"
    _saved_steps(directory, params)
    latest = directory / "2"
    if damage == "flip":
        _flip(_largest_file(latest / "state"))
    elif damage == "empty":
        shutil.rmtree(latest)
        latest.mkdir()
    else:
        data = _largest_file(latest / "state")
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 3])
    like, _ = _state(params)
    ckpts = StateCheckpoints(directory, keep=5)
    with pytest.warns(UserWarning, match=r"resuming from step 1.*step 2"):
        state, meta, step = ckpts.restore_newest_intact(like)
    ckpts.close()
    assert step == 1 and int(state.step) == 1
    expected = jax.tree.map(lambda a: a + 1 if jnp.issubdtype(a.dtype, jnp.floating) else a, like.params)
    assert _same_params(state.params, expected)
    assert not latest.exists() and list((tmp_path / "checkpoints_damaged").iterdir())


def test_every_train_checkpoint_damaged_is_an_error(tmp_path, params):
    from jax_vdit.training import StateCheckpoints

    directory = tmp_path / "checkpoints"
    _saved_steps(directory, params, steps=(1,))
    _flip(_largest_file(directory / "1" / "state"))
    like, _ = _state(params)
    ckpts = StateCheckpoints(directory, keep=5)
    with pytest.raises(CheckpointIntegrityError, match="no intact checkpoint.*step 1"):
        ckpts.restore_newest_intact(like)
    ckpts.close()


def test_resume_with_other_settings_is_refused_naming_the_fields(tmp_path, params):
    from jax_vdit.training import TrainConfig, check_resume_config

    _saved_steps(tmp_path / "checkpoints", params, steps=(1,))
    same = TrainConfig(steps=10, learning_rate=1e-3)
    check_resume_config(tmp_path, same, {"recipe": {"batch_size": 8}})  # same settings: fine
    check_resume_config(tmp_path, TrainConfig(steps=20, learning_rate=1e-3, log_every=7), {})  # extending: fine
    with pytest.raises(ValueError, match=r"train_config.learning_rate: 0.001 -> 0.01"):
        check_resume_config(tmp_path, TrainConfig(steps=10, learning_rate=1e-2), {})
    with pytest.raises(ValueError, match=r"recipe.batch_size: 8 -> 16"):
        check_resume_config(tmp_path, same, {"recipe": {"batch_size": 16}})
    check_resume_config(tmp_path / "new_run", same, {})  # a new run: nothing to compare


def test_train_teacher_command_refuses_a_changed_resume_before_rendering_data(tmp_path, params, capsys):
    from jax_vdit.cli import main

    _saved_steps(tmp_path / "run" / "checkpoints", params, steps=(1,))
    code = main(["train-teacher", "--run", str(tmp_path / "run"), "--world", "toy-tiny-5x16x16", "--model", "toy-tiny",
                 "--steps", "4", "--batch", "16", "--samples", "8"])
    assert code == 2 and "recipe.batch_size: 8 -> 16" in capsys.readouterr().err
    assert not (tmp_path / "run" / "train_config.json").exists()


def test_train_resume_refuses_another_learning_rate_and_keeps_train_config(tmp_path):
    """End to end through ``train``: the stored train_config.json is not overwritten by a refused resume."""
    from jax_vdit.training import TrainConfig, train

    def objective(model, batch, key, context):
        return jnp.mean(jnp.square(model.proj_out.bias[...])), {}

    cfg = TrainConfig(steps=1, learning_rate=1e-3, checkpoint_every=1)
    train(init_model(CFG, seed=0), objective, lambda s: {}, cfg, tmp_path, show_progress=False)
    before = (tmp_path / "train_config.json").read_text()
    with pytest.raises(ValueError, match="learning_rate"):
        train(init_model(CFG, seed=0), objective, lambda s: {}, TrainConfig(steps=2, learning_rate=5e-3), tmp_path,
              show_progress=False)
    assert (tmp_path / "train_config.json").read_text() == before


# ------------------------------------------------------------------------------------------------------------
# conversion: overwrite safety, stale partial folders, casts, aliased tensors


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory, params):
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("release") / "tiny"
    write_release_config(CFG, folder)
    save_file(params_to_release_tensors(CFG, params), str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


def _convert(src, out, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convert", str(src), str(out), "--quiet", *extra],
                          capture_output=True, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def test_convert_never_deletes_its_source(release_dir, tmp_path):
    from convert.transformer import convert_transformer

    src = _copy(release_dir, tmp_path / "src")
    run = _convert(src, src, "--overwrite")
    assert run.returncode == 2 and "is the source" in run.stderr
    assert (src / "diffusion_pytorch_model.safetensors").is_file()
    with pytest.raises(ValueError, match="is inside the source"):
        convert_transformer(src, src / "out", overwrite=True, show_progress=False)
    with pytest.raises(ValueError, match="contains the source"):
        convert_transformer(src / "diffusion_pytorch_model.safetensors", tmp_path, config=CFG, overwrite=True,
                            show_progress=False)
    assert sorted(p.name for p in src.iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]


def test_overwrite_replaces_only_our_outputs_and_cleans_stale_partials(release_dir, tmp_path):
    from convert.transformer import convert_transformer

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(FileExistsError, match="not a previous jax-vdit output"):
        convert_transformer(release_dir, foreign, overwrite=True, show_progress=False)
    assert (foreign / "holiday.jpg").is_file()
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"out.partial-{int(dead.stdout)}"  # a conversion killed mid-way
    (stale / "params").mkdir(parents=True)
    convert_transformer(release_dir, out, show_progress=False)
    assert not stale.exists()
    convert_transformer(release_dir, out, overwrite=True, show_progress=False)  # ours: replaced
    assert (out / OUTPUT_MARKER).is_file() and load_model_checkpoint(out) is not None


def test_float16_overflow_is_named(release_dir, tmp_path, params):
    from safetensors.numpy import save_file

    from convert.transformer import convert_transformer
    from jax_vdit.io.release import CastRangeError

    src = tmp_path / "big"
    write_release_config(CFG, src)
    tensors = params_to_release_tensors(CFG, params)
    tensors["proj_out.bias"] = tensors["proj_out.bias"].copy()
    tensors["proj_out.bias"][1] = 1e6
    save_file(tensors, str(src / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CastRangeError, match="'proj_out.bias'.*float16"):
        convert_transformer(src, tmp_path / "out", param_dtype="float16", show_progress=False)
    assert not (tmp_path / "out").exists()
    convert_transformer(src, tmp_path / "out32", param_dtype="float32", show_progress=False)  # fits float32


def test_aliased_safetensors_tensors_are_refused(tmp_path):
    from safetensors.numpy import save_file

    from jax_vdit.io.tensors import CheckpointFormatError, open_tensors

    file = tmp_path / "w.safetensors"
    save_file({"a": np.ones(4, np.float32), "b": np.zeros(4, np.float32)}, str(file))
    raw = file.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["b"]["data_offsets"] = header["a"]["data_offsets"]
    text = json.dumps(header).encode()
    file.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    with pytest.raises(CheckpointFormatError, match="'a'.*'b'.*share data"):
        open_tensors(file)


# ------------------------------------------------------------------------------------------------------------
# configs


def _release(**changes):
    d = release_config_dict(CFG)
    d.update(changes)
    return d


def test_missing_or_null_interpolation_scales_are_derived_as_the_release_does():
    release = release_config_dict(get_preset("osp-v1.2-93x480p"))
    for name in ("interpolation_scale_t", "interpolation_scale_h", "interpolation_scale_w"):
        del release[name]
    cfg = config_from_release(release)  # sample_size [60, 80], sample_size_t 24: 24/16, 60/30, 80/40
    assert (cfg.interpolation_scale_t, cfg.interpolation_scale_h, cfg.interpolation_scale_w) == (1.5, 2.0, 2.0)
    cfg = config_from_release(_release(interpolation_scale_h=None, sample_size=[90, 160], sample_size_t=9))
    assert cfg.interpolation_scale_h == 3.0 and cfg.interpolation_scale_t == CFG.interpolation_scale_t
    odd = config_from_release(_release(interpolation_scale_t=None, sample_size_t=17))
    assert odd.interpolation_scale_t == 2.0  # (17 - 1) // 16 + 1


@pytest.mark.parametrize("field, value", [
    ("num_layers", "two"), ("num_layers", 2.7), ("num_layers", True), ("attention_head_dim", None),
    ("interpolation_scale_w", "wide"), ("interpolation_scale_h", -1.0), ("norm_eps", [1e-6]),
    ("sample_size", [90]), ("sample_size", "90x160"), ("sample_size_t", 8.5),
])
def test_wrongly_typed_release_fields_are_named(field, value):
    with pytest.raises(UnsupportedConfigError, match=f"'{field}'"):
        config_from_release(_release(**{field: value}))


def test_release_config_that_is_not_an_object(tmp_path):
    from jax_vdit.config import load_release_config

    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(UnsupportedConfigError, match="JSON object"):
        load_release_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UnsupportedConfigError, match="not valid JSON"):
        load_release_config(tmp_path)


@pytest.mark.parametrize("field, value", [
    ("hidden_size", "128"), ("hidden_size", 12.5), ("hidden_size_mult", [1, "2", 4, 4]), ("double_z", "yes"),
    ("encoder_resnet_blocks", "ResnetBlock2D"), ("scaling_factor", None), ("attn_resolutions", ["a"]),
])
def test_wrongly_typed_vae_fields_are_named(field, value):
    from jax_vdit.vae.config import VAEConfig, VAEConfigError

    raw = VAEConfig.tiny().to_dict()
    raw[field] = value
    with pytest.raises(VAEConfigError, match=f"'{field}'"):
        VAEConfig.from_dict(raw)
    with pytest.raises(VAEConfigError, match="JSON object"):
        VAEConfig.from_dict([raw])


# ------------------------------------------------------------------------------------------------------------
# kernels, VAE, embeddings


@pytest.mark.parametrize("backend", ["cpu", "reference", "gather", "triton"])
@pytest.mark.parametrize("scale", [-0.5, 0.0, float("nan"), float("inf")])
def test_invalid_scale_is_rejected_on_every_backend(backend, scale):
    from pallas_kernels import TileMask, tile_attention

    q = jnp.ones((1, 8, 1, 8), jnp.float32)
    with pytest.raises(ValueError, match="scale"):
        tile_attention(q, q, q, TileMask.full(2), tokens_per_frame=4, backend=backend, scale=scale, interpret=True)


def test_cpu_backend_with_a_valid_scale_matches_the_reference():
    from pallas_kernels import tile_attention

    q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 8, 2, 8))
    mask = np.array([[True, False], [True, True]])
    args = dict(tokens_per_frame=4, scale=0.3)
    np.testing.assert_allclose(tile_attention(q, k, v, mask, backend="cpu", **args),
                               tile_attention(q, k, v, mask, backend="reference", **args), atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 8, 1, 8), (1, 8, 0, 8), (1, 8, 1, 0)])
def test_empty_attention_inputs_are_rejected(shape):
    from pallas_kernels import tile_attention

    q = jnp.ones(shape, jnp.float32)
    with pytest.raises(ValueError, match="empty"):
        tile_attention(q, q, q, np.eye(2, dtype=bool), tokens_per_frame=4, backend="cpu")


def test_vae_refuses_zero_latent_frames():
    from flax import nnx

    from jax_vdit.vae.config import VAEConfig
    from jax_vdit.vae.model import CausalVAE
    from jax_vdit.vae.pipeline import decode_latents_to_video
    from jax_vdit.vae.runtime import decode, encode

    vae = nnx.eval_shape(lambda: CausalVAE(VAEConfig.tiny(), rngs=nnx.Rngs(0)))  # no weights needed
    with pytest.raises(ValueError, match="empty along t"):
        decode(vae, jnp.zeros((1, 4, 0, 4, 4)))
    with pytest.raises(ValueError, match="empty along t"):
        decode_latents_to_video(vae, jnp.zeros((1, 4, 0, 4, 4)))
    with pytest.raises(ValueError, match="empty along T"):
        encode(vae, jnp.zeros((1, 3, 0, 16, 16)))


def test_garbage_embeddings_file_is_named(tmp_path):
    from jax_vdit.text_encoder import TextConditioningError, load_embeddings

    file = tmp_path / "prompts.safetensors"
    file.write_bytes(os.urandom(64))
    with pytest.raises(TextConditioningError, match="prompts.safetensors"):
        load_embeddings(file)


# ------------------------------------------------------------------------------------------------------------
# random damage: a named error or an identical result, never a silent change

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_DAMAGE = st.tuples(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True), st.integers(1, 255))


def _damage(folder: Path, pick: float, where: float, mask: int) -> Path:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    file = files[int(pick * len(files))]
    if file.stat().st_size:
        _flip(file, int(where * file.stat().st_size), mask)
    return file


@settings(max_examples=int(os.environ.get("FAULT_EXAMPLES", 12)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=_DAMAGE)
def test_random_byte_damage_of_a_model_checkpoint(model_dir, params, tmp_path_factory, damage):
    bad = _copy(model_dir, tmp_path_factory.mktemp("damaged") / "model")
    _damage(bad, *damage)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = pure_params(load_model_checkpoint(bad))
    except (CheckpointIntegrityError, NonFiniteWeightError) as err:
        assert str(bad) in str(err) or "jax_vdit" in str(err)
        return
    assert _same_params(loaded, params)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=_DAMAGE)
def test_random_byte_damage_of_a_train_checkpoint(params, tmp_path_factory, damage):
    from jax_vdit.training import StateCheckpoints

    directory = tmp_path_factory.mktemp("run") / "checkpoints"
    _saved_steps(directory, params, steps=(1,))
    _damage(directory / "1", *damage)
    like, _ = _state(params)
    ckpts = StateCheckpoints(directory, keep=5)
    try:
        state, _ = ckpts.restore(like, 1)
    except CheckpointIntegrityError as err:
        assert "step 1" in str(err)
        return
    finally:
        ckpts.close()
    expected = jax.tree.map(lambda a: a + 1 if jnp.issubdtype(a.dtype, jnp.floating) else a, like.params)
    assert _same_params(state.params, expected) and int(state.step) == 1
