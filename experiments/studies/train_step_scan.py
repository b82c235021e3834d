"""Toy-teacher training step on one GPU: steps/s with the blocks scanned or unrolled, and a profiler trace.

The step is ``jax_vdit.training.make_train_step`` of the toy teacher recipe (``toy-teacher`` model, batch 64,
bf16 compute, the release objective) on 40 training batches already on the device (so the host's data path is not
timed): 10 warm-up steps, 30 timed steps, then 20 steps under ``jax.profiler.trace(TRACE_DIR)``. ``SCAN=1`` (default)
or ``SCAN=0`` sets ``scan_layers`` of the objective's ``AttentionConfig`` and of the ``TrainConfig`` (the step applies
the latter; the record in `experiments/results/train_step/` ran before ``TrainConfig.scan_layers`` existed, when the
objective's setting was the one the step used).

    SCAN=0 python experiments/studies/train_step_scan.py /tmp/trace_unrolled
"""

import sys, time  # noqa: E401

import jax, jax.numpy as jnp  # noqa: E401

from jax_vdit.toy.recipes import TeacherRecipe
from jax_vdit.model import init_model
from jax_vdit.objectives import DiffusionObjective
from jax_vdit.training import ModelParts, make_optimizer, init_state, make_train_step

from jax_vdit.model import AttentionConfig
import os


def main(trace_dir: str) -> None:
    SCAN = os.environ.get("SCAN", "1") == "1"
    print("scan_layers", SCAN)
    r = TeacherRecipe(world="toy-sign-9x24x24-subframe", num_samples=1500, scan_layers=SCAN)
    data = r.training_data(workers=1)
    model = init_model(r.model_config(), seed=0)
    cfg = r.train_config()
    parts = ModelParts(model)
    tx = make_optimizer(cfg, head_dim=48)
    state = init_state(parts.params(), cfg, tx)
    step = make_train_step(parts, DiffusionObjective(attention=AttentionConfig(scan_layers=SCAN)), cfg, tx)
    frozen = data.unconditional() if hasattr(data, "unconditional") else None
    frozen = {k: jnp.asarray(v) for k, v in frozen.items()}
    batches = [{k: jnp.asarray(v) for k, v in data.batch_at(s, 64).items()} for s in range(40)]
    for s in range(10):
        state, m = step(state, batches[s], frozen)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for s in range(10, 40):
        state, m = step(state, batches[s], frozen)
    jax.block_until_ready(state)
    print("steps/s (device-resident batches):", 30 / (time.perf_counter() - t0), flush=True)
    with jax.profiler.trace(trace_dir):
        for s in range(10, 30):
            state, m = step(state, batches[s], frozen)
        jax.block_until_ready(state)
    print("done")


if __name__ == "__main__":
    main(sys.argv[1])
