"""Loading release checkpoints: formats, the real key list, and clear errors for bad checkpoints/configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jax_vdit
from jax_vdit.config import (
    PRESETS, config_from_release, get_preset, load_release_config,
)
from jax_vdit.io.tensors import open_tensors
from jax_vdit.io.key_map import NonFiniteWeightError, WeightMismatchError
from jax_vdit.io.release import release_key_map

DATA = Path(__file__).parent / "data"


def _golden_copy(golden_dir, tmp_path, case="tiny_a") -> Path:
    dst = tmp_path / case
    shutil.copytree(golden_dir / "opensora_v12" / case, dst)
    return dst


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    return load_file(folder / "diffusion_pytorch_model.safetensors")


def _forward(model, folder: Path) -> np.ndarray:
    inputs = load_file(folder / "inputs.safetensors")
    return np.asarray(model(inputs["hidden_states"], inputs["timestep"], inputs["encoder_hidden_states"],
                            inputs["encoder_attention_mask"]))


def test_key_map_equals_real_checkpoint_key_list():
    """Every tensor name and shape of the real 2.77B checkpoint, and nothing else."""
    rows = [line.split("\t") for line in (DATA / "opensora_v12_keys.tsv").read_text().splitlines()[1:]]
    real = {name: tuple(int(s) for s in shape.split("x")) for name, shape, _ in rows}
    for preset in ("osp-v1.2-29x720p", "osp-v1.2-93x720p", "osp-v1.2-29x480p", "osp-v1.2-93x480p"):
        rules = release_key_map(PRESETS[preset]).rules
        assert {n: r.source_shape for n, r in rules.items()} == real
    total = sum(int(np.prod(s)) for s in real.values())
    assert total == 2_771_907_856 == PRESETS["osp-v1.2-29x720p"].num_params()


def test_lone_safetensors_needs_config(golden_dir, tmp_path):
    folder = _golden_copy(golden_dir, tmp_path)
    lone = tmp_path / "weights.safetensors"
    shutil.copy(folder / "diffusion_pytorch_model.safetensors", lone)
    with pytest.raises(ValueError, match="pass config="):
        jax_vdit.load_model(lone)
    cfg = load_release_config(folder, compute_dtype="float32")
    model = jax_vdit.load_model(lone, config=cfg)
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    assert np.abs(_forward(model, folder) - expected).max() <= 1e-4


def test_sharded_safetensors_index(golden_dir, tmp_path):
    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, folder / file)
        weight_map.update({k: file for k in keys})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    model = jax_vdit.load_model(folder, compute_dtype="float32")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    assert np.abs(_forward(model, folder) - expected).max() <= 1e-4


@pytest.mark.parametrize("nesting", ["flat", "state_dict", "ema_module"])
def test_pytorch_pickle(golden_dir, tmp_path, nesting):
    torch = pytest.importorskip("torch")
    folder = _golden_copy(golden_dir, tmp_path)
    tensors = {k: torch.from_numpy(v.copy()) for k, v in _tensors(folder).items()}
    obj = {
        "flat": tensors,
        "state_dict": {"state_dict": tensors, "epoch": 3},
        "ema_module": {"ema_state_dict": {f"module.{k}": v for k, v in tensors.items()}},
    }[nesting]
    (folder / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(obj, folder / "model.pt")
    model = jax_vdit.load_model(folder, compute_dtype="float32")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    assert np.abs(_forward(model, folder) - expected).max() <= 1e-4


def test_bf16_safetensors_checkpoint(golden_dir, tmp_path):
    import ml_dtypes

    folder = _golden_copy(golden_dir, tmp_path)
    tensors = {k: v.astype(ml_dtypes.bfloat16) for k, v in _tensors(folder).items()}
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")
    src = open_tensors(folder)
    assert {i.dtype for i in src.infos().values()} == {"bfloat16"}
    model = jax_vdit.load_model(folder, compute_dtype="float32")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    assert np.abs(_forward(model, folder) - expected).max() <= 0.1  # weights rounded to bf16


def test_mismatched_checkpoint_lists_every_problem(golden_dir, tmp_path):
    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    del tensors["transformer_blocks.1.attn2.to_v.bias"]
    del tensors["proj_out.weight"]
    tensors["transformer_blocks.0.ff.net.0.proj.weight"] = np.zeros((10, 192), np.float32)
    tensors["transformer_blocks.7.norm3.weight"] = np.zeros((192,), np.float32)
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(WeightMismatchError) as info:
        jax_vdit.load_model(folder)
    msg = str(info.value)
    assert "2 missing, 1 unexpected, 1 with the wrong shape" in msg
    assert "missing     transformer_blocks.1.attn2.to_v.bias: expected 192" in msg
    assert "missing     proj_out.weight: expected 16x192" in msg
    assert "unexpected  transformer_blocks.7.norm3.weight: found 192" in msg
    assert "shape       transformer_blocks.0.ff.net.0.proj.weight: expected 768x192, found 10x192" in msg


def test_unused_position_buffers_are_ignored(golden_dir, tmp_path):
    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    tensors["pos_embed.pos_embed"] = np.zeros((1, 20, 192), np.float32)
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")
    jax_vdit.load_model(folder)


def test_non_finite_weight_is_named(golden_dir, tmp_path):
    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    tensors["transformer_blocks.0.attn1.to_k.weight"][3, 4] = np.nan
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(NonFiniteWeightError, match="transformer_blocks.0.attn1.to_k.weight"):
        jax_vdit.load_model(folder)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("use_rope", False, "use_rope=False"),
        ("downsampler", "k333_s222", "downsampler='k333_s222'"),
        ("norm_type", "layer_norm", "norm_type='layer_norm'"),
        ("use_additional_conditions", True, "use_additional_conditions=True"),
        ("cross_attention_dim", 4096, "cross_attention_dim=4096"),
        ("some_new_field", 1, "some_new_field=1 \\(unknown field\\)"),
        ("patch_size_t", 2, "patch_size_t=2"),
    ],
)
def test_unsupported_config_fields_are_named(golden_dir, field, value, match):
    release = json.loads((golden_dir / "opensora_v12" / "tiny_a" / "config.json").read_text())
    release[field] = value
    with pytest.raises(ValueError, match=match):
        config_from_release(release)


def test_release_config_mapping(golden_dir):
    cfg = load_release_config(golden_dir / "opensora_v12" / "tiny_a")
    assert (cfg.num_layers, cfg.num_attention_heads, cfg.attention_head_dim, cfg.caption_channels) == (2, 2, 96, 64)
    assert (cfg.interpolation_scale_t, cfg.interpolation_scale_h, cfg.interpolation_scale_w) == (1.0, 1.5, 2.0)
    from jax_vdit.io.release import release_config_dict

    assert config_from_release(release_config_dict(get_preset("osp-v1.2-93x720p"))) == get_preset("osp-v1.2-93x720p")


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        jax_vdit.load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="no weights in"):
        jax_vdit.load_model(tmp_path)


def test_config_can_be_a_preset_or_a_release_json(golden_dir, tmp_path):
    from jax_vdit.io.release import resolve_config

    folder = golden_dir / "opensora_v12" / "tiny_a"
    lone = tmp_path / "w.safetensors"
    shutil.copy(folder / "diffusion_pytorch_model.safetensors", lone)
    by_json = resolve_config(lone, str(folder / "config.json"), {})
    assert by_json.num_attention_heads == 2 and by_json.interpolation_scale_w == 2.0
    assert resolve_config(lone, "osp-v1.2-93x720p", {"compute_dtype": "float32"}).sample_size_t == 24
    model = jax_vdit.load_model(lone, config=str(folder / "config.json"), compute_dtype="float32")
    expected = load_file(folder / "outputs.safetensors")["output_fp32"]
    assert np.abs(_forward(model, folder) - expected).max() <= 1e-4


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16", "float16"])
def test_device_layout_path_equals_the_host_path_bit_for_bit(golden_dir, param_dtype):
    """Loading transposes and casts on the device; the result is exactly the host (NumPy) conversion's."""
    import jax

    from jax_vdit.io.release import _read_rule, resolve_config, stream_release_params

    folder = golden_dir / "opensora_v12" / "tiny_a"
    cfg = resolve_config(folder, None, {"param_dtype": param_dtype})
    source = open_tensors(folder)
    try:
        device = stream_release_params(cfg, source)
        for name, rule in release_key_map(cfg).rules.items():
            node = device
            for k in rule.path:
                node = node[k]
            host = _read_rule(source, name, rule, np.dtype(cfg.param_jnp_dtype))
            got = np.asarray(jax.device_get(node))
            assert got.dtype == host.dtype and got.shape == host.shape, name
            assert np.array_equal(got.view(np.uint8), host.view(np.uint8)), name
    finally:
        source.close()


