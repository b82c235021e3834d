"""Study (issue 19): does an executable that JAX read from its persistent compilation cache survive being
serialized again (``jax.experimental.serialize_executable``) and run in another process?

The executable store (``jax_vdit.executable_store``) saves what a compile returned; when JAX's persistent cache
already held the program, that is an executable read from the cache. Three fresh processes share one cache folder:
``compile`` (a cache miss: XLA compiles), ``reserialize`` (a cache hit, serialized to a file), ``run`` (that file
loaded and run). Then, with a new cache folder, ``compile`` serializing straight away (a fresh executable) and
``run``. The program is a small scan with a concatenate fusion. Prints and writes one JSON row per backend.

    python -m experiments.studies.reserialize_cached_executable --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import json, pickle, sys
import jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
from jax.experimental.serialize_executable import deserialize_and_load, serialize

def f(x, y):
    def body(c, _):
        return jnp.tanh(jnp.concatenate([c[:, :8] * 2, c[:, 8:] + 1], axis=1) @ y), None
    return jax.lax.scan(body, x, None, length=4)[0].sum()

x, y = jnp.ones((16, 16)), jnp.eye(16)
mode, blob = sys.argv[2], sys.argv[3]
out = {"mode": mode, "backend": jax.default_backend(), "device": jax.devices()[0].device_kind}
try:
    if mode == "run":
        payload, in_tree, out_tree = pickle.loads(open(blob, "rb").read())
        out["value"] = float(deserialize_and_load(payload, in_tree, out_tree)(x, y))
    else:
        compiled = jax.jit(f).lower(x, y).compile()
        out["value"] = float(compiled(x, y))
        if mode != "compile":
            open(blob, "wb").write(pickle.dumps(serialize(compiled)))
except Exception as err:
    out["error"] = f"{type(err).__name__}: {str(err)[:300]}"
print(json.dumps(out))
"""


def _child(cache: Path, mode: str, blob: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cache), mode, str(blob)], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ))
    if proc.returncode != 0:
        return {"mode": mode, "error": f"exit {proc.returncode}: {proc.stderr[-300:]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="write reserialize_cached_executable.json here (a folder)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reserialize_") as work:
        work = Path(work)
        cached = [_child(work / "cache", "compile", work / "unused"),
                  _child(work / "cache", "reserialize", work / "from_cache.bin"),
                  _child(work / "cache", "run", work / "from_cache.bin")]
        fresh = [_child(work / "cache2", "fresh", work / "fresh.bin"),
                 _child(work / "cache2", "run", work / "fresh.bin")]
    expected = cached[0].get("value")
    row = {"date": time.strftime("%Y-%m-%d"), "command": "python -m experiments.studies.reserialize_cached_executable",
           "backend": cached[0].get("backend"), "device": cached[0].get("device"),
           "read_from_cache_then_serialized_runs": "error" not in cached[2] and cached[2].get("value") == expected,
           "fresh_serialized_runs": "error" not in fresh[1] and fresh[1].get("value") == expected,
           "processes": {"read_from_cache": cached, "fresh": fresh}}
    text = json.dumps(row, indent=1)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"reserialize_cached_executable_{row['backend']}.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
