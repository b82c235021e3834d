"""Multi-device checks of sequence parallelism, run in a subprocess by ``tests/test_parallel.py``.

XLA's fake CPU devices must be requested before jax is imported, so this script sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` itself and prints one JSON object per check on stdout:
``{"check": ..., "mesh": "DxS", "attention": ..., "err": max relative error against one device, ...}``.

    python tests/parallel_worker.py sample grads train hlo errors
"""

from __future__ import annotations

import os
import sys

# 8 fake CPU devices; the two LLVM flags cut CPU compile time ~3x (they do not change float results' semantics)
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import functools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pallas_kernels  # noqa: E402
from jax_vdit import parallel, sampling  # noqa: E402
from jax_vdit.config import ModelConfig  # noqa: E402
from jax_vdit.model import AttentionConfig, init_model  # noqa: E402
from jax_vdit.model.attention import sequence_parallel  # noqa: E402
from jax_vdit.objectives import DiffusionObjective  # noqa: E402
from jax_vdit.training import ModelParts, TrainConfig, objective_for_mesh  # noqa: E402

# 8 heads x 12 dims (RoPE chunks of 4), 2 layers, fp32; latents (4, 4, 8, 8) -> 4 frames x 16 tokens = 64 tokens
CFG = ModelConfig(num_layers=2, num_attention_heads=8, attention_head_dim=12, caption_channels=16,
                  sample_size=(8, 8), sample_size_t=4, param_dtype="float32", compute_dtype="float32")
SHAPE = (4, 4, 8, 8)
TEXT_LEN = 6
MESHES = {"1x1": (1, 1), "1x2": (1, 2), "1x4": (1, 4), "1x8": (1, 8), "2x4": (2, 4), "2x1": (2, 1)}
# per-layer schedules: "mixed-*" = layer 0 dense, layer 1 the paper's 1:3 tile mask (one compile covers both paths)
SCHEDULES = {
    "mixed": (None, pallas_kernels.TileMask.from_string("1:3")),
    "tile": (pallas_kernels.TileMask.from_string("1:3"), pallas_kernels.TileMask.window(1, 4)),
}


def attention(name: str) -> AttentionConfig:
    """``dense``, or ``<schedule>-<tile backend>`` e.g. ``mixed-reference``, ``tile-gather``, ``tile-triton``."""
    if name == "dense":
        return AttentionConfig(dense_backend="xla")
    schedule, backend = name.split("-", 1)
    return AttentionConfig(dense_backend="xla", tile_backend=backend, masks=SCHEDULES[schedule],
                           interpret=backend == "triton")


def model():
    m = init_model(CFG, seed=3)
    m.proj_out.kernel[...] = jax.random.normal(jax.random.key(7), m.proj_out.kernel[...].shape) * 0.05
    return m


def text(batch: int, seed: int):
    k1, k2 = jax.random.split(jax.random.key(seed))
    emb = jax.random.normal(k1, (batch, TEXT_LEN, CFG.caption_channels))
    mask = jnp.ones((batch, TEXT_LEN), jnp.int32).at[:, TEXT_LEN - 2:].set(0)
    return emb, mask


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def mesh_of(name: str):
    data, seq = MESHES[name]
    return parallel.make_mesh(seq=seq, data=data)


# ------------------------------------------------------------------------------------------------------------


def check_sample(meshes, attentions) -> None:
    """Three Euler-ancestral CFG steps (CFG batch 2 = [negative; positive]) on each mesh vs. one device, no mesh."""
    m = model()
    pos, pos_mask = text(1, 11)
    neg, neg_mask = text(1, 12)
    key = jax.random.key(0)

    def run(att, mesh):
        return sampling.sample(m, pos, pos_mask, key=key, latent_shape=SHAPE, plan=sampling.euler_ancestral(3),
                               negative_text=neg, negative_mask=neg_mask, guidance_scale=4.0, attention=att,
                               latent_dtype=jnp.float32, mesh=mesh)

    for att_name in attentions:
        att = attention(att_name)
        ref = np.asarray(run(att, None))
        for mesh_name in meshes:
            t0 = time.perf_counter()
            out = run(att, mesh_of(mesh_name))
            emit(check="sample", mesh=mesh_name, attention=att_name, err=rel_err(out, ref),
                 devices=len(out.sharding.device_set), replicated=bool(out.sharding.is_fully_replicated),
                 finite=bool(np.isfinite(np.asarray(out)).all()), scale=float(np.abs(ref).max()),
                 seconds=round(time.perf_counter() - t0, 2))