def test_a_weight_that_overflows_the_load_dtype_is_named(golden_dir, tmp_path):
    from jax_vdit.io.release import CastRangeError

    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    tensors["proj_out.bias"][1] = 1e6
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CastRangeError, match="'proj_out.bias' does not fit float16: its largest magnitude 1e\\+06"):
        jax_vdit.load_model(folder, param_dtype="float16")
    jax_vdit.load_model(folder, param_dtype="bfloat16")  # fits


def test_the_first_non_finite_weight_in_key_order_is_named(golden_dir, tmp_path):
    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    tensors["transformer_blocks.1.ff.net.2.bias"][0] = np.inf
    tensors["transformer_blocks.0.attn2.to_v.weight"][0, 0] = np.nan
    tensors["transformer_blocks.0.attn2.to_v.weight"][1, 1] = np.nan
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")
    with pytest.raises(NonFiniteWeightError, match="'transformer_blocks.0.attn2.to_v.weight' has 2 non-finite"):
        jax_vdit.load_model(folder)


class _SlowSource:
    """A tensor source whose reads take ``delay`` seconds each (sleeping, as a file read waits on the disk)."""

    def __init__(self, n: int, delay: float, concurrent: bool, fail: str | None = None):
        import threading

        self.names = [f"t{i}" for i in range(n)]
        self.delay, self.fail, self.concurrent_reads = delay, fail, concurrent
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def read(self, name: str) -> np.ndarray:
        import threading
        import time

        with self._lock:
            self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if name == self.fail:
            raise OSError(f"disk error in {name}")
        return np.full((3,), int(name[1:]), np.int32)


