"""The executable store: a warm process loads the VAE's compiled stages from disk without tracing, lowering or
compiling them, gets the same pixels, and never trusts a damaged file or one from another environment."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_vdit import executable_store
from jax_vdit.vae import TilingConfig, clear_compile_cache, compile_log, decode_latents_to_video
from jax_vdit.vae import runtime
from jax_vdit.vae.warmup import precompile_decode

TILES = TilingConfig(tile_sample_min_size=16, tile_latent_min_size=4, tile_sample_min_size_t=5,
                     tile_latent_min_size_t=2, tile_overlap_factor=0.25)
LATENT = (1, 4, 3, 6, 7)


@pytest.fixture
def vae(micro_vae):
    return micro_vae  # tests/conftest.py


@pytest.fixture
def store(executable_store_on):
    """The store on, in a fresh cache folder (tests/conftest.py)."""
    return executable_store_on


def _forget_jax_cache(store: Path) -> None:
    """Empty JAX's persistent cache beside ``store``, so that what compiles next is compiled by XLA: on the CPU an
    executable read from that cache (which another test of this process may have turned on) is not stored."""
    for entry in store.parent.glob("*-cache"):
        entry.unlink()


def _no_lowering(*args, **kwargs):
    raise AssertionError("a stage was traced and lowered although the store holds it")


def test_load_or_compile_lowers_once_per_process_and_a_new_process_reads_the_store(store):
    """One table of this process's executables: the first call lowers and compiles (and stores), later calls reuse
    the executable, and after forget_held (a new process) it is read from the store without lowering; reads are
    counted by kind."""
    _forget_jax_cache(store)
    double = jax.jit(lambda x: 2.0 * x + 1.0)
    x = jnp.arange(4.0)
    lowerings = []

    def lower():
        lowerings.append(1)
        return double.lower(x)

    key = executable_store.store_key(("double", (4,), "float32"))
    assert executable_store.held(key, kind="t") is None
    first = executable_store.load_or_compile(key, lower, extra={"shape": (4,)}, kind="t")
    again = executable_store.load_or_compile(key, lower, kind="t")
    assert (first.source, again.source, len(lowerings)) == ("compiled", "process", 1)
    assert again.executable is first.executable and again.extra == {"shape": (4,)}
    assert executable_store.read_count("t") == 0 and executable_store.has(key)

    executable_store.forget_held()  # a new process
    read = executable_store.load_or_compile(key, lower, kind="t")
    assert read.source == "store" and read.extra == {"shape": (4,)} and len(lowerings) == 1
    assert executable_store.read_count("t") == 1 and executable_store.read_count("other") == 0
    np.testing.assert_array_equal(np.asarray(read.executable(x)), np.asarray(double(x)))


@pytest.mark.parametrize("uniform_tiles", [False, True])
def test_warm_process_loads_every_stage_without_lowering_and_decodes_the_same(vae, store, monkeypatch,
                                                                              uniform_tiles):
    z = jax.random.normal(jax.random.key(0), LATENT)
    tiles = dataclasses.replace(TILES, uniform_tiles=uniform_tiles)  # uniform: stages take the tile's size as data
    cold = precompile_decode(vae, LATENT, tiling=tiles)
    assert cold.compiled == cold.stages > 6 and cold.loaded == 0
    assert len(list(store.glob("*.bin"))) == cold.stages
    reference = decode_latents_to_video(vae, z, tiling=tiles)

    clear_compile_cache()  # a new process, as far as the stage cache knows
    monkeypatch.setattr(runtime, "lower_stage", _no_lowering)
    warm = precompile_decode(vae, LATENT, tiling=tiles)
    assert warm.loaded == warm.stages == cold.stages and warm.compiled == 0
    assert all(e["loaded"] for e in compile_log())
    np.testing.assert_array_equal(decode_latents_to_video(vae, z, tiling=tiles), reference)

    clear_compile_cache()  # the decode alone (no warm-up) also loads instead of lowering
    np.testing.assert_array_equal(decode_latents_to_video(vae, z, tiling=tiles), reference)
    assert len(compile_log()) == cold.stages and all(e["loaded"] for e in compile_log())


def test_a_recorded_decode_plan_loads_every_stage_without_planning_and_decodes_the_same(vae, store, monkeypatch):
    """Once a decode's stages are all stored, their names are recorded; a warm process reads them without tracing
    the decode (planning would hold Python's lock) and decodes the same pixels. A damaged record, or a stage file
    gone, falls back to planning."""
    from jax_vdit.vae import warmup

    z = jax.random.normal(jax.random.key(0), LATENT)
    tiles = dataclasses.replace(TILES, uniform_tiles=True)
    cold = precompile_decode(vae, LATENT, tiling=tiles)
    assert cold.planned and cold.compiled == cold.stages
    (record,) = store.glob("*.decode-plan.json")
    assert len(json.loads(record.read_text())["stages"]) == cold.stages
    reference = decode_latents_to_video(vae, z, tiling=tiles)

    clear_compile_cache()  # a new process, as far as the stage cache knows
    real_plan = warmup.plan_decode

    def no_planning(*args, **kwargs):
        raise AssertionError("the decode was planned although its record and every stage are stored")

    real_lower = runtime.lower_stage
    monkeypatch.setattr(warmup, "plan_decode", no_planning)
    monkeypatch.setattr(runtime, "lower_stage", _no_lowering)
    warm = precompile_decode(vae, LATENT, tiling=tiles)
    assert not warm.planned and warm.loaded == warm.stages == cold.stages and warm.compiled == 0
    np.testing.assert_array_equal(decode_latents_to_video(vae, z, tiling=tiles), reference)
    assert len(compile_log()) == cold.stages and all(e["loaded"] for e in compile_log())
    assert executable_store.read_count("vae-stage") == cold.stages  # each stage read from the store once

    # another latent shape or tiling is another record
    plan_name = warmup._decode_plan_name
    assert store / f"{plan_name(vae, LATENT, tiles)}.json" == record
    assert plan_name(vae, (1, 4, 3, 6, 8), tiles) != record.stem != plan_name(vae, LATENT, TILES)
    # the encoder is no part of it: a decoder-only VAE (what `vdit sample` loads) finds the same record
    from flax import nnx

    from jax_vdit.vae import without_encoder

    assert plan_name(without_encoder(nnx.clone(vae)), LATENT, tiles) == record.stem

    monkeypatch.setattr(warmup, "plan_decode", real_plan)
    monkeypatch.setattr(runtime, "lower_stage", real_lower)
    names = json.loads(record.read_text())["stages"]
    record.write_text("not json")  # a damaged record: planned again (the stages still load from the store)
    clear_compile_cache()
    assert precompile_decode(vae, LATENT, tiling=tiles).planned
    stage_file = store / f"{names[0]}.bin"
    stage_file.unlink()  # a stage gone from the store: planned, compiled again, and the record rewritten
    _forget_jax_cache(store)
    clear_compile_cache()
    again = precompile_decode(vae, LATENT, tiling=tiles)
    assert again.planned and again.compiled >= 1 and stage_file.is_file()
    clear_compile_cache()
    assert not precompile_decode(vae, LATENT, tiling=tiles).planned


def test_a_damaged_file_is_ignored_and_compiled_again(vae, store):
    z = jax.random.normal(jax.random.key(1), LATENT)
    tiles = dataclasses.replace(TILES, uniform_tiles=True)  # fewer programs to compile
    precompile_decode(vae, LATENT, tiling=tiles)
    reference = decode_latents_to_video(vae, z, tiling=tiles)
    victim = sorted(store.glob("*.bin"))[0]
    victim.write_bytes(victim.read_bytes()[:-100])  # truncated
    _forget_jax_cache(store)
    clear_compile_cache()
    executable_store._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = precompile_decode(vae, LATENT, tiling=tiles)
    assert report.compiled == 1 and report.loaded == report.stages - 1
    assert any("checksum mismatch" in str(w.message) and victim.name in str(w.message) for w in caught)
    np.testing.assert_array_equal(decode_latents_to_video(vae, z, tiling=tiles), reference)
    # the recompiled stage was written again, whole
    clear_compile_cache()
    assert precompile_decode(vae, LATENT, tiling=tiles).loaded == report.stages


def test_another_environment_or_code_is_another_key(vae, store, monkeypatch):
    tiles = dataclasses.replace(TILES, uniform_tiles=True)  # fewer programs to compile three times
    assert precompile_decode(vae, LATENT, tiling=tiles).compiled > 0
    clear_compile_cache()
    real = executable_store.environment_fingerprint
    monkeypatch.setattr(executable_store, "environment_fingerprint", lambda: real() + ("another jaxlib",))
    assert precompile_decode(vae, LATENT, tiling=tiles).loaded == 0
    clear_compile_cache()
    monkeypatch.setattr(executable_store, "environment_fingerprint", real)
    monkeypatch.setattr(runtime, "_PACKAGE_DIR", runtime._PACKAGE_DIR.parent / "io")  # other source files
    assert precompile_decode(vae, LATENT, tiling=tiles).loaded == 0


def test_the_store_is_off_without_the_persistent_cache_or_when_switched_off(tmp_path, monkeypatch):
    previous = jax.config.jax_compilation_cache_dir
    try:
        monkeypatch.setenv(executable_store.ENV_SWITCH, "1")
        jax.config.update("jax_compilation_cache_dir", None)
        assert executable_store.store_directory() is None
        jax.config.update("jax_compilation_cache_dir", str(tmp_path))
        assert executable_store.store_directory() == tmp_path / executable_store.SUBDIR
        monkeypatch.setenv(executable_store.ENV_SWITCH, "0")
        assert executable_store.store_directory() is None
        assert executable_store.load("0" * 64) is None
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)


_CHILD = r"""
import hashlib, json, os, sys
os.environ["JAX_VDIT_EXECUTABLE_STORE"] = "1"
import jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
from jax_vdit.vae import TilingConfig, VAEConfig, decode_latents_to_video, random_vae
from jax_vdit.vae.warmup import precompile_decode
tiles = TilingConfig(tile_sample_min_size=16, tile_latent_min_size=4, tile_sample_min_size_t=5,
                     tile_latent_min_size_t=2, tile_overlap_factor=0.25)
vae = random_vae(VAEConfig.micro(), seed=0, dtype=jnp.float32)
report = precompile_decode(vae, (1, 4, 3, 6, 7), tiling=tiles)
frames = decode_latents_to_video(vae, jax.random.normal(jax.random.key(0), (1, 4, 3, 6, 7)), tiling=tiles)
print(json.dumps({"stages": report.stages, "compiled": report.compiled, "loaded": report.loaded,
                  "pixels": hashlib.sha256(frames.tobytes()).hexdigest()}))
"""


def test_a_second_process_loads_every_stage(tmp_path):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "xla")], cwd=root, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = rows
    assert first["compiled"] == first["stages"] > 6 and first["loaded"] == 0, first
    assert second["loaded"] == second["stages"] == first["stages"] and second["compiled"] == 0, second
    assert second["pixels"] == first["pixels"]


# -- the sampler --------------------------------------------------------------------------------------------------
def _sampler_inputs():
    from jax_vdit import sampling

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_sampler import CFG, SHAPE, sampling_model

    model = sampling_model()
    text = jax.random.normal(jax.random.key(11), (1, 5, CFG.caption_channels))
    mask = jnp.ones((1, 5), jnp.int32)
    kwargs = dict(latent_shape=SHAPE, plan=sampling.euler_ancestral(3), negative_text=-text, negative_mask=mask,
                  guidance_scale=3.0, latent_dtype=jnp.float32)
    return sampling, model, text, mask, kwargs


def test_the_sampler_loads_from_the_store_without_tracing_and_samples_the_same(store, monkeypatch):
    sampling, model, text, mask, kwargs = _sampler_inputs()
    monkeypatch.setattr(executable_store, "store_directory", lambda: None)  # the jitted path, for reference
    reference = np.asarray(sampling.sample(model, text, mask, key=jax.random.key(5), **kwargs))
    monkeypatch.undo()
    _forget_jax_cache(store)
    monkeypatch.setenv(executable_store.ENV_SWITCH, "1")
    executable_store.forget_held()
    first = np.asarray(sampling.sample(model, text, mask, key=jax.random.key(5), **kwargs))
    np.testing.assert_array_equal(first, reference)
    assert len(list(store.glob("*.bin"))) == 1

    executable_store.forget_held()  # a new process, as far as this one's executables go

    class NoTracing:
        def lower(self, *args, **kwargs):
            raise AssertionError("the sampler was traced although the store holds it")

        __call__ = lower

    monkeypatch.setattr(sampling, "_sample_jit", NoTracing())
    again = np.asarray(sampling.sample(model, text, mask, key=jax.random.key(5), **kwargs))
    np.testing.assert_array_equal(again, reference)
    steps = []  # the progress loop runs the same stored executable one step per call
    stepped = np.asarray(sampling.sample(model, text, mask, key=jax.random.key(5), progress=steps.append, **kwargs))
    np.testing.assert_array_equal(stepped, reference)
    assert steps == [0, 1, 2] and len(list(store.glob("*.bin"))) == 1


def test_the_sampler_key_tells_programs_apart(store):
    import dataclasses

    import pallas_kernels

    sampling, model, text, mask, kwargs = _sampler_inputs()

    def key(**changes):
        settings = dict(kwargs, **changes)
        prog = sampling._program(model, text, mask, latent_shape=settings["latent_shape"], plan=settings["plan"],
                                 negative_text=settings["negative_text"], negative_mask=settings["negative_mask"],
                                 guidance_scale=settings["guidance_scale"], attention=settings.get(
                                     "attention", sampling.DENSE), latent_dtype=settings["latent_dtype"], mesh=None,
                                 sharding_rules=sampling.parallel.DEFAULT_RULES)
        x = jnp.zeros(prog.batch_shape, prog.statics["latent_dtype"])
        return sampling.sampler_store_key(prog, prog.args(x, jax.random.key(0), 0, 1))

    base = key()
    assert key() == base and key(guidance_scale=5.0) == base  # runtime values are not part of the program
    assert key(latent_shape=(4, 2, 8, 16)) != base and key(latent_dtype=jnp.bfloat16) != base
    assert key(plan=sampling.consistency((0, 500)), negative_text=None, negative_mask=None) != base
    a = pallas_kernels.TileMask(2, bytes([1, 0, 1, 1]), name="custom")  # T = 2 latent frames
    b = pallas_kernels.TileMask(2, bytes([1, 1, 0, 1]), name="custom")  # the same label, other tiles
    att = sampling.AttentionConfig(masks=(a,) * CFG_LAYERS(model), tile_backend="reference")
    key_a = key(attention=att)
    key_b = key(attention=dataclasses.replace(att, masks=(b,) * CFG_LAYERS(model)))
    assert len({base, key_a, key_b}) == 3


def CFG_LAYERS(model) -> int:  # noqa: N802 - reads like the config field it returns
    return model.cfg.num_layers


def test_compile_sampler_reads_and_fills_the_same_store(store, monkeypatch):
    """The ahead-of-time path (``compile_sampler``, used by the benchmarks) stores under the same key as
    ``sample``: each finds what the other compiled."""
    sampling, model, text, mask, kwargs = _sampler_inputs()
    executable_store.forget_held()
    compiled = sampling.compile_sampler(model, text, mask, **kwargs)
    assert compiled.lower_s > 0 and len(list(store.glob("*.bin"))) == 1
    reference = np.asarray(compiled(jax.random.key(5)))
    executable_store.forget_held()

    class NoTracing:
        def lower(self, *args, **kwargs):
            raise AssertionError("traced although the store holds the sampler")

        __call__ = lower

    monkeypatch.setattr(sampling, "_sample_jit", NoTracing())
    loaded = sampling.compile_sampler(model, text, mask, **kwargs)
    assert loaded.lower_s == 0.0
    np.testing.assert_array_equal(np.asarray(loaded(jax.random.key(5))), reference)
    np.testing.assert_array_equal(np.asarray(sampling.sample(model, text, mask, key=jax.random.key(5), **kwargs)),
                                  reference)


_STORE_CHILD = r"""
import json, os, sys
os.environ["JAX_VDIT_EXECUTABLE_STORE"] = "1"
import jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # as `vdit sample` sets it
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
from jax_vdit import executable_store
from jax_vdit.compile_meter import CompileMeter

def f(x):  # a concatenate fusion: the code XLA:CPU loses when it serializes a cache-read executable
    return jnp.tanh(jnp.concatenate([x[:, :8] * 2, x[:, 8:] + 1], axis=1)).sum()

x = jnp.ones((16, 16))
if sys.argv[2] == "compile":
    with CompileMeter() as meter:
        executable_store.compile_and_save("k" * 64, jax.jit(f).lower(x))
    print(json.dumps({"cache_hits": meter.cache_hits, "stored": executable_store.has("k" * 64)}))
else:
    found = executable_store.load("k" * 64)
    print(json.dumps({"value": None if found is None else float(found[0](x))}))
"""


def test_an_executable_read_from_jax_cache_is_not_stored_on_the_cpu(tmp_path):
    """A fresh compile is stored and runs in another process; with the store emptied, the same program read from
    JAX's persistent cache is not stored on XLA:CPU (serialized again it loses its code: the process after it
    failed with ``NOT_FOUND: Function ... not found`` when it ran what the store gave it)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def child(mode: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", _STORE_CHILD, str(tmp_path / "xla"), mode], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    expected = float(np.tanh(np.concatenate([np.full((16, 8), 2.0), np.full((16, 8), 2.0)], axis=1)).sum())
    assert child("compile") == {"cache_hits": 0, "stored": True}
    assert child("run")["value"] == pytest.approx(expected, rel=1e-5)  # a float32 sum of 256 tanh
    for path in (tmp_path / "xla" / executable_store.SUBDIR).glob("*.bin"):
        path.unlink()
    assert child("compile") == {"cache_hits": 1, "stored": False}
    assert child("run") == {"value": None}


def test_the_sampler_key_names_functions_not_their_addresses(store):
    """A ``Linear`` holds ``dot_general`` and ``promote_dtype`` as static attributes; their addresses differ from
    one process to the next, so a key built from ``repr(graphdef)`` never matched in a new process and every warm
    `vdit sample` traced, lowered and compiled the sampler again."""
    import functools

    from flax import nnx

    from jax_vdit import sampling

    graphdef, _ = nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    assert " at 0x" in repr(graphdef)
    text = sampling.graph_description(graphdef)
    assert " at 0x" not in text and re.search(r"<function [\w.]+\.dot_general>", text), text

    other = nnx.Linear(2, 3, dot_general=functools.partial(jax.lax.dot_general), rngs=nnx.Rngs(0))
    assert " at 0x" in sampling.graph_description(nnx.split(other)[0])  # not an attribute itself: kept, not guessed


_HOISTING_CHILD = r"""
import hashlib, json, os, sys
os.environ["JAX_VDIT_EXECUTABLE_STORE"] = "1"
os.environ["JAX_USE_SIMPLIFIED_JAXPR_CONSTANTS"] = "1"  # JAX hoists closed-over constants into arguments
import jax, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
sys.path.insert(0, sys.argv[2])
from test_executable_store import _sampler_inputs
from jax_vdit import executable_store
sampling, model, text, mask, kwargs = _sampler_inputs()
kwargs = dict(kwargs, plan=sampling.consistency((0, 500)), negative_text=None, negative_mask=None)
out = np.asarray(sampling.sample(model, text, mask, key=jax.random.key(5), **kwargs))
print(json.dumps({"problems": executable_store.problems(), "loaded": sampling.samplers_loaded_from_store(),
                  "latents": hashlib.sha256(out.tobytes()).hexdigest()}))
"""


def test_the_sampler_is_stored_where_jax_hoists_constants_into_arguments(tmp_path):
    """Newer JAX passes closed-over constants (RoPE tables, the noise schedule, tile masks) to the executable as
    extra arguments, which ``serialize_executable`` refuses ("serialize_executables with const_args"): on the GPU
    the 1:7 student's sampler was never stored. It is lowered with its constants embedded: stored by the first
    process, loaded by the second, the same latents."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", _HOISTING_CHILD, str(tmp_path / "xla"),
                               str(Path(__file__).parent)], cwd=root, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first, second = rows
    assert first["problems"] == [] and first["loaded"] == 0, first
    assert second["problems"] == [] and second["loaded"] == 1, second
    assert second["latents"] == first["latents"]


class _WithCustomCall:
    """A lowered program whose text also shows ``target`` as a custom call (as a Mosaic GPU kernel's lowering does)."""

    def __init__(self, lowered, target: str):
        self.lowered, self.target = lowered, target

    def as_text(self) -> str:
        return self.lowered.as_text() + f'\n%0 = stablehlo.custom_call @{self.target}() : () -> ()'

    def compile(self):
        return self.lowered.compile()


def test_a_program_with_mosaic_gpu_kernels_is_not_stored_and_a_stale_file_is_removed(store, monkeypatch):
    """With ``$JAX_VDIT_STORE_MOSAIC_GPU=0``, on a GPU a program calling Mosaic GPU kernels is compiled but not
    stored, and says why; other programs are stored. A stored file that does not load is removed after it is
    reported, so later processes do not read it again."""
    monkeypatch.setattr(executable_store, "_platform", lambda: "gpu")
    monkeypatch.setenv(executable_store.KERNEL_RUNTIME_ENV, "0")
    lowered = jax.jit(lambda x: jnp.sin(x) * 3).lower(jnp.ones((4, 4)))
    before = len(executable_store.problems())
    compiled = executable_store.compile_and_save("m" * 64, _WithCustomCall(lowered, "mosaic_gpu_v2"))
    np.testing.assert_allclose(np.asarray(compiled(jnp.ones((4, 4)))), 3 * np.sin(np.ones((4, 4))), rtol=1e-6)
    assert not executable_store.has("m" * 64)
    (said,) = executable_store.problems()[before:]
    assert said.startswith("not stored mmmm") and "mosaic_gpu kernels" in said and "host symbol" in said
    assert said.endswith("because $JAX_VDIT_STORE_MOSAIC_GPU=0")
    executable_store.compile_and_save("p" * 64, _WithCustomCall(lowered, "cu_threefry2x32"))  # not in the list
    assert executable_store.has("p" * 64) and executable_store.load("p" * 64) is not None
    (store / ("p" * 64 + ".bin")).write_bytes(b"not an executable")
    executable_store._warned.clear()
    with pytest.warns(RuntimeWarning, match="ignored unusable file"):
        assert executable_store.load("p" * 64) is None
    assert not executable_store.has("p" * 64)


def test_a_mosaic_gpu_program_is_stored_and_its_runtime_prepared_before_loading(store, monkeypatch):
    """By default a program calling Mosaic GPU kernels is stored, marked, and a process loading it first prepares
    the kernels' runtime (on a GPU: imports jax.experimental.mosaic.gpu, which locates it); other programs load
    without that step. ``$JAX_VDIT_STORE_MOSAIC_GPU=0`` stores none."""
    monkeypatch.setattr(executable_store, "_platform", lambda: "gpu")
    monkeypatch.delenv(executable_store.KERNEL_RUNTIME_ENV, raising=False)
    prepared = []
    monkeypatch.setattr(executable_store, "_prepare_runtime", prepared.append)
    lowered = jax.jit(lambda x: jnp.sin(x) * 3).lower(jnp.ones((4, 4)))
    executable_store.compile_and_save("k" * 64, _WithCustomCall(lowered, "mosaic_gpu_v2"))
    executable_store.compile_and_save("q" * 64, lowered)
    assert executable_store.has("k" * 64) and prepared == []
    loaded, _ = executable_store.load("k" * 64)
    assert prepared == ["mosaic_gpu"]
    np.testing.assert_allclose(np.asarray(loaded(jnp.ones((4, 4)))), 3 * np.sin(np.ones((4, 4))), rtol=1e-6)
    assert executable_store.load("q" * 64) is not None and prepared == ["mosaic_gpu"]
    monkeypatch.setenv(executable_store.KERNEL_RUNTIME_ENV, "0")
    assert not executable_store.stores_kernel_runtime("mosaic_gpu")
    executable_store.compile_and_save("z" * 64, _WithCustomCall(lowered, "mosaic_gpu"))
    assert not executable_store.has("z" * 64)


def test_a_stored_mosaic_gpu_program_that_does_not_load_stops_their_storing(store, monkeypatch):
    """Where a stored Mosaic GPU program fails to load even with its runtime prepared, the file is removed, the
    store records it for these jax versions and stores no more such programs (each warm process would pay the
    failed load), saying why; another jax version tries again."""
    monkeypatch.setattr(executable_store, "_platform", lambda: "gpu")
    monkeypatch.setenv(executable_store.KERNEL_RUNTIME_ENV, "1")

    def fail(target):
        raise RuntimeError("Failed to lookup host symbol (simulated)")

    monkeypatch.setattr(executable_store, "_prepare_runtime", fail)
    lowered = _WithCustomCall(jax.jit(lambda x: jnp.cos(x) + 1).lower(jnp.ones((3,))), "mosaic_gpu")
    executable_store.compile_and_save("f" * 64, lowered)
    assert executable_store.has("f" * 64) and executable_store.stores_kernel_runtime("mosaic_gpu")
    executable_store._warned.clear()
    with pytest.warns(RuntimeWarning, match="ignored unusable file"):
        assert executable_store.load("f" * 64) is None
    assert not executable_store.has("f" * 64)
    assert not executable_store.stores_kernel_runtime("mosaic_gpu")
    assert any("no longer stored" in p for p in executable_store.problems())
    before = len(executable_store.problems())
    compiled = executable_store.compile_and_save("g" * 64, lowered)
    np.testing.assert_allclose(np.asarray(compiled(jnp.ones((3,)))), np.cos(np.ones(3)) + 1, rtol=1e-6)
    assert not executable_store.has("g" * 64)
    assert "not stored gggg" in executable_store.problems()[before]
    monkeypatch.setattr(executable_store, "_versions", lambda: ("9.9.9", "9.9.9"))
    assert executable_store.stores_kernel_runtime("mosaic_gpu")
    monkeypatch.setenv(executable_store.KERNEL_RUNTIME_ENV, "0")
    assert not executable_store.stores_kernel_runtime("mosaic_gpu")  # switched off
