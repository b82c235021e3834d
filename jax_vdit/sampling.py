"""Jitted sampling: the whole denoising loop in one ``jit`` (a ``lax.fori_loop``), classifier-free guidance with
the batch [negative; positive] as the release does, and per-layer attention from an ``AttentionConfig``.

Samplers (a :class:`SamplingPlan` holds the per-step arrays; its length is padded so changing the step count
or the guidance scale does not recompile):

* ``euler_ancestral(n)``: the release's sampler (sigma space, ancestral noise);
* ``ddim(n)``: deterministic DDIM on the DDPM schedule (the distillation solver);
* ``consistency(edges)``: a multi-step consistency student: from t = 999 jump to each lower segment edge in turn.

Latents are kept in ``latent_dtype`` between steps (bf16 like the release by default); each update is computed
in fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import pallas_kernels
from jax_vdit import executable_store, parallel, schedules
from jax_vdit.host_arrays import to_device
from jax_vdit.model.attention import DENSE, AttentionConfig, sequence_parallel

MAX_PLAN_STEPS = 1000
METHODS = ("euler_ancestral", "jump")


@dataclass(frozen=True, eq=False)
class SamplingPlan:
    """Per-step arrays of a sampler, padded to ``MAX_PLAN_STEPS``.

    method "euler_ancestral": ``t_model`` (model timesteps), ``sigmas`` (n + 1 values).
    method "jump": ``t_model`` and ``t_to`` (the timestep each step jumps to; ``schedules.CLEAN`` = -1 for x0).
    ``init_scale``: the initial latents are N(0, I) * init_scale.
    """

    method: str
    num_steps: int
    t_model: np.ndarray
    t_to: np.ndarray = field(default_factory=lambda: np.zeros(MAX_PLAN_STEPS, np.float32))
    sigmas: np.ndarray = field(default_factory=lambda: np.zeros(MAX_PLAN_STEPS + 1, np.float32))
    init_scale: float = 1.0

    def truncated(self, num_steps: int) -> SamplingPlan:
        """The first ``num_steps`` steps of this plan (same compiled sampler: e.g. a 1-step warm-up run)."""
        return dataclasses.replace(self, num_steps=min(num_steps, self.num_steps))

    def arrays(self) -> dict[str, jax.Array]:
        return {"t_model": to_device(self.t_model, np.float32), "t_to": to_device(self.t_to, np.float32),
                "sigmas": to_device(self.sigmas, np.float32), "num_steps": to_device(self.num_steps, np.int32),
                "init_scale": to_device(self.init_scale, np.float32)}


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    out = np.zeros(length, np.float32)
    out[: len(values)] = values
    return out


def euler_ancestral(num_steps: int) -> SamplingPlan:
    if not 1 <= num_steps <= MAX_PLAN_STEPS:
        raise ValueError(f"num_steps must be in [1, {MAX_PLAN_STEPS}], got {num_steps}")
    plan = schedules.euler_ancestral_plan(num_steps)
    return SamplingPlan("euler_ancestral", num_steps, _pad(plan.timesteps, MAX_PLAN_STEPS),
                        sigmas=_pad(plan.sigmas, MAX_PLAN_STEPS + 1), init_scale=plan.init_noise_sigma)


def jump_plan(timesteps: Sequence[int], final: int = schedules.CLEAN) -> SamplingPlan:
    """Evaluate the model at each of ``timesteps`` (decreasing) and jump to the next one (then to ``final``)."""
    ts = [int(t) for t in timesteps]
    if not ts or any(b >= a for a, b in zip(ts, ts[1:])) or ts[-1] <= final or ts[0] > 999:
        raise ValueError(f"timesteps must decrease strictly within [0, 999] and stay above {final}: {ts}")
    t_to = ts[1:] + [final]
    return SamplingPlan("jump", len(ts), _pad(np.array(ts), MAX_PLAN_STEPS), t_to=_pad(np.array(t_to), MAX_PLAN_STEPS))


def ddim(num_steps: int) -> SamplingPlan:
    """Deterministic DDIM with evenly spaced ("trailing") integer timesteps, ending at the clean sample."""
    return jump_plan(schedules.ddim_timesteps(num_steps).tolist())


def consistency(edges: Sequence[int], start: int = 999) -> SamplingPlan:
    """A multi-step consistency student's sampler: segment lower edges ``edges`` (e.g. (0, 250, 500, 750)).

    From t = ``start`` it evaluates the model and jumps to the highest edge below, and so on down to edge 0,
    then returns the clean estimate from there (the jump from e_0 = 0 to x0 is the identity up to a_0).
    """
    edges = sorted(int(e) for e in edges)
    if not edges or edges[0] != 0:
        raise ValueError(f"consistency edges must start at 0, got {edges}")
    points = [start] + [e for e in reversed(edges) if e < start]
    points = [p for p in points if p > 0]  # t=0 is an edge we land on, not a model call
    return jump_plan(points, final=0)


def _cfg_batch(x_in, text, mask, neg_text, neg_mask):
    if neg_text is None:
        return x_in, text, mask
    return (jnp.concatenate([x_in, x_in]), jnp.concatenate([neg_text, text]),
            None if mask is None else jnp.concatenate([neg_mask, mask]))


def _guided_eps(model, x_in, t, text, mask, neg_text, neg_mask, guidance, attention, stacked_runs=None):
    b = x_in.shape[0]
    xb, tb, mb = _cfg_batch(x_in, text, mask, neg_text, neg_mask)
    xb, tb, mb = (parallel.constrain_batch(a, attention.batch_axis) for a in (xb, tb, mb))  # CFG pair over "data"
    tt = jnp.full((xb.shape[0],), t, jnp.float32)
    extra = {"stacked_runs": stacked_runs} if stacked_runs else {}  # model-like wrappers need not take it
    eps = model(xb, tt, tb, mb, attention=attention, **extra)
    if neg_text is None:
        return eps
    eps_u, eps_c = eps[:b].astype(jnp.float32), eps[b:].astype(jnp.float32)
    return eps_u + guidance * (eps_c - eps_u)


def _sample_fn(graphdef, state, x, key, text, mask, neg_text, neg_mask, guidance, plan, start, stop, *,
               method: str, attention: AttentionConfig, latent_dtype):
    """Steps ``start .. stop - 1`` of ``plan`` from latents ``x`` (B, C, T, H, W); ``start``/``stop`` are traced, so one
    executable runs a whole plan, one step of it (a progress bar's host loop) or any resumed segment."""
    model = nnx.merge(graphdef, state)
    # the scanned blocks' weights stacked once here, not again in every step's forward
    runs = model.stack_block_runs(attention) if hasattr(model, "stack_block_runs") else {}

    def body(i, x):
        if method == "euler_ancestral":
            sigma, sigma_next = plan["sigmas"][i], plan["sigmas"][i + 1]
            x_in = schedules.scale_model_input(x, sigma)
            eps = _guided_eps(model, x_in, plan["t_model"][i], text, mask, neg_text, neg_mask, guidance, attention,
                              runs)
            z = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
            x = schedules.euler_ancestral_step(x, eps, sigma, sigma_next, z)
        else:
            t, t_to = plan["t_model"][i], plan["t_to"][i]
            eps = _guided_eps(model, x, t, text, mask, neg_text, neg_mask, guidance, attention, runs)
            x = schedules.jump(x, eps, t, t_to)
        return x.astype(latent_dtype)

    return parallel.replicate(jax.lax.fori_loop(start, stop, body, x.astype(latent_dtype)))  # no-op without a mesh


_STATIC = ("graphdef", "method", "attention", "latent_dtype")
_sample_jit = jax.jit(_sample_fn, static_argnames=_STATIC, donate_argnums=(2,))


@functools.partial(jax.jit, static_argnames=("shape", "latent_dtype"))
def _initial_latents(key: jax.Array, init_scale: jax.Array, *, shape: tuple[int, ...],
                     latent_dtype) -> tuple[jax.Array, jax.Array]:
    """(ancestral-noise key, N(0, I) noise of ``shape`` drawn in fp32 * the plan's ``init_scale``, stored in
    ``latent_dtype``) from ``key``: one program for what eager calls did in five."""
    init_key, noise_key = jax.random.split(key)
    noise = jax.random.normal(init_key, shape, jnp.float32)
    return noise_key, (noise * init_scale).astype(latent_dtype)


def initial_latents(key: jax.Array, plan: SamplingPlan, shape: tuple[int, ...],
                    latent_dtype) -> tuple[jax.Array, jax.Array]:
    """(ancestral-noise key, initial latents of ``shape`` in ``latent_dtype``) that :func:`sample` starts ``plan``
    from for ``key``: the same program."""
    return _initial_latents(key, to_device(plan.init_scale, np.float32), shape=tuple(shape),
                            latent_dtype=jnp.dtype(latent_dtype))


@jax.jit
def _noise_key(key: jax.Array) -> jax.Array:
    """The ancestral-noise key of ``key`` (what :func:`_initial_latents` returns first), for a resumed run."""
    return jax.random.split(key)[1]


def _as_3d(text: jax.Array | None, mask: jax.Array | None):
    if text is not None and text.ndim == 4:
        text = text[:, 0]
    if mask is not None and mask.ndim == 3:
        mask = mask[:, 0]
    return text, mask


@dataclass(frozen=True, eq=False)
class _Program:
    """A sampling call's inputs, checked and placed: everything but the step range, the key and the latents."""

    graphdef: Any
    state: Any
    inputs: tuple  # text, mask, neg_text, neg_mask, guidance, plan arrays
    statics: dict
    batch_shape: tuple[int, int, int, int, int]
    plan: SamplingPlan
    mesh: jax.sharding.Mesh | None

    def context(self):
        return contextlib.nullcontext() if self.mesh is None else jax.set_mesh(self.mesh)

    def place(self, tree):
        return tree if self.mesh is None else parallel.replicate_tree(tree, self.mesh)

    def first_latents(self, key: jax.Array, start_step: int, latents: jax.Array | None):
        """(ancestral-noise key, latents after ``start_step`` steps in latent dtype) for ``key``."""
        if not 0 <= start_step <= self.plan.num_steps:
            raise ValueError(f"start_step must be in [0, {self.plan.num_steps}] for this plan, got {start_step}")
        if (latents is None) != (start_step == 0):
            raise ValueError("pass latents exactly when resuming (start_step > 0): the latents after start_step steps")
        if latents is not None and tuple(latents.shape) != self.batch_shape:
            raise ValueError(f"latents {tuple(latents.shape)} do not match (batch, *latent_shape) = {self.batch_shape}")
        dtype = self.statics["latent_dtype"]
        if latents is None:
            noise_key, x = initial_latents(key, self.plan, self.batch_shape, dtype)
        else:  # a copy: the sampler donates its latents buffer
            noise_key, x = _noise_key(key), jnp.array(latents, dtype=dtype, copy=True)
        return self.place(noise_key), self.place(x)

    def args(self, x, noise_key, start: int, stop: int) -> tuple:
        steps = self.place((to_device(start, np.int32), to_device(stop, np.int32)))
        return (self.state, x, noise_key, *self.inputs, *steps)

    def run(self, runner: Callable, key: jax.Array, *, num_steps: int | None, start_step: int,
            latents: jax.Array | None, progress: Callable[[int], None] | None) -> jax.Array:
        stop = self.plan.num_steps if num_steps is None else num_steps
        if not 0 <= stop <= self.plan.num_steps:
            raise ValueError(f"num_steps must be in [0, {self.plan.num_steps}] for this plan, got {stop}")
        noise_key, x = self.first_latents(key, start_step, latents)
        if start_step > stop:
            raise ValueError(f"start_step {start_step} is past num_steps {stop}")
        with self.context():
            if progress is None:
                return runner(*self.args(x, noise_key, start_step, stop))
            for i in range(start_step, stop):  # the same executable, one step per call
                x = jax.block_until_ready(runner(*self.args(x, noise_key, i, i + 1)))
                progress(i)
            return x if start_step < stop else runner(*self.args(x, noise_key, start_step, stop))


def _program(model, text, text_mask, *, latent_shape, plan: SamplingPlan, negative_text, negative_mask,
             guidance_scale, attention: AttentionConfig, latent_dtype, mesh, sharding_rules) -> _Program:
    if plan.method not in METHODS:
        raise ValueError(f"unknown sampling method {plan.method!r}")
    if len(latent_shape) != 4:
        raise ValueError(f"latent_shape must be (C, T, H, W), got {latent_shape}")
    text, text_mask = _as_3d(text, text_mask)
    negative_text, negative_mask = _as_3d(negative_text, negative_mask)
    b = text.shape[0]
    if negative_text is not None:
        if negative_text.shape[0] == 1 and b > 1:
            negative_text = jnp.broadcast_to(negative_text, (b,) + negative_text.shape[1:])
            if negative_mask is not None:
                negative_mask = jnp.broadcast_to(negative_mask, (b,) + negative_mask.shape[1:])
        if negative_text.shape != text.shape:
            raise ValueError(f"negative text {negative_text.shape} does not match text {text.shape}")
        if (negative_mask is None) != (text_mask is None):
            raise ValueError("pass text masks for both the prompt and the negative prompt, or for neither")
    graphdef, state = nnx.split(model)
    inputs = (text, text_mask, negative_text, negative_mask, to_device(guidance_scale, np.float32), plan.arrays())
    if mesh is not None:
        mesh = parallel.as_auto_mesh(mesh)
        attention = sequence_parallel(attention, mesh, sharding_rules)
        state = parallel.shard_tree(state, mesh, sharding_rules)
        inputs = parallel.replicate_tree(inputs, mesh)
    statics = dict(method=plan.method, attention=attention, latent_dtype=jnp.dtype(latent_dtype))
    return _Program(graphdef, state, inputs, statics, (b, *latent_shape), plan, mesh)


def sample(
    model,
    text: jax.Array,
    text_mask: jax.Array | None,
    *,
    key: jax.Array,
    latent_shape: tuple[int, int, int, int],
    plan: SamplingPlan,
    negative_text: jax.Array | None = None,
    negative_mask: jax.Array | None = None,
    guidance_scale: float = 7.5,
    attention: AttentionConfig = DENSE,
    latent_dtype=jnp.bfloat16,
    progress: Callable[[int], None] | None = None,
    mesh: jax.sharding.Mesh | None = None,
    sharding_rules: parallel.ShardingRules = parallel.DEFAULT_RULES,
    start_step: int = 0,
    latents: jax.Array | None = None,
) -> jax.Array:
    """Generate latents (B, C, T, H, W) for text (B, L, C_text) or (B, 1, L, C_text) and mask (B, L).

    With ``negative_text`` the model runs on the batch [negative; positive] and applies CFG with
    ``guidance_scale`` (a traced value: changing it does not recompile); without it, one forward per step.
    ``key`` draws the initial noise and the ancestral noise. ``progress`` is called on the host with the step
    index after each step: the host then runs the same compiled program one step per call (waiting for each), so
    a progress bar changes neither what is compiled nor the result.

    ``mesh`` (e.g. ``jax_vdit.parallel.make_mesh(seq=4, data=2)``): run sequence-parallel on it: parameters are
    placed by ``sharding_rules`` (replicated by default), the CFG batch is split over ``"data"``, tokens over
    ``"seq"`` (``attention`` gets ``sequence_axis``/``batch_axis`` from the rules unless already set). The result is
    replicated on every device.

    ``start_step`` / ``latents``: continue a run from the latents it had after ``start_step`` steps (what a call
    with ``plan.truncated(start_step)`` and the same ``key`` returned). Steps ``start_step .. plan.num_steps - 1``
    then run exactly as in one uninterrupted call (the ancestral noise of step i depends only on ``key`` and i),
    so a long sampling job can be split into segments, e.g. across preemptions or job time limits.

    One executable per (model structure, shapes, dtypes, sampler method, attention): the step count, the step
    range, ``guidance_scale``, the key and the progress callback are all runtime values. See
    :func:`compile_sampler` to compile it ahead of time and time compilation separately.
    """
    prog = _program(model, text, text_mask, latent_shape=latent_shape, plan=plan, negative_text=negative_text,
                    negative_mask=negative_mask, guidance_scale=guidance_scale, attention=attention,
                    latent_dtype=latent_dtype, mesh=mesh, sharding_rules=sharding_rules)
    runner = _stored_runner(prog) or functools.partial(_sample_jit, prog.graphdef, **prog.statics)
    return prog.run(runner, key, num_steps=None, start_step=start_step, latents=latents, progress=progress)


_PACKAGE_DIRS = (str(Path(__file__).resolve().parent), str(Path(pallas_kernels.__file__).resolve().parent))
_STORE_KIND = "sampler"


def samplers_loaded_from_store() -> int:
    """How many sampler executables this process has read from the executable store (not traced or compiled)."""
    return executable_store.read_count(_STORE_KIND)


def _attention_description(attention: AttentionConfig) -> tuple:
    """Every field of ``attention``, tile masks by their bits (a label alone need not identify a mask)."""
    out = []
    for f in dataclasses.fields(attention):
        value = getattr(attention, f.name)
        if f.name == "masks" and value is not None:
            value = tuple(None if m is None else (m.num_frames, bytes(m.bits).hex()) for m in value)
        out.append((f.name, value))
    return tuple(out)


def _abstract(leaf) -> tuple:
    return tuple(leaf.shape), str(leaf.dtype), bool(getattr(leaf, "weak_type", False))


_ADDRESS = re.compile(r"<(function|class|built-in function|built-in method) ([\w.<>]+) at (0x[0-9a-f]+)>")


def graph_description(graphdef) -> str:
    """``repr(graphdef)`` with each function or class held as a static attribute (e.g. a ``Linear``'s
    ``dot_general``) named by its module and qualified name instead of its memory address, which differs from one
    process to the next: the text is the same in every process for the same model. An address that names no
    attribute of ``graphdef`` (e.g. a function inside a ``functools.partial``) is kept: such a key is then this
    process's alone (a compile next time, never a wrong executable)."""
    named = {}
    for _, attribute in getattr(graphdef, "attributes", ()):
        value = getattr(attribute, "value", None)
        if callable(value) and hasattr(value, "__qualname__"):
            named[id(value)] = f"{getattr(value, '__module__', None)}.{value.__qualname__}"

    def name(match: re.Match) -> str:
        found = named.get(int(match.group(3), 16))
        return match.group(0) if found is None else f"<{match.group(1)} {found}>"

    return _ADDRESS.sub(name, repr(graphdef))


def sampler_store_key(prog: "_Program", args: tuple) -> str:
    """The executable store's key of the sampler program for ``args`` (see :mod:`jax_vdit.executable_store`): the
    model's graph definition, the sampler method, latent dtype, every attention setting (masks by their bits), the
    arguments' shapes, dtypes and tree structure, and the source of this package and of ``pallas_kernels`` (versions,
    device and numerics settings: :func:`jax_vdit.executable_store.environment_fingerprint`)."""
    leaves, treedef = jax.tree.flatten(args)
    statics = prog.statics
    description = ("sampler", graph_description(prog.graphdef), statics["method"], str(statics["latent_dtype"]),
                   _attention_description(statics["attention"]), str(treedef), tuple(_abstract(x) for x in leaves))
    return executable_store.store_key(description, *_PACKAGE_DIRS)


def _store_applies(prog: "_Program") -> bool:
    """Whether the sampler goes through the executable store: one device and the store on."""
    return prog.mesh is None and executable_store.store_directory() is not None


def _lower_for_store(prog: "_Program", args: tuple):
    """The sampler lowered for ``args`` with its constants inside it, so that the store can serialize it
    (:func:`jax_vdit.executable_store.constants_embedded`)."""
    with executable_store.constants_embedded():
        return _sample_jit.lower(prog.graphdef, *args, **prog.statics)


def _stored_runner(prog: "_Program") -> Callable | None:
    """A runner that takes the sampler's executable from the executable store (or compiles and stores it), so a
    warm process neither traces nor lowers the sampler; None (use the jitted function) on a mesh or with the
    store off."""
    if not _store_applies(prog):
        return None

    keys: dict[tuple, str] = {}  # by the arguments' shapes: the progress loop calls run once per step

    def run(*args):
        shapes = tuple(_abstract(x) for x in jax.tree.leaves(args))
        key = keys.get(shapes)
        if key is None:
            key = keys[shapes] = sampler_store_key(prog, args)
        held = executable_store.load_or_compile(key, lambda: _lower_for_store(prog, args), kind=_STORE_KIND)
        return held.executable(*args)

    return run


@dataclass(frozen=True, eq=False)
class CompiledSampler:
    """A sampling program compiled ahead of time for one (model, inputs' shapes, plan method, attention).

    ``lower_s``: seconds to trace and lower it to StableHLO; ``compile_s``: seconds XLA took to compile it (or to
    read it from the persistent compilation cache); the first call runs without compiling anything. Call it as
    ``sampler(key, num_steps=None, start_step=0, latents=None, progress=None)`` -> latents (B, C, T, H, W) in the
    latent dtype: ``num_steps`` (default: the plan's) runs a prefix of the plan (e.g. 1 for a warm-up), the other
    arguments as in :func:`sample`. Every call uses this same executable.
    """

    executable: jax.stages.Compiled
    lower_s: float
    compile_s: float
    program: _Program

    def __call__(self, key: jax.Array, *, num_steps: int | None = None, start_step: int = 0,
                 latents: jax.Array | None = None, progress: Callable[[int], None] | None = None) -> jax.Array:
        return self.program.run(self.executable, key, num_steps=num_steps, start_step=start_step, latents=latents,
                                progress=progress)

    def hlo_text(self) -> str:
        """The compiled program's HLO text (for inspection: e.g. count ``while`` loops)."""
        return self.executable.as_text()


def compile_sampler(
    model,
    text: jax.Array,
    text_mask: jax.Array | None,
    *,
    latent_shape: tuple[int, int, int, int],
    plan: SamplingPlan,
    negative_text: jax.Array | None = None,
    negative_mask: jax.Array | None = None,
    guidance_scale: float = 7.5,
    attention: AttentionConfig = DENSE,
    latent_dtype=jnp.bfloat16,
    mesh: jax.sharding.Mesh | None = None,
    sharding_rules: parallel.ShardingRules = parallel.DEFAULT_RULES,
) -> CompiledSampler:
    """Compile the sampling program for these inputs now (``jit(...).lower(...).compile()``, timed) and return it
    as a :class:`CompiledSampler`. Arguments as in :func:`sample`. With ``jax_compilation_cache_dir`` set, a later
    process with the same model structure, shapes and settings reads the executable from the persistent cache
    (the program has no host callbacks, so its cache key is stable across processes); with the executable store on
    (single device), from the store instead, without tracing or lowering (``lower_s`` 0, ``compile_s`` the load)."""
    prog = _program(model, text, text_mask, latent_shape=latent_shape, plan=plan, negative_text=negative_text,
                    negative_mask=negative_mask, guidance_scale=guidance_scale, attention=attention,
                    latent_dtype=latent_dtype, mesh=mesh, sharding_rules=sharding_rules)
    dtype = prog.statics["latent_dtype"]
    with prog.context():
        sharding = None if prog.mesh is None else jax.sharding.NamedSharding(prog.mesh, jax.sharding.PartitionSpec())
        x = jax.ShapeDtypeStruct(prog.batch_shape, dtype, sharding=sharding)
        key = prog.place(jax.random.split(jax.random.key(0))[1])
        args = prog.args(x, key, 0, plan.num_steps)
        stored = sampler_store_key(prog, args) if _store_applies(prog) else None
        t0 = time.perf_counter()
        if stored is None:
            lowered = _sample_jit.lower(prog.graphdef, *args, **prog.statics)
            t1 = time.perf_counter()
            executable = lowered.compile()
            return CompiledSampler(executable, t1 - t0, time.perf_counter() - t1, prog)
        lowered_at = []

        def lower():
            lowered = _lower_for_store(prog, args)
            lowered_at.append(time.perf_counter())
            return lowered

        held = executable_store.load_or_compile(stored, lower, kind=_STORE_KIND)
        t2 = time.perf_counter()
        t1 = lowered_at[0] if lowered_at else t0  # loaded: no tracing, no lowering
        executable = held.executable
    return CompiledSampler(executable, t1 - t0, t2 - t1, prog)


class StepTimer:
    """A ``progress`` callback that drives a tqdm bar and records per-step wall times."""

    def __init__(self, total: int, desc: str = "sampling", disable: bool = False):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="step", disable=disable)
        self.times: list[float] = []
        self._last = time.perf_counter()

    def __call__(self, step) -> None:
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def plan_from_name(sampler: str, steps: int, edges: str | None = None) -> SamplingPlan:
    """"euler_ancestral" (the release), "ddim", or "consistency" (with comma-separated segment edges)."""
    if sampler in ("euler_ancestral", "euler-a", "euler"):
        return euler_ancestral(steps)
    if sampler == "ddim":
        return ddim(steps)
    if sampler == "consistency":
        if edges is None:
            edges_list = [round(i * 1000 / steps) for i in range(steps)]
        else:
            edges_list = [int(e) for e in edges.split(",")]
        return consistency(edges_list)
    raise ValueError(f"unknown sampler {sampler!r}: use euler_ancestral, ddim or consistency")