def test_read_ahead_overlaps_reads_with_the_callers_work_and_keeps_the_order():
    """The loader reads the next tensors while the current one is placed: with reads and the caller's work each
    0.05 s, 12 tensors take about 0.65 s instead of 1.2 s (the bound leaves room for a loaded machine)."""
    import time

    from jax_vdit.io.tensors import read_ahead

    source = _SlowSource(12, 0.05, concurrent=True)
    t0 = time.perf_counter()
    got = []
    for name, value in read_ahead(source, source.names):
        time.sleep(0.05)
        got.append((name, int(value[0])))
    elapsed = time.perf_counter() - t0
    assert got == [(f"t{i}", i) for i in range(12)]
    assert elapsed < 0.95, elapsed
    assert all(t.startswith("tensor-read") for t in source.threads)


def test_read_ahead_reads_in_the_callers_thread_when_the_source_cannot_read_concurrently():
    import threading

    from jax_vdit.io.tensors import read_ahead

    source = _SlowSource(4, 0.0, concurrent=False)
    assert [n for n, _ in read_ahead(source, source.names)] == source.names
    assert source.threads == {threading.current_thread().name}


def test_a_failed_read_ahead_raises_at_its_tensor_with_the_tensors_before_it_delivered():
    from jax_vdit.io.tensors import read_ahead

    source = _SlowSource(8, 0.01, concurrent=True, fail="t5")
    seen = []
    with pytest.raises(OSError, match="disk error in t5"):
        for name, _ in read_ahead(source, source.names):
            seen.append(name)
    assert seen == ["t0", "t1", "t2", "t3", "t4"]


