"""The VAE's compile processes started before JAX is imported (``jax_vdit.vae.early_compile``): the console entry
imports no JAX; the shape told from ``config.json`` agrees with the pipeline's; the pipeline adopts processes
started for its decode and stops others; a decode the store holds gets a marker, and then nothing starts early."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jax_vdit.vae import early_compile

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict[str, str]:
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **extra)


def test_the_console_entry_and_the_early_start_import_no_jax(golden_dir, tmp_path):
    # what `vdit sample` runs before its early start: the console entry's imports, every subcommand's parser (the
    # converter's included), the arguments, the GPU flags and the early start itself (here on the CPU: nothing to
    # launch, but every check before the launch runs)
    argv = ["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--vae", str(golden_dir / "causalvae_v12" / "tiny_a"),
            "--compile-cache", str(tmp_path / "xla"), "--vae-compile-processes", "1"]
    code = ("import sys, jax_vdit.cli, jax_vdit.vae.early_compile, jax_vdit.vae.compile_worker; "
            "from jax_vdit.cli.sample import start_vae_compile_before_jax; "
            "from jax_vdit.cli.startup import start_weight_prefetch; "
            "from jax_vdit.xla_defaults import add_gpu_compile_flags; "
            f"args = jax_vdit.cli.build_parser().parse_args({argv!r}); add_gpu_compile_flags(); "
            "early = start_vae_compile_before_jax(args); early is not None and early.stop(); "
            "reading = start_weight_prefetch(args); "  # the transformer's weights read from here on
            "print(reading is not None, "
            "sorted(m for m in sys.modules if m == 'jax' or m.startswith(('jax.', 'jaxlib', 'flax'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True []", proc.stdout
    # the package's names still resolve on first use
    import jax_vdit
    import jax_vdit.vae as vae_package

    assert jax_vdit.get_preset("osp-v1.2-29x720p").num_layers == 32
    assert vae_package.TilingConfig.sample_script().tile_latent_min_size == 64
    with pytest.raises(AttributeError, match="no_such_name"):
        jax_vdit.no_such_name  # noqa: B018
    import convert

    assert convert.convert_transformer.__module__ == "convert.transformer"


@pytest.mark.parametrize("size", [(None, None, None), (13, 64, 96), (1, 32, 32), (10, 64, 80), (9, 60, 80)])
def test_the_shape_told_without_jax_agrees_with_the_pipeline(golden_dir, size):
    from jax_vdit.pipeline_startup import decode_shape

    model_dir = golden_dir / "opensora_v12" / "tiny_a"
    assert early_compile.latent_shape_from_config(model_dir, *size) == decode_shape(model_dir, None, size)


def test_no_shape_without_a_release_config(tmp_path):
    assert early_compile.latent_shape_from_config(tmp_path, 29, 720, 1280) is None
    (tmp_path / "config.json").write_text(json.dumps({"sample_size": [90, 160]}))  # no sample_size_t
    assert early_compile.latent_shape_from_config(tmp_path, None, None, None) is None
    assert early_compile.latent_shape_from_config(tmp_path, 29, 720, 1280) is None


def test_the_marker_names_the_decode_and_the_xla_flags(golden_dir, tmp_path):
    vae = golden_dir / "causalvae_v12" / "tiny_a"
    shape = (1, 4, 3, 8, 10)
    base = early_compile.decode_marker(tmp_path, vae, shape, "float32", "uniform", environ={})
    others = [early_compile.decode_marker(tmp_path, vae, (1, 4, 3, 8, 12), "float32", "uniform", environ={}),
              early_compile.decode_marker(tmp_path, vae, shape, "bfloat16", "uniform", environ={}),
              early_compile.decode_marker(tmp_path, vae, shape, "float32", "exact", environ={}),
              early_compile.decode_marker(tmp_path, vae, shape, "float32", "uniform", environ={"XLA_FLAGS": "--a=1"})]
    assert len({base, *others}) == 5 and all(p.parent == tmp_path / early_compile.MARKER_DIR for p in others)
    assert base == early_compile.decode_marker(tmp_path, vae, list(shape), "float32", "uniform", environ={})
    written = early_compile.mark_decode_stored(tmp_path, vae, shape, "float32", "uniform")
    assert written.is_file() and json.loads(written.read_text())["latent_shape"] == list(shape)
    assert [p.name for p in written.parent.iterdir()] == [written.name]  # no partial file left


@pytest.mark.parametrize("value, expected", [("2", 2), ("0", 0), ("-1", 0), ("many", 0), ("auto", 0)])
def test_the_process_count_without_jax(value, expected, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # "auto": no GPU, so no processes (as the command resolves it)
    assert early_compile.processes_before_jax(value) == expected
    assert not early_compile.gpu_host_guess()


def test_nothing_starts_early_where_it_cannot_be_told(golden_dir, tmp_path):
    common = dict(variant=None, frames=None, height=None, width=None, compute_dtype="float32", tiles="uniform",
                  processes="1")
    tiny = str(golden_dir / "opensora_v12" / "tiny_a")
    vae = str(golden_dir / "causalvae_v12" / "tiny_a")
    assert early_compile.start_before_jax(checkpoint=tiny, vae=vae, cache=None, **common) is None  # no cache
    assert early_compile.start_before_jax(checkpoint="owner/repo", vae=vae, cache=str(tmp_path), **common) is None
    assert early_compile.start_before_jax(checkpoint=tiny, vae=None, cache=str(tmp_path), **common) is None  # no vae/
    assert early_compile.start_before_jax(checkpoint=tiny, vae=vae, cache=str(tmp_path),
                                          **{**common, "processes": "0"}) is None
    assert not list(tmp_path.iterdir())


def test_the_pipeline_stops_processes_started_for_another_decode(golden_dir, executable_store_on):
    import jax

    from jax_vdit.pipeline import OpenSoraPipeline

    tiny, vae = golden_dir / "opensora_v12" / "tiny_a", golden_dir / "causalvae_v12" / "tiny_a"
    cache = jax.config.jax_compilation_cache_dir
    early = early_compile.start_before_jax(checkpoint=str(tiny), variant=None, vae=str(vae), frames=13, height=64,
                                           width=80, compute_dtype="float32", tiles="uniform", cache=cache,
                                           processes="1")
    assert early is not None and early.latent_shape == (1, 4, 4, 8, 10)
    pipe = OpenSoraPipeline.from_pretrained(tiny, None, vae=vae, text_encoder=None, param_dtype="float32",
                                            compute_dtype="float32", decode_size=(9, 64, 80),
                                            vae_compile_processes=1, vae_compile_started=early)
    assert all(w.process.poll() is not None for w in early.workers)  # stopped: another size
    assert not pipe.vae_compile_started_used
    (shape, warmup), = pipe._decoder_warmups.items()
    assert shape == (1, 4, 3, 8, 10) and warmup.result().stages > 0
    assert pipe.vae_compile_workers and "error" not in pipe.vae_compile_workers[0], pipe.vae_compile_workers
    # the whole decode is stored now: its marker is written, and nothing would start early for it
    assert early_compile.decode_marker(cache, vae, shape, "float32", "uniform").is_file()
    assert early_compile.start_before_jax(checkpoint=str(tiny), variant=None, vae=str(vae), frames=None,
                                          height=None, width=None, compute_dtype="float32", tiles="uniform",
                                          cache=cache, processes="1") is None


def test_sample_starts_the_vae_compile_before_jax_when_cold_and_not_when_warm(golden_dir, tmp_path):
    """`vdit sample --vae-compile-processes 1` twice in fresh processes: the first starts its compile process
    before importing JAX and the pipeline uses it; the second finds the decode's marker and starts none; both read the transformer's weights
    from the command's start and sample the same latents."""
    rng = np.random.default_rng(0)
    emb = tmp_path / "emb.safetensors"
    save_file({"text": rng.standard_normal((1, 1, 7, 64)).astype(np.float32),
               "text_mask": np.ones((1, 1, 7), np.int32)}, str(emb))
    reports = []
    for run in range(2):
        cmd = [sys.executable, "-c", "import sys; from jax_vdit.cli import console_main; sys.exit(console_main())",
               "sample", str(golden_dir / "opensora_v12" / "tiny_a"),
               "--vae", str(golden_dir / "causalvae_v12" / "tiny_a"), "--embeddings", str(emb),
               "--compile-cache", str(tmp_path / "xla"), "--steps", "2", "--guidance", "1",
               "--out", str(tmp_path / f"run{run}.safetensors"), "--param-dtype", "float32",
               "--compute-dtype", "float32", "--quiet", "--vae-compile-processes", "1"]
        proc = subprocess.run(cmd, cwd=ROOT, env=_env(JAX_VDIT_EXECUTABLE_STORE="1"), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        reports.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = reports
    early = cold["vae_compile_before_jax"]
    assert early["used"] and early["started_s"] < cold["load_s"]
    # where the time before the start went: each part timed, together no more than the start's time
    assert set(early["parts"]) == {"entered_s", "guess_s", "configs_s", "marker_s", "launch_s"}, early
    assert 0 < sum(early["parts"].values()) <= early["started_s"] + 0.02, early
    assert early["jax_imported"] is False, early  # started before the command imported JAX
    assert cold["vae_compile_workers"] and cold["vae_compile_workers"][0]["compiled"] > 0, cold["vae_compile_workers"]
    assert warm["vae_compile_before_jax"] is None and warm["vae_compile_workers"] is None, warm
    assert warm["vae_stages_loaded"] == warm["vae_stages"] > 0, warm
    for report in (cold, warm):  # the startup's parts; the weights were read from the start, the loader took all
        startup = report["startup"]
        assert set(startup) == {"jax_import_s", "imports_s", "backend_s", "backend_wait_s", "before_load_s"}, startup
        assert 0 < startup["jax_import_s"] <= startup["imports_s"] <= startup["before_load_s"] < report["main_s"]
        assert 0 <= startup["backend_wait_s"] <= startup["backend_s"], startup
        read = report["weights_prefetch"]
        assert read["claimed"] and read["started_s"] < report["load_s"], read
        assert read["taken"] + read["taken_from_queue"] == read["tensors_queued"] > 0, read
        assert read["files"] == [str(golden_dir / "opensora_v12" / "tiny_a" / "diffusion_pytorch_model.safetensors")]
    # the warm command (decode stored, no processes started) also copied the tensors read to the device (the CPU
    # here) once the backend was up; the cold one left them on the host (its sampler compile is the longest path)
    assert cold["weights_prefetch"]["place_started_s"] is None and cold["weights_prefetch"]["tensors_placed"] == 0
    read = warm["weights_prefetch"]
    assert read["place_started_s"] is not None and read["taken_placed"] <= read["tensors_placed"], read
    first, second = (load_file(str(tmp_path / f"run{r}.safetensors"))["latents"] for r in range(2))
    np.testing.assert_array_equal(first, second)


def test_the_command_starts_nothing_early_when_switched_off_or_not_decoding(golden_dir, tmp_path, monkeypatch):
    from jax_vdit.cli import build_parser
    from jax_vdit.cli.sample import VAE_COMPILE_BEFORE_JAX_ENV, start_vae_compile_before_jax

    base = ["sample", str(golden_dir / "opensora_v12" / "tiny_a"), "--vae", str(golden_dir / "causalvae_v12" / "tiny_a"),
            "--compile-cache", str(tmp_path / "xla"), "--vae-compile-processes", "1", "--compute-dtype", "float32"]
    parse = build_parser().parse_args
    for extra in (["--latents-only"], ["--vae-warmup", "after-load"], ["--no-compile-cache"]):
        assert start_vae_compile_before_jax(parse(base + extra)) is None, extra
    monkeypatch.setenv(VAE_COMPILE_BEFORE_JAX_ENV, "0")
    assert start_vae_compile_before_jax(parse(base)) is None
    monkeypatch.delenv(VAE_COMPILE_BEFORE_JAX_ENV)
    early = start_vae_compile_before_jax(parse(base))
    try:
        assert early is not None and early.latent_shape == (1, 4, 3, 8, 10) and len(early.workers) == 1
    finally:
        early.stop()
    assert all(w.process.poll() is not None for w in early.workers)
