"""Diffusion schedules as pure functions: the DDPM training schedule, the release's Euler-ancestral sampler,
deterministic DDIM, and the jump to an earlier timestep that multi-step consistency students sample with.

Conventions. Timesteps t are floats in [0, 999] (fractional values occur in Euler-ancestral sampling); the model
predicts epsilon. VP space: x_t = a_t x0 + s_t eps with a_t = sqrt(alpha_bar_t), s_t = sqrt(1 - alpha_bar_t).
Sigma space (Euler): x_sigma = x_t / a_t, sigma = s_t / a_t, and the model input is x_sigma / sqrt(sigma^2 + 1).
The timestep ``CLEAN`` (-1) stands for the clean sample (a = 1, s = 0).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

CLEAN = -1


@dataclass(frozen=True)
class DDPMSchedule:
    """The training noise schedule (diffusers ``DDPMScheduler()`` defaults: linear betas, 1000 steps)."""

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02


RELEASE_SCHEDULE = DDPMSchedule()


@functools.lru_cache(maxsize=8)
def alphas_cumprod(schedule: DDPMSchedule = RELEASE_SCHEDULE) -> np.ndarray:
    """alpha_bar_t for t = 0..T-1, float32: fp32 betas (as torch.linspace makes them), product in fp64."""
    betas = np.linspace(schedule.beta_start, schedule.beta_end, schedule.num_train_timesteps, dtype=np.float32)
    out = np.cumprod((1.0 - betas).astype(np.float64)).astype(np.float32)
    out.setflags(write=False)
    return out


def _alpha_bar_at(t: jax.Array, schedule: DDPMSchedule) -> jax.Array:
    """alpha_bar at integer-valued t (``CLEAN`` -> 1), fp32; t may be an array."""
    table = jnp.asarray(alphas_cumprod(schedule))
    t = jnp.asarray(t)
    idx = jnp.clip(jnp.round(t).astype(jnp.int32), 0, schedule.num_train_timesteps - 1)
    return jnp.where(t < 0, 1.0, table[idx])


def vp_coefficients(t: jax.Array, schedule: DDPMSchedule = RELEASE_SCHEDULE) -> tuple[jax.Array, jax.Array]:
    """(a_t, s_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) at integer timesteps; t = CLEAN gives (1, 0)."""
    ab = _alpha_bar_at(t, schedule)
    return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array, schedule: DDPMSchedule = RELEASE_SCHEDULE) -> jax.Array:
    """Forward diffusion x_t = a_t x0 + s_t noise, per sample. x0, noise: (B, ...); t: (B,) integer-valued."""
    a, s = vp_coefficients(t, schedule)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (a.reshape(shape) * x0.astype(jnp.float32) + s.reshape(shape) * noise.astype(jnp.float32))


def jump(
    x_t: jax.Array, eps: jax.Array, t: jax.Array, t_to: jax.Array, schedule: DDPMSchedule = RELEASE_SCHEDULE
) -> jax.Array:
    """Move x_t to timestep ``t_to`` along the predicted noise (DDIM, eta = 0), in fp32.

    y = (a_to / a_t) x_t + (s_to - a_to s_t / a_t) eps. Exact identity when t_to == t; t_to = CLEAN gives the
    predicted clean sample. t, t_to: scalars or (B,) integer-valued timesteps. Returns fp32.
    """
    a_t, s_t = vp_coefficients(t, schedule)
    a_to, s_to = vp_coefficients(t_to, schedule)
    shape = (-1,) + (1,) * (x_t.ndim - 1) if jnp.ndim(a_t) else ()
    a_t, s_t, a_to, s_to = (jnp.reshape(v, shape) for v in (a_t, s_t, a_to, s_to))
    ratio = a_to / a_t
    return ratio * x_t.astype(jnp.float32) + (s_to - ratio * s_t) * eps.astype(jnp.float32)


ddim_step = jump  # deterministic DDIM from t to t_prev is the same update


def predicted_x0(x_t: jax.Array, eps: jax.Array, t: jax.Array, schedule: DDPMSchedule = RELEASE_SCHEDULE):
    """x0_hat = (x_t - s_t eps) / a_t, fp32."""
    return jump(x_t, eps, t, jnp.full_like(jnp.asarray(t), CLEAN), schedule)


def ddim_timesteps(num_steps: int, schedule: DDPMSchedule = RELEASE_SCHEDULE) -> np.ndarray:
    """Evenly spaced integer timesteps from T-1 down to 0 (diffusers "trailing" spacing), int32 (num_steps,)."""
    if not 1 <= num_steps <= schedule.num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {schedule.num_train_timesteps}], got {num_steps}")
    n = schedule.num_train_timesteps
    return np.round(np.arange(n, 0, -n / num_steps)).astype(np.int32) - 1


# ----------------------------------------------------------------------------------------------------------------
# Euler ancestral (the release's sampler: diffusers EulerAncestralDiscreteScheduler with default config)


@dataclass(frozen=True)
class EulerAncestralPlan:
    """Timesteps (num_steps,) fp32, sigmas (num_steps + 1,) fp32 ending in 0, and the initial noise scale."""

    timesteps: np.ndarray
    sigmas: np.ndarray
    init_noise_sigma: float

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


@functools.lru_cache(maxsize=64)
def euler_ancestral_plan(num_steps: int, schedule: DDPMSchedule = RELEASE_SCHEDULE) -> EulerAncestralPlan:
    """"linspace" timestep spacing: t_i = linspace(0, T-1, n) reversed; sigma interpolated linearly in t."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    n_train = schedule.num_train_timesteps
    timesteps = np.linspace(0, n_train - 1, num_steps, dtype=np.float64)[::-1].copy()
    ab = alphas_cumprod(schedule)
    train_sigmas = np.sqrt((np.float32(1) - ab) / ab)  # fp32, as the reference computes it
    sigmas = np.interp(timesteps, np.arange(n_train), train_sigmas)
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return EulerAncestralPlan(timesteps.astype(np.float32), sigmas, float(sigmas.max()))


