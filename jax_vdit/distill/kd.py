"""Stage 3: knowledge distillation from the dense model into the tile-sparse one.

The student has the same weights at the start and runs self-attention with a per-layer mask schedule; it learns
to reproduce the dense teacher's noise prediction at the timesteps and noisy inputs it will see:
loss = mean((eps_student_sparse(x_t, t) - eps_teacher_dense(x_t, t))^2), x_t from data at t drawn from
``timesteps`` (e.g. the consistency sampler's evaluation points) or uniformly.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jax_vdit import schedules
from jax_vdit.model.attention import DENSE, AttentionConfig


@dataclass(frozen=True, eq=False)
class SparseKDObjective:
    """``teacher``: ModelParts of the dense model (params in ``context["frozen"]["teacher"]``);
    ``student_attention``: the sparse attention (mask schedule) the student trains with."""

    teacher: object
    student_attention: AttentionConfig
    timesteps: tuple[int, ...] | None = None
    teacher_attention: AttentionConfig = DENSE
    schedule: schedules.DDPMSchedule = schedules.RELEASE_SCHEDULE

    def __call__(self, model, batch, key, context):
        x0 = batch["latents"].astype(jnp.float32)
        text, mask = batch["text"], batch["text_mask"]
        b = x0.shape[0]
        k_t, k_noise = jax.random.split(key)
        if self.timesteps:
            choices = jnp.asarray(self.timesteps, jnp.int32)
            t = choices[jax.random.randint(k_t, (b,), 0, len(self.timesteps))]
        else:
            t = jax.random.randint(k_t, (b,), 0, self.schedule.num_train_timesteps)
        x_t = schedules.add_noise(x0, jax.random.normal(k_noise, x0.shape), t, self.schedule)
        tf = t.astype(jnp.float32)
        teacher = self.teacher.merge(context["frozen"]["teacher"])
        target = jax.lax.stop_gradient(
            teacher(x_t, tf, text, mask, attention=self.teacher_attention).astype(jnp.float32))
        eps = model(x_t, tf, text, mask, attention=self.student_attention).astype(jnp.float32)
        loss = jnp.mean(jnp.square(eps - target))
        return loss, {"rel_err": jnp.sqrt(loss / jnp.mean(jnp.square(target)))}
