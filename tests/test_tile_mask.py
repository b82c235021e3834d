"""TileMask and MaskSchedule: families, kept-tile counts, validation errors, hashing, JSON round trips."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pallas_kernels import MaskSchedule, TileMask, kept_tiles_k_m

FAST = settings(max_examples=40, deadline=None)


@FAST
@given(t=st.integers(1, 30), data=st.data())
def test_k_m_kept_tiles_formula_and_structure(t, data):
    k = data.draw(st.integers(0, t))
    m = TileMask.k_m(k, t)
    assert m.kept_tiles == kept_tiles_k_m(k, t) == 2 * k * t - k * k + t - k
    mat = m.matrix
    assert mat.diagonal().all()
    assert mat[:k, :].all() and mat[:, :k].all()
    # every non-global frame attends only to the globals and itself
    for i in range(k, t):
        assert set(np.flatnonzero(mat[i])) == set(range(k)) | {i}
    assert m.density == pytest.approx(m.kept_tiles / t**2)


@pytest.mark.parametrize("spec,t,kept", [("4:4", 8, 52), ("3:5", 8, 44), ("2:6", 8, 34), ("1:7", 8, 22),
                                         ("12:12", 24, 444), ("8:16", 24, 336), ("6:18", 24, 270),
                                         ("4:20", 24, 196), ("3:21", 24, 156)])
def test_paper_table1_kept_tiles(spec, t, kept):
    m = TileMask.from_string(spec, t)
    assert m.num_frames == t and m.kept_tiles == kept and m.name == spec
    assert TileMask.from_string(spec) == m  # T inferred from k + m


def test_full_window_and_custom():
    assert TileMask.full(5).is_full and TileMask.from_string("full", 5) == TileMask.full(5)
    w = TileMask.window(1, 6, num_global=1)
    mat = w.matrix
    for i in range(6):
        for j in range(6):
            assert mat[i, j] == (abs(i - j) <= 1 or i == 0 or j == 0)
    assert TileMask.from_string("window:1:1", 6) == w
    arr = np.eye(4, dtype=bool)
    arr[3, 0] = True
    c = TileMask.from_array(arr)
    assert np.array_equal(c.matrix, arr) and c.kept_tiles == 5
    assert c.key_frames(3) == (0, 3)


def test_hashable_and_static_jit_argument():
    a, b = TileMask.k_m(1, 4), TileMask.from_array(TileMask.k_m(1, 4).matrix)
    assert a == b and hash(a) == hash(b)  # the name does not take part in equality
    assert len({a, b, TileMask.full(4)}) == 2

    calls = []

    def f(x, mask):
        calls.append(1)
        return x * mask.kept_tiles

    g = jax.jit(f, static_argnums=1)
    assert float(g(jnp.float32(1), a)) == a.kept_tiles
    g(jnp.float32(2), b)
    assert len(calls) == 1  # equal masks hit the same cache entry


def test_pretty_printer():
    text = TileMask.k_m(1, 3).pretty()
    assert "1:2" in text and "kept 7/9" in text
    rows = text.splitlines()[1:]
    assert rows == ["q  0 ###", "q  1 ##.", "q  2 #.#"]
    assert str(TileMask.full(2)).startswith("TileMask full")


@pytest.mark.parametrize("bad,match", [
    (np.ones((2, 3), bool), "square"),
    (np.ones((2, 2, 2), bool), "2-D"),
    (np.ones((3, 3), np.int32), "boolean"),
    (np.array([[True, False], [False, False]]), r"empty rows: query frame\(s\) \[1\]"),
    (np.zeros((0, 0), bool), "at least one frame"),
])
def test_invalid_matrices(bad, match):
    with pytest.raises(ValueError, match=match):
        TileMask.from_array(bad)


@pytest.mark.parametrize("spec,t,match", [
    ("1:7", 9, "k \\+ m = 8 frames but num_frames = 9"),
    ("a:b", None, "two integers"),
    ("1:2:3", None, "unknown mask spec"),
    ("full", None, "needs num_frames"),
    ("window:x", 4, "integers"),
])
def test_invalid_specs(spec, t, match):
    with pytest.raises(ValueError, match=match):
        TileMask.from_string(spec, t)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="k must be an int in"):
        TileMask.k_m(5, 4)
    with pytest.raises(ValueError, match="num_frames must be a positive int"):
        TileMask.full(0)
    with pytest.raises(ValueError, match="T\\*T"):
        TileMask(2, b"\x01\x01\x01")


def test_traced_matrix_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="concrete"):
        jax.jit(lambda m: TileMask.from_array(m).kept_tiles)(jnp.ones((2, 2), bool))


@FAST
@given(t=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_json_value_round_trip_random(t, seed):
    rng = np.random.default_rng(seed)
    mat = rng.random((t, t)) < 0.4
    mat[np.arange(t), rng.integers(0, t, t)] = True  # no empty row
    m = TileMask.from_array(mat)
    assert TileMask.from_json_value(json.loads(json.dumps(m.to_json_value()))) == m


def test_mask_schedule_json_and_file_round_trip(tmp_path):
    sched = MaskSchedule((None, TileMask.from_string("1:7"), TileMask.full(8), TileMask.window(1, 8, 1),
                          TileMask.from_array(np.eye(8, dtype=bool))))
    assert len(sched) == 5 and sched[0] is None and sched[1].name == "1:7" and sched.num_frames == 8
    assert 0 < sched.density < 1
    obj = json.loads(sched.to_json())
    assert obj["layers"][:3] == [None, "1:7", "full"] and isinstance(obj["layers"][4], list)
    assert MaskSchedule.from_json(sched.to_json()) == sched
    path = tmp_path / "sub" / "schedule.json"
    sched.save(path)
    assert MaskSchedule.load(path) == sched
    assert [p.name for p in path.parent.iterdir()] == ["schedule.json"]  # no temporary file left behind
    assert hash(sched) == hash(MaskSchedule.load(path))
    assert "layer   1: 1:7" in sched.pretty()


def test_mask_schedule_errors():
    with pytest.raises(ValueError, match="same number of frames"):
        MaskSchedule((TileMask.full(2), TileMask.full(3)))
    with pytest.raises(ValueError, match="layer 0: expected a TileMask"):
        MaskSchedule(("1:7",))
    with pytest.raises(ValueError, match="has 2 layers, asked for layer 5"):
        MaskSchedule.dense(2)[5]
    with pytest.raises(ValueError, match="not valid JSON"):
        MaskSchedule.from_json("{")
    with pytest.raises(ValueError, match="'layers' list"):
        MaskSchedule.from_json('{"num_frames": 8}')
    with pytest.raises(ValueError, match="layer 1: .*empty rows"):
        MaskSchedule.from_json('{"num_frames": 2, "layers": [null, ["10", "00"]]}')
    with pytest.raises(ValueError, match="layer 0: mask spec '1:7' has k \\+ m = 8"):
        MaskSchedule.from_json('{"num_frames": 9, "layers": ["1:7"]}')
