"""Study: wall seconds of load_model on a synthetic 2.77B release checkpoint (fp32, the real key list), loaded twice
in one process with param_dtype bfloat16. Writes the checkpoint to /tmp/synth first (about 11 GB).

    python experiments/studies/load_release_timing.py
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments.convert_synthetic_full import read_key_list, write_streaming_safetensors
from jax_vdit.config import get_preset
from jax_vdit.io.release import write_release_config
src = Path("/tmp/synth/release_29x720p"); src.mkdir(parents=True, exist_ok=True)
w = src / "diffusion_pytorch_model.safetensors"
if not w.exists():
    t = time.perf_counter(); write_streaming_safetensors(w, read_key_list()); print("write", time.perf_counter() - t, flush=True)
    write_release_config(get_preset("osp-v1.2-29x720p"), src)
import jax
from jax_vdit.io import load_model
for i in range(2):
    t = time.perf_counter()
    m = load_model(src, param_dtype="bfloat16", compute_dtype="bfloat16")
    jax.block_until_ready(jax.tree.leaves(m))
    print("load", i, time.perf_counter() - t, flush=True)
    del m
