"""load_vae of a random bf16 release-architecture VAE folder (478 MB; written to /tmp/vae_full if missing), whole
(parts="all") or decoder only (parts="decoder"), in fresh processes, alternating: wall and CPU seconds of the load
(weights placed on the device) and the parameters loaded.
Run: python experiments/results/vae/decoder_only_load_cpu_2026-12-07/run.py [RUNS]"""
import json
import subprocess
import sys
import time
from pathlib import Path

FOLDER = Path("/tmp/vae_full")
ONE = r"""
import json, sys, time
import jax, jax.numpy as jnp
from jax_vdit.io.vae_weights import load_vae
from jax_vdit.vae import param_count
jax.devices()
t, c = time.perf_counter(), time.process_time()
vae = load_vae(sys.argv[1], dtype=jnp.bfloat16, parts=sys.argv[2])
jax.block_until_ready(jax.tree.leaves(__import__("flax").nnx.state(vae)))
print(json.dumps({"parts": sys.argv[2], "wall_s": round(time.perf_counter() - t, 3),
                  "cpu_s": round(time.process_time() - c, 3), "params": param_count(vae)}))
"""


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    if not (FOLDER / "diffusion_pytorch_model.safetensors").is_file():
        import jax.numpy as jnp

        from jax_vdit.io.vae_weights import write_vae_folder
        from jax_vdit.vae import VAEConfig, random_vae

        write_vae_folder(random_vae(VAEConfig(), seed=0, dtype=jnp.bfloat16), FOLDER, dtype="bfloat16")
    rows = []
    for _ in range(runs):
        for parts in ("all", "decoder"):
            out = subprocess.run([sys.executable, "-c", ONE, str(FOLDER), parts], check=True, capture_output=True,
                                 text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    summary = {}
    for parts in ("all", "decoder"):
        mine = [r for r in rows if r["parts"] == parts]
        summary[parts] = {"wall_s": sorted(r["wall_s"] for r in mine), "cpu_s": sorted(r["cpu_s"] for r in mine),
                          "params": mine[0]["params"]}
    print(json.dumps(summary, indent=1))
    Path(__file__).with_name("result.json").write_text(json.dumps(
        {"date": time.strftime("%Y-%m-%d"), "command": "python " + " ".join(sys.argv), "runs": rows,
         "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