def _batch():
    rng = np.random.default_rng(5)
    latents = rng.standard_normal((2,) + SHAPE).astype(np.float32)
    emb, mask = text(2, 13)
    return {"latents": latents, "text": np.asarray(emb), "text_mask": np.asarray(mask)}


FROZEN = {"uncond_text": np.zeros((TEXT_LEN, CFG.caption_channels), np.float32),
          "uncond_mask": np.array([1] + [0] * (TEXT_LEN - 1), np.int32)}


def _rules(name: str) -> parallel.ShardingRules:
    if name == "default":
        return parallel.DEFAULT_RULES
    return parallel.DEFAULT_RULES.with_rules(mlp="seq", heads="data")  # "split": weights stored split


def grad_err(grads, ref_grads) -> float:
    """Max abs gradient difference over all leaves, relative to the largest reference gradient (leaves such as
    the key bias have a zero true gradient: softmax is shift-invariant, so per-leaf ratios are rounding noise)."""
    scale = max(float(np.abs(np.asarray(g)).max()) for g in jax.tree.leaves(ref_grads))
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
               for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads))) / scale


def check_grads(meshes, attentions, rules_name: str = "default") -> None:
    """Loss and every parameter gradient of the diffusion objective (batch 2, caption dropout and offset noise on)
    on each mesh vs. one device without a mesh."""
    rules = _rules(rules_name)
    batch = _batch()
    for att_name in attentions:
        objective = DiffusionObjective(caption_dropout=0.5, attention=attention(att_name))
        parts = ModelParts(model())

        def loss_and_grads(params, batch, frozen, objective, parts=parts):
            def loss(p):
                return objective(parts.merge(p), batch, jax.random.key(4), {"emas": {}, "frozen": frozen})[0]

            return jax.value_and_grad(loss)(params)

        ref_loss, ref_grads = jax.jit(functools.partial(loss_and_grads, objective=objective))(
            parts.params(), batch, FROZEN)
        for mesh_name in meshes:
            t0 = time.perf_counter()
            mesh = mesh_of(mesh_name)
            obj = objective_for_mesh(objective, mesh, rules)
            params = parallel.shard_tree(parts.params(), mesh, rules)
            with jax.set_mesh(mesh):
                loss, grads = jax.jit(functools.partial(loss_and_grads, objective=obj))(
                    params, parallel.shard_batch(batch, mesh, rules), parallel.shard_tree(FROZEN, mesh, rules))
            emit(check="grads", mesh=mesh_name, attention=att_name, rules=rules_name,
                 loss_err=abs(float(loss) - float(ref_loss)) / abs(float(ref_loss)),
                 grad_err=grad_err(grads, ref_grads),
                 sharded_param_leaves=sum(not p.sharding.is_fully_replicated for p in jax.tree.leaves(params)),
                 loss=float(ref_loss), seconds=round(time.perf_counter() - t0, 2))


def check_train(mesh_name: str, att_name: str, rules_name: str = "default") -> None:
    """``training.train(..., mesh=)`` for 3 AdamW steps vs. ``train`` on one device: per-step loss and gradient
    norm, final parameters and EMA. Then the same run on the mesh killed after 2 steps and resumed from its sharded
    checkpoint must end bit-identical to the uninterrupted mesh run. Adam's eps is 1e-3 here so that leaves with a
    zero true gradient (rounding noise) are not blown up to full-size updates by the g / sqrt(v) normalisation."""
    import tempfile

    from jax_vdit.training import train

    # checkpoints at steps 2 and 3 (the last): the killed run's is the one resumed from
    cfg = TrainConfig(steps=3, learning_rate=1e-3, eps=1e-3, emas=(("ema", 0.9),), log_every=1, checkpoint_every=2)
    batch = _batch()
    objective = DiffusionObjective(caption_dropout=0.5, attention=attention(att_name))
    mesh = mesh_of(mesh_name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        def run(name, mesh, **kw):
            return train(model(), objective, lambda step: batch, cfg, Path(tmp) / name, frozen=FROZEN,
                         show_progress=False, mesh=mesh, sharding_rules=_rules(rules_name), **kw)

        ref, out = run("ref", None), run("mesh", mesh)
        killed = run("killed", mesh, stop_after=2)
        resumed = run("killed", mesh)
    metric_err = max(abs(a[k] - b[k]) / abs(b[k])
                     for a, b in zip(out.history, ref.history) for k in ("loss", "grad_norm"))
    param_err = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                    for a, b in zip(jax.tree.leaves((out.state.params, out.state.emas)),
                                    jax.tree.leaves((ref.state.params, ref.state.emas))))
    resume_equal = all(np.array_equal(np.asarray(a), np.asarray(b))
                       for a, b in zip(jax.tree.leaves(out.state), jax.tree.leaves(resumed.state)))
    leaf = jax.tree.leaves(resumed.state.params)[0]
    emit(check="train", mesh=mesh_name, attention=att_name, rules=rules_name, steps=len(out.history),
         metric_err=metric_err, param_err_over_lr=param_err / cfg.learning_rate,
         devices=len(jax.tree.leaves(out.state.params)[0].sharding.device_set),
         killed_at=int(killed.state.step), resumed_from=resumed.resumed_from, resume_equal=resume_equal,
         resumed_devices=len(leaf.sharding.device_set), seconds=round(time.perf_counter() - t0, 2))


