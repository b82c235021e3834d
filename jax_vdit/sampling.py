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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_vdit import parallel, schedules
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
        return {"t_model": jnp.asarray(self.t_model), "t_to": jnp.asarray(self.t_to),
                "sigmas": jnp.asarray(self.sigmas), "num_steps": jnp.asarray(self.num_steps, jnp.int32),
                "init_scale": jnp.asarray(self.init_scale, jnp.float32)}


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


def _guided_eps(model, x_in, t, text, mask, neg_text, neg_mask, guidance, attention):
    b = x_in.shape[0]
    xb, tb, mb = _cfg_batch(x_in, text, mask, neg_text, neg_mask)
    xb, tb, mb = (parallel.constrain_batch(a, attention.batch_axis) for a in (xb, tb, mb))  # CFG pair over "data"
    tt = jnp.full((xb.shape[0],), t, jnp.float32)
    eps = model(xb, tt, tb, mb, attention=attention)
    if neg_text is None:
        return eps
    eps_u, eps_c = eps[:b].astype(jnp.float32), eps[b:].astype(jnp.float32)
    return eps_u + guidance * (eps_c - eps_u)


def _sample_fn(graphdef, state, noise, key, text, mask, neg_text, neg_mask, guidance, plan, start, resume, *,
               method: str, attention: AttentionConfig, latent_dtype, report_progress: bool):
    model = nnx.merge(graphdef, state)
    if resume is None:
        x = (noise.astype(jnp.float32) * plan["init_scale"]).astype(latent_dtype)
    else:  # latents after ``start`` steps of this plan (a resumed or segmented run)
        x = resume.astype(latent_dtype)

    def body(i, x):
        if method == "euler_ancestral":
            sigma, sigma_next = plan["sigmas"][i], plan["sigmas"][i + 1]
            x_in = schedules.scale_model_input(x, sigma)
            eps = _guided_eps(model, x_in, plan["t_model"][i], text, mask, neg_text, neg_mask, guidance, attention)
            z = jax.random.normal(jax.random.fold_in(key, i), x.shape, jnp.float32)
            x = schedules.euler_ancestral_step(x, eps, sigma, sigma_next, z)
        else:
            t, t_to = plan["t_model"][i], plan["t_to"][i]
            eps = _guided_eps(model, x, t, text, mask, neg_text, neg_mask, guidance, attention)
            x = schedules.jump(x, eps, t, t_to)
        if report_progress:
            jax.debug.callback(_report_progress, i)
        return x.astype(latent_dtype)

    return parallel.replicate(jax.lax.fori_loop(start, plan["num_steps"], body, x))  # no-op without a mesh


_PROGRESS_HOOK: list[Callable[[int], None] | None] = [None]


def _report_progress(step) -> None:
    hook = _PROGRESS_HOOK[0]
    if hook is not None:
        hook(int(step))


_sample_jit = jax.jit(
    _sample_fn, static_argnames=("graphdef", "method", "attention", "latent_dtype", "report_progress"),
    donate_argnums=(2,),
)


def _as_3d(text: jax.Array | None, mask: jax.Array | None):
    if text is not None and text.ndim == 4:
        text = text[:, 0]
    if mask is not None and mask.ndim == 3:
        mask = mask[:, 0]
    return text, mask


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
    ``key`` draws the initial noise and the ancestral noise. ``progress`` is called (on the host) with the step
    index after each step; leave it None for benchmarks.

    ``mesh`` (e.g. ``jax_vdit.parallel.make_mesh(seq=4, data=2)``): run sequence-parallel on it: parameters are
    placed by ``sharding_rules`` (replicated by default), the CFG batch is split over ``"data"``, tokens over
    ``"seq"`` (``attention`` gets ``sequence_axis``/``batch_axis`` from the rules unless already set). The result is
    replicated on every device.

    ``start_step`` / ``latents``: continue a run from the latents it had after ``start_step`` steps (what a call
    with ``plan.truncated(start_step)`` and the same ``key`` returned). Steps ``start_step .. plan.num_steps - 1``
    then run exactly as in one uninterrupted call (the ancestral noise of step i depends only on ``key`` and i),
    so a long sampling job can be split into segments, e.g. across preemptions or job time limits.
    """
    if plan.method not in METHODS:
        raise ValueError(f"unknown sampling method {plan.method!r}")
    if len(latent_shape) != 4:
        raise ValueError(f"latent_shape must be (C, T, H, W), got {latent_shape}")
    c, t, h, w = latent_shape
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
    if not 0 <= start_step <= plan.num_steps:
        raise ValueError(f"start_step must be in [0, {plan.num_steps}] for this plan, got {start_step}")
    if (latents is None) != (start_step == 0):
        raise ValueError("pass latents exactly when resuming (start_step > 0): the latents after start_step steps")
    if latents is not None and tuple(latents.shape) != (b, c, t, h, w):
        raise ValueError(f"latents {tuple(latents.shape)} do not match (batch, *latent_shape) = {(b, c, t, h, w)}")
    init_key, noise_key = jax.random.split(key)
    noise = jax.random.normal(init_key, (b, c, t, h, w), jnp.float32)
    graphdef, state = nnx.split(model)
    _PROGRESS_HOOK[0] = progress  # read on the host by the step callbacks, which may run after we return
    args = (noise, noise_key, text, text_mask, negative_text, negative_mask,
            jnp.asarray(guidance_scale, jnp.float32), plan.arrays(), jnp.asarray(start_step, jnp.int32),
            None if latents is None else jnp.asarray(latents))
    if mesh is not None:
        mesh = parallel.as_auto_mesh(mesh)
        attention = sequence_parallel(attention, mesh, sharding_rules)
        state = parallel.shard_tree(state, mesh, sharding_rules)
        args = parallel.replicate_tree(args, mesh)
    with contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh):
        return _sample_jit(graphdef, state, *args, method=plan.method, attention=attention,
                           latent_dtype=jnp.dtype(latent_dtype), report_progress=progress is not None)


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
