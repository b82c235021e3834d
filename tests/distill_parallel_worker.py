"""Sharded distillation steps, run in subprocesses by ``tests/test_distill_parallel.py``.

``python tests/distill_parallel_worker.py devices``: on 8 fake CPU devices, 2 MLCD and 2 KD steps on a data x seq
mesh with FSDP rules (parameters, gradients, AdamW moments and EMAs split over ``data``) against the same steps on
one device; prints JSON lines, the one-device losses among them (``"check": "reference"``).

``python tests/distill_parallel_worker.py process PID NPROC PORT``: one process of a localhost multi-process run
(CPU collectives, 1 device each): each process feeds only its own rows of the global batch; prints the losses.
"""

from __future__ import annotations

import json
import os
import contextlib
import sys
import tempfile

MODE = sys.argv[1]
if MODE == "devices":
    # a loaded 2-core machine can keep some of the 8 device threads from a collective for longer than the default
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                               " --xla_cpu_collective_call_terminate_timeout_seconds=900"
                               " --xla_cpu_collective_timeout_seconds=900").strip()

import jax  # noqa: E402

# one program at a time on the CPU client: the loop's eager checks (parameter norm, health metrics) are separate
# programs with all-reduces, and dispatching them asynchronously next to the step can interleave the 8 device
# threads' rendezvous differently and hang
jax.config.update("jax_cpu_enable_async_dispatch", False)
if MODE == "process":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, nproc, port = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if nproc > 1:
        jax.distributed.initialize(f"localhost:{port}", num_processes=nproc, process_id=pid)

import numpy as np  # noqa: E402

import pallas_kernels  # noqa: E402
from jax_vdit import parallel  # noqa: E402
from jax_vdit.config import get_preset  # noqa: E402
from jax_vdit.distill.recipe import DistillConfig  # noqa: E402
from jax_vdit.distill.stages import Devices, run_kd, run_mlcd  # noqa: E402
from jax_vdit.model import init_model, random_model  # noqa: E402

CFG = get_preset("tiny")  # 2 layers, 2 heads x 24, 3 x 8 x 8 latents
BATCH = 4


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def models():
    """A random teacher and a different random student (``init_model``'s zero output layer would make both
    losses vanish)."""
    return random_model(CFG, seed=4, scale=0.05), random_model(CFG, seed=3, scale=0.05)


def global_batch(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    return {"latents": rng.standard_normal((BATCH, 4, 3, 8, 8)).astype(np.float32),
            "text": rng.standard_normal((BATCH, 5, CFG.caption_channels)).astype(np.float32),
            "text_mask": np.ones((BATCH, 5), np.int32)}


UNCOND = {"uncond_text": np.zeros((5, CFG.caption_channels), np.float32), "uncond_mask": np.ones((5,), np.int32)}
RECIPE = DistillConfig(batch_size=BATCH, compute_dtype="float32", teacher_dtype="float32", mlcd_steps=2, kd_steps=2,
                       solver_points=10, mlcd_warmup=0, kd_warmup=0, mlcd_lr=1e-3, kd_lr=1e-3, log_every=1,
                       checkpoint_every=100)
SCHEDULE = pallas_kernels.MaskSchedule((pallas_kernels.TileMask.k_m(1, 3), None))


def run_both(devices: Devices, batch_at, run_root: str | None = None, stages: tuple[str, ...] = ("mlcd", "kd")
             ) -> dict:
    """MLCD then KD (``stages``) from fresh models. ``run_root``: the run folders' parent, which every process of a
    multi-process run must share (orbax writes one checkpoint together; on a cluster it is a shared file system);
    default a new temporary folder."""
    out = {}
    with contextlib.ExitStack() as stack:
        tmp = run_root or stack.enter_context(tempfile.TemporaryDirectory())
        if "mlcd" in stages:
            student, teacher = models()
            out["mlcd"] = run_mlcd(student, teacher, batch_at, UNCOND, RECIPE, f"{tmp}/mlcd", devices=devices,
                                   show_progress=False)
        if "kd" in stages:
            student, teacher = models()
            out["kd"] = run_kd(student, teacher, SCHEDULE, batch_at, RECIPE, f"{tmp}/kd", devices=devices,
                               show_progress=False)
    return out


def rel(a, b) -> float:
    a, b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    num = sum(float(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)) for x, y in zip(a, b))
    den = sum(float(np.sum(np.asarray(y, np.float64) ** 2)) for y in b)
    return (num / max(den, 1e-30)) ** 0.5


