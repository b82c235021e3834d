"""Multi-step latent consistency distillation (MLCD).

The sampling trajectory [0, 999] is split into M segments with lower edges e_0 = 0 < e_1 < ... < e_{M-1}.
Inside each segment the student learns the teacher's probability-flow ODE (DDIM on a grid of N solver points)
as a consistency function: from any x_t, jump to the segment's lower edge with one prediction.

Per training example (x0 from data, t = a solver point, noise):
  x_t      = a_t x0 + s_t noise
  y        = jump(x_t, eps_student(x_t, t), t -> e_m)                      (e_m: lower edge of t's segment)
  x_t'     = DDIM(x_t, eps_teacher_cfg(x_t, t), t -> t'),  t' = max(previous solver point, e_m)
  target   = x_t' if t' == e_m else jump(x_t', eps_target(x_t', t'), t' -> e_m)       (stop-gradient)
  loss     = mean(sqrt((y - target)^2 + c^2) - c)                            (pseudo-Huber)
The teacher's guidance w is baked into the target (the student samples without CFG); the target network is an
EMA of the student (``target_ema``) or the student itself under stop-gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit import schedules
from jax_vdit.model.attention import DENSE, AttentionConfig


def solver_grid(num_points: int = 50, num_train_timesteps: int = 1000) -> np.ndarray:
    """t_i = (T/N)(i+1) - 1 for i < N: (19, 39, ..., 999) for N = 50. int32 (N,)."""
    if num_train_timesteps % num_points:
        raise ValueError(f"num_points={num_points} must divide {num_train_timesteps}")
    step = num_train_timesteps // num_points
    return (np.arange(1, num_points + 1) * step - 1).astype(np.int32)


def segment_edges(num_segments: int, num_train_timesteps: int = 1000) -> tuple[int, ...]:
    """Evenly spaced lower edges (0, T/M, 2T/M, ...): (0, 250, 500, 750) for M = 4."""
    if not 1 <= num_segments <= num_train_timesteps:
        raise ValueError(f"num_segments must be in [1, {num_train_timesteps}], got {num_segments}")
    return tuple(int(round(i * num_train_timesteps / num_segments)) for i in range(num_segments))


def pseudo_huber(x: jax.Array, y: jax.Array, c: float) -> jax.Array:
    """mean(sqrt((x - y)^2 + c^2) - c) in fp32."""
    d = x.astype(jnp.float32) - y.astype(jnp.float32)
    return jnp.mean(jnp.sqrt(d * d + c * c) - c)


@dataclass(frozen=True, eq=False)
class MLCDObjective:
    """Training-loop objective for MLCD.

    ``teacher``: a ``training.ModelParts`` of the frozen teacher (its parameters come in ``context["frozen"]
    ["teacher"]``); ``student``: the student's ``ModelParts`` (to rebuild the target network from the ``target``
    EMA). Frozen context also holds ``uncond_text`` (L, C) / ``uncond_mask`` (L,) for the teacher's CFG.
    Batch: ``latents`` (B,C,T,H,W), ``text`` (B,L,C), ``text_mask`` (B,L).
    """

    teacher: object
    student: object
    edges: tuple[int, ...] = (0, 250, 500, 750)
    num_solver_points: int = 50
    guidance: float = 4.0
    huber_c: float = 1e-3
    target_ema: str | None = "target"
    schedule: schedules.DDPMSchedule = schedules.RELEASE_SCHEDULE
    attention: AttentionConfig = DENSE
    teacher_attention: AttentionConfig = DENSE

    def __post_init__(self) -> None:
        e = list(self.edges)
        if not e or e[0] != 0 or any(b <= a for a, b in zip(e, e[1:])) or e[-1] >= 999:
            raise ValueError(f"edges must start at 0 and increase strictly below 999, got {self.edges}")

    def _segment_edge(self, t: jax.Array) -> jax.Array:
        """Lower edge of the segment holding t (the largest edge strictly below t)."""
        edges = jnp.asarray(self.edges, jnp.int32)
        idx = jnp.sum(edges[None, :] < t[:, None], axis=1) - 1
        return edges[jnp.clip(idx, 0, len(self.edges) - 1)]

    def __call__(self, model, batch, key, context):
        frozen = context["frozen"]
        x0 = batch["latents"].astype(jnp.float32)
        text, mask = batch["text"], batch["text_mask"]
        b = x0.shape[0]
        k_t, k_noise = jax.random.split(key)
        grid = jnp.asarray(solver_grid(self.num_solver_points, self.schedule.num_train_timesteps))
        n = jax.random.randint(k_t, (b,), 0, self.num_solver_points)
        t = grid[n]
        edge = self._segment_edge(t)
        prev = jnp.where(n > 0, grid[jnp.maximum(n - 1, 0)], 0)
        t_prev = jnp.maximum(prev, edge)
        noise = jax.random.normal(k_noise, x0.shape, jnp.float32)
        x_t = schedules.add_noise(x0, noise, t, self.schedule)
        tf = t.astype(jnp.float32)

        # teacher: one CFG DDIM step t -> t' (no gradient)
        teacher = self.teacher.merge(frozen["teacher"])
        uncond = jnp.broadcast_to(frozen["uncond_text"][None].astype(text.dtype), text.shape)
        uncond_mask = jnp.broadcast_to(frozen["uncond_mask"][None].astype(mask.dtype), mask.shape)
        eps_both = teacher(jnp.concatenate([x_t, x_t]), jnp.concatenate([tf, tf]),
                           jnp.concatenate([uncond, text]), jnp.concatenate([uncond_mask, mask]),
                           attention=self.teacher_attention).astype(jnp.float32)
        eps_u, eps_c = eps_both[:b], eps_both[b:]
        eps_teacher = jax.lax.stop_gradient(eps_u + self.guidance * (eps_c - eps_u))
        x_prev = schedules.jump(x_t, eps_teacher, t, t_prev, self.schedule)

        # target network at (x_t', t') -> edge, unless t' already is the edge
        if self.target_ema is not None:
            target_net = self.student.merge(context["emas"][self.target_ema])
        else:
            target_net = model
        eps_target = target_net(x_prev, t_prev.astype(jnp.float32), text, mask, attention=self.attention)
        eps_target = jax.lax.stop_gradient(eps_target.astype(jnp.float32))
        jumped = schedules.jump(x_prev, eps_target, t_prev, edge, self.schedule)
        at_edge = (t_prev == edge).reshape((b,) + (1,) * (x0.ndim - 1))
        target = jax.lax.stop_gradient(jnp.where(at_edge, x_prev, jumped))

        # student: jump from x_t straight to the edge
        eps_student = model(x_t, tf, text, mask, attention=self.attention).astype(jnp.float32)
        y = schedules.jump(x_t, eps_student, t, edge, self.schedule)
        loss = pseudo_huber(y, target, self.huber_c)
        return loss, {"mse_to_target": jnp.mean(jnp.square(y - target)), "t_mean": jnp.mean(tf)}
