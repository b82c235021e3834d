"""experiments/bench_load.py: the driver runs end to end on a tiny preset, and its per-tensor baseline loads the
same parameters as the product's grouped loader."""

from __future__ import annotations

import numpy as np


def test_per_tensor_baseline_equals_the_grouped_loader(tmp_path):
    import jax

    from experiments.bench_load import per_tensor_groups, write_random_release_folder
    from jax_vdit.io import release
    from jax_vdit.io.tensors import open_tensors

    written = write_random_release_folder("toy-tiny", tmp_path / "m")
    cfg = release.resolve_config(tmp_path / "m", None, {})
    source = open_tensors(tmp_path / "m")
    grouped = release.stream_release_params(cfg, source)
    per_tensor = release.stream_release_params(cfg, source, groups=per_tensor_groups)
    source.close()
    assert written["tensors"] == len(release.release_key_map(cfg).rules)
    a, b = jax.tree.leaves(grouped), jax.tree.leaves(per_tensor)
    assert len(a) == len(b) == written["tensors"]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert np.isfinite(np.asarray(x, np.float32)).all() and 0 < np.abs(np.asarray(x, np.float32)).max() < 0.07


def test_the_driver_runs_a_child_per_grouping_and_phase(tmp_path):
    """The children are fresh processes (this one has JAX started, so ``main``'s parent set-up is not called)."""
    from experiments.bench_load import run, table

    result = run("toy-tiny", tmp_path)
    rows = {(r["grouping"], r["phase"]): r for r in result["rows"]}
    assert set(rows) == {(g, p) for g in ("grouped", "per_tensor") for p in ("cold", "warm")}
    assert rows["grouped", "cold"]["programs"] == 2 < rows["per_tensor", "cold"]["programs"]
    for g in ("grouped", "per_tensor"):
        assert rows[g, "cold"]["cache_misses"] == rows[g, "cold"]["programs"]  # an empty cache compiles all
        assert rows[g, "warm"]["cache_misses"] == 0  # the second process compiles nothing
    assert "| grouped | cold |" in table(result) and result["tensors"] > 0