def test_safetensors_reads_are_declared_concurrent_and_torch_reads_are_not():
    from jax_vdit.io.tensors import SafetensorsSource, TorchSource

    assert SafetensorsSource.concurrent_reads is True
    assert not getattr(TorchSource, "concurrent_reads", False)


def test_loading_lays_out_each_block_with_one_shared_program(golden_dir, tmp_path):
    """The device layout runs per parameter group: one program for everything outside the blocks and one that
    every block reuses, so the number of layout programs does not grow with depth (a 32-layer checkpoint had one
    per tensor shape and layout, 54 programs and 4.8 s of compiling cold on an H100). A 4-layer copy of the
    golden model needs the same two programs as its 2 layers and equals them layer for layer."""
    import jax

    from jax_vdit.io import device_layout
    from jax_vdit.io.load import load_model
    from jax_vdit.io.params import pure_params

    folder = _golden_copy(golden_dir, tmp_path)
    tensors = _tensors(folder)
    deeper = dict(tensors)
    for name, value in tensors.items():
        if name.startswith("transformer_blocks."):
            i = int(name.split(".")[1])
            deeper[name.replace(f"transformer_blocks.{i}.", f"transformer_blocks.{i + 2}.", 1)] = value
    save_file(deeper, str(folder / "diffusion_pytorch_model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_layers": 4}))

    device_layout.group_to_layout.clear_cache()
    params = pure_params(load_model(folder))
    assert device_layout.group_to_layout._cache_size() == 2
    blocks = params["blocks"]
    for i in (0, 1):
        for a, b in zip(jax.tree.leaves(blocks[i]), jax.tree.leaves(blocks[i + 2])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32", "float64", "int32"])
def test_non_finite_counts_match_numpy_on_every_16_bit_pattern_and_edge_value(dtype):
    """The finite check that loading runs on every tensor counts NaN and Inf of 16-bit floats on their bits (no
    float32 copy); every one of the 65,536 bit patterns is counted as NumPy's isfinite on float32 says."""
    import ml_dtypes

    from jax_vdit.io.integrity import count_non_finite_numpy, finite_numpy

    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    if np_dtype.itemsize == 2:
        values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np_dtype).reshape(256, 256)
    elif np_dtype.kind == "f":
        info = np.finfo(np_dtype)
        values = np.array([0.0, -0.0, info.tiny / 2, info.max, -info.max, np.inf, -np.inf, np.nan, 1.0], np_dtype)
    else:
        values = np.array([0, -1, 7], np_dtype)
    expected = 0 if np_dtype.kind == "i" else int(values.size - np.isfinite(values.astype(np.float64)).sum())
    assert count_non_finite_numpy(values) == expected
    assert finite_numpy(values) == (expected == 0)
    assert count_non_finite_numpy(values.T) == expected  # a strided view counts the same


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_non_finite_counts_are_the_same_in_chunks_across_their_boundaries(dtype, monkeypatch):
    """Large arrays are counted chunk by chunk (no temporary as large as the array): with chunks of 1,000
    elements, every 16-bit pattern (or a float32 array with NaN and Inf on and beside chunk edges) counts as one
    pass of NumPy's isfinite says."""
    import ml_dtypes

    from jax_vdit.io import integrity

    monkeypatch.setattr(integrity, "_COUNT_CHUNK", 1000)
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    if np_dtype.itemsize == 2:
        values = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np_dtype)
    else:
        values = np.ones(10_500, np_dtype)
        values[[0, 999, 1000, 1001, 5999, 6000, 10_499]] = [np.nan, np.inf, -np.inf, np.nan, np.inf, np.nan, -np.inf]
    expected = int(values.size - np.isfinite(values.astype(np.float64)).sum())
    assert expected > 0
    assert integrity.count_non_finite_numpy(values) == expected
    assert integrity.count_non_finite_numpy(values.reshape(-1, 7 if values.size % 7 == 0 else 1)[::-1]) == expected
