"""The host finite check (jax_vdit.io.integrity.count_non_finite_numpy) in one pass over the whole array (as before
2026-12-07) against in cache-sized chunks (now), on 239M bfloat16 values (the release VAE's parameter count) with
three non-finite entries; best and all of 3 runs each, alternating.
Run: python experiments/results/vae/finite_check_cpu_2026-12-07/run.py"""
import os
import platform
import time

import ml_dtypes
import numpy as np

from jax_vdit.io.integrity import count_non_finite_numpy


def one_pass(a):  # the code before the change
    bits = np.ascontiguousarray(a).reshape(-1).view(np.uint16)
    return int(np.count_nonzero((bits & np.uint16(0x7F80)) == 0x7F80))


values = np.random.default_rng(0).standard_normal(239_000_000 // 4, dtype=np.float32).astype(ml_dtypes.bfloat16)
values = np.concatenate([values] * 4)
values[[5, 1 << 18, values.size - 1]] = [np.inf, -np.inf, np.nan]
times = {"one pass": [], "chunks": []}
for _ in range(3):
    for name, fn in (("one pass", one_pass), ("chunks", count_non_finite_numpy)):
        t = time.perf_counter()
        count = fn(values)
        times[name].append(round(time.perf_counter() - t, 3))
        assert count == 3, count
print(f"{platform.machine()}, {os.cpu_count()} CPU cores, numpy {np.__version__}, ml_dtypes {ml_dtypes.__version__}; "
      f"{values.size} bfloat16 values")
for name, ts in times.items():
    print(f"{name}: best {min(ts)} s, all {ts}")