def check_hlo(mesh_name: str = "1x4") -> None:
    """The compiled sequence-parallel forward: all-to-alls per self-attention layer, token-split activations."""
    m = model()
    from flax import nnx

    graphdef, state = nnx.split(m)
    mesh = mesh_of(mesh_name)
    att = sequence_parallel(AttentionConfig(dense_backend="xla"), mesh)
    x = jnp.zeros((2,) + SHAPE)
    emb, mask = text(2, 1)

    def fwd(state, x, emb, mask):
        return nnx.merge(graphdef, state)(x, jnp.full((2,), 10.0), emb, mask, attention=att)

    with jax.set_mesh(mesh):
        args = parallel.shard_tree(state, mesh), x, emb, mask
        hlo = jax.jit(fwd).lower(*args).compile().as_text()
    seq = MESHES[mesh_name][1]
    n = SHAPE[1] * (SHAPE[2] // 2) * (SHAPE[3] // 2)
    # the MLP's hidden activations as each device holds them: (B, N/seq, 4D)
    local_mlp = f"f32[2,{n // seq},{4 * CFG.inner_dim}]"
    emit(check="hlo", mesh=mesh_name, all_to_all=hlo.count("all-to-all("), all_gather=hlo.count("all-gather("),
         layers=CFG.num_layers, local_mlp_shape=local_mlp, local_mlp=local_mlp in hlo,
         global_mlp=f"f32[2,{n},{4 * CFG.inner_dim}]" in hlo)


def check_errors() -> None:
    """Heads not divisible by the seq axis; no mesh in context; an axis the mesh lacks."""
    m = model()
    x = jnp.zeros((1,) + SHAPE)
    emb, mask = text(1, 1)
    cases = {
        "heads": (parallel.make_mesh(seq=3), AttentionConfig(sequence_axis="seq")),
        "no_mesh": (None, AttentionConfig(sequence_axis="seq")),
        "bad_axis": (parallel.make_mesh(seq=2), AttentionConfig(sequence_axis="tokens")),
    }
    for name, (mesh, att) in cases.items():
        try:
            if mesh is None:
                m(x, jnp.zeros((1,)), emb, mask, attention=att)
            else:
                with jax.set_mesh(mesh):
                    jax.jit(lambda x, e, k: m(x, jnp.zeros((1,)), e, k, attention=att))(x, emb, mask)
            emit(check="error", case=name, raised=None)
        except ValueError as e:
            emit(check="error", case=name, raised=str(e))


def main(argv: list[str]) -> None:
    t0 = time.perf_counter()
    emit(check="setup", devices=len(jax.devices()), jax=jax.__version__, platform=jax.default_backend())
    what = argv or ["sample", "grads", "train", "hlo", "errors"]
    for name in what:
        if name == "sample":
            check_sample(["1x2", "1x8", "2x4"], ["mixed-reference"])  # 4, 1 and 2 heads per device
            check_sample(["2x4"], ["tile-gather"])
            check_sample(["1x2"], ["tile-triton"])  # a Pallas kernel (interpret mode) inside shard_map
        elif name == "sample-more":  # not run by the test suite (slow): every mesh, every schedule
            check_sample(["1x1", "1x2", "1x4", "1x8", "2x4", "2x1"], ["dense", "tile-reference", "tile-gather"])
        elif name == "grads":
            check_grads(["1x2", "1x8", "2x4"], ["mixed-reference"])
            check_grads(["2x4"], ["tile-gather"], rules_name="split")
            check_grads(["1x2"], ["tile-triton"])  # Pallas forward and backward kernels inside shard_map
        elif name == "train":
            check_train("2x4", "mixed-reference")
        elif name == "hlo":
            check_hlo()
        elif name == "errors":
            check_errors()
        else:
            raise SystemExit(f"unknown check {name!r}")
    emit(check="done", seconds=round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    main(sys.argv[1:])