def scale_model_input(x_sigma: jax.Array, sigma: jax.Array) -> jax.Array:
    """Model input for a sigma-space sample: x / sqrt(sigma^2 + 1) (in x's dtype)."""
    return (x_sigma.astype(jnp.float32) / jnp.sqrt(sigma.astype(jnp.float32) ** 2 + 1)).astype(x_sigma.dtype)


def euler_ancestral_step(
    x: jax.Array, eps: jax.Array, sigma: jax.Array, sigma_next: jax.Array, noise: jax.Array
) -> jax.Array:
    """One Euler-ancestral update in fp32, returned in x's dtype.

    x0 = x - sigma eps; sigma_up = sqrt(s_n^2 (s^2 - s_n^2) / s^2); sigma_down = sqrt(s_n^2 - sigma_up^2);
    x' = x + (x - x0) / sigma * (sigma_down - sigma) + sigma_up * noise. With sigma_next = 0 no noise is added.
    """
    xf, ef = x.astype(jnp.float32), eps.astype(jnp.float32)
    sigma, sigma_next = jnp.asarray(sigma, jnp.float32), jnp.asarray(sigma_next, jnp.float32)
    x0 = xf - sigma * ef
    # the same formulas as the reference; the clamps only stop rounding (e.g. after XLA fuses the expressions)
    # from taking a square root of a tiny negative number when sigma_next << sigma
    up2 = jnp.maximum(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2, 0.0)
    sigma_up = jnp.sqrt(up2)
    sigma_down = jnp.sqrt(jnp.maximum(sigma_next**2 - up2, 0.0))
    out = xf + (xf - x0) / sigma * (sigma_down - sigma) + noise.astype(jnp.float32) * sigma_up
    return out.astype(x.dtype)


def min_snr_weights(t: jax.Array, gamma: float = 5.0, schedule: DDPMSchedule = RELEASE_SCHEDULE) -> jax.Array:
    """Min-SNR-gamma loss weights for epsilon prediction: min(SNR_t, gamma) / SNR_t, SNR = ab / (1 - ab)."""
    ab = _alpha_bar_at(t, schedule)
    snr = ab / (1.0 - ab)
    return jnp.minimum(snr, gamma) / snr