def devices_check() -> None:
    emit(check="setup", devices=len(jax.devices()))
    ref = run_both(Devices(), global_batch)
    # the one-device run's losses: what a one-process run of `process` mode prints (the two-process test's reference)
    emit(check="reference", mlcd_loss=[r["loss"] for r in ref["mlcd"].history],
         kd_loss=[r["loss"] for r in ref["kd"].history])
    for data, seq in ((4, 2),):  # FSDP over 4-way data and tokens over 2-way seq: all 8 devices, both axes
        mesh = parallel.make_mesh(seq=seq, data=data)
        rules = parallel.DEFAULT_RULES.fsdp().for_model(init_model(CFG, seed=3))
        devices = Devices(mesh, rules, lambda b, mesh=mesh, rules=rules: parallel.shard_local_batch(b, mesh, rules))
        got = run_both(devices, global_batch)
        for stage in ("mlcd", "kd"):
            state = got[stage].state
            kernel = state.params["blocks"][0]["ff"]["proj_in"]["kernel"]
            mu = state.opt_state[1][0].mu["blocks"][0]["ff"]["proj_in"]["kernel"]
            ema = state.emas["ema"]["blocks"][0]["ff"]["proj_in"]["kernel"]
            emit(check="sharded_step", stage=stage, mesh=f"{data}x{seq}",
                 loss=[r["loss"] for r in got[stage].history], ref_loss=[r["loss"] for r in ref[stage].history],
                 params_rel=rel(state.params, ref[stage].state.params),
                 emas_rel=rel(state.emas, ref[stage].state.emas),
                 opt_rel=rel(state.opt_state, ref[stage].state.opt_state),
                 param_spec=str(kernel.sharding.spec), mu_spec=str(mu.sharding.spec),
                 ema_spec=str(ema.sharding.spec),
                 shard_shape=list(kernel.addressable_shards[0].data.shape), shape=list(kernel.shape))
    emit(check="done")


def process_check() -> None:
    nproc, pid = jax.process_count(), jax.process_index()
    rows = slice(pid * BATCH // nproc, (pid + 1) * BATCH // nproc)

    def local_batch(step):  # what a ShardLoader of this process returns: its rows of the global batch
        return {k: v[rows] for k, v in global_batch(step).items()}

    recipe_mesh = parallel.make_mesh(seq=1, data=nproc)
    rules = parallel.DEFAULT_RULES.fsdp().for_model(init_model(CFG, seed=3))
    devices = (Devices(recipe_mesh, rules, lambda b: parallel.shard_local_batch(b, recipe_mesh, rules))
               if nproc > 1 else Devices())
    shared = None
    if nproc > 1:  # one folder for both processes, named by the coordinator's port (given by the test)
        shared = os.path.join(tempfile.gettempdir(), f"jax_vdit_two_process_run_{sys.argv[4]}")
        os.makedirs(shared, exist_ok=True)
    # MLCD only: the processes share its data loading, sharded state and checkpoint as KD's would (KD's sharded
    # step is checked on 8 devices above); both stages took about twice as long, on a CI machine's 2 cores
    got = run_both(devices, local_batch, shared, stages=("mlcd",))
    emit(check="process", pid=pid, nproc=nproc, mlcd_loss=[r["loss"] for r in got["mlcd"].history])


if __name__ == "__main__":
    devices_check() if MODE == "devices" else process_check()
