"""How close is a toy teacher to being symmetric under time reversal? Equivariance errors of its noise prediction.

For a model f and a reversal R (of the frame order, or of the order of the patches along x or y, keeping the
pixels inside each patch), the error is ``||R f(R x) - f(x)|| / ||f(x)||`` on noised ground-truth videos of the
held-out prompts with their captions. With relative (RoPE) positions only, R changes nothing but the sign of the
positional offsets, so a small time-reversal error means the model barely tells earlier frames from later ones
(and so cannot tell "left" from "right"). ``--random`` adds a model of the same config with i.i.d. random weights
(:func:`jax_vdit.model.random_model`; no zero-initialised output layers) as a baseline.

Usage::

    python -m experiments.studies.toy_symmetry --teacher jax_vdit/toy/assets/toy_teacher --random \
        --out experiments/results/toy_teacher/symmetry
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from experiments.studies.presets import register
from experiments.studies.toy_guidance_sweep import parse_teachers
from experiments.studies.toy_report import command_line, save_report

from jax_vdit import schedules
from jax_vdit.model import random_model
from jax_vdit.toy import TOY_TEACHER_DIR, load_toy_teacher, world_for
from jax_vdit.toy.world import heldout_batch


def reverse_time(v: jax.Array) -> jax.Array:
    """(B, C, T, H, W) -> frames in reverse order."""
    return v[:, :, ::-1]


def reverse_patches(v: jax.Array, axis: int, patch: int) -> jax.Array:
    """Reverse the order of the ``patch``-wide blocks along ``axis`` (-1: x, -2: y), keeping each block's pixels."""
    v = jnp.moveaxis(v, axis, -1)
    s = v.shape
    v = v.reshape(s[:-1] + (s[-1] // patch, patch))[..., ::-1, :].reshape(s)
    return jnp.moveaxis(v, -1, axis)


def equivariance_errors(model, latents, text, mask, t: int, patch: int) -> dict[str, float]:
    noise = jax.random.normal(jax.random.key(t), latents.shape)
    tt = jnp.full((latents.shape[0],), t, jnp.int32)
    x_t = schedules.add_noise(latents, noise, tt)
    f = lambda v: model(v, tt, text, mask)  # noqa: E731
    y = f(x_t)
    reversals = {"time": reverse_time, "x patches": lambda v: reverse_patches(v, -1, patch),
                 "y patches": lambda v: reverse_patches(v, -2, patch)}
    return {name: float(jnp.linalg.norm(r(f(r(x_t))) - y) / jnp.linalg.norm(y)) for name, r in reversals.items()}


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", action="append", default=None, help="NAME=PATH (default: the shipped toy teacher)")
    p.add_argument("--random", action="store_true",
                   help="also a model of the first teacher's config with i.i.d. N(0, 0.05^2) weights")
    p.add_argument("--timesteps", default="300,700")
    p.add_argument("--videos", type=int, default=8, help="held-out videos used")
    p.add_argument("--world", default=None, help="default: the world recorded with the (first) teacher")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    teachers = parse_teachers(args.teacher or ["shipped=" + str(TOY_TEACHER_DIR)])
    world = world_for(next(iter(teachers.values())), args.world)
    batch = heldout_batch(world)
    latents = jnp.asarray(batch["latents"][: args.videos])
    text, mask = jnp.asarray(batch["text_emb"][: args.videos]), jnp.asarray(batch["text_mask"][: args.videos])
    models = {}
    for name, path in teachers.items():
        world_for(path, world.name)  # every model is run on videos of its own world
        models[name] = load_toy_teacher(path)
    if args.random:
        models["random (N(0, 0.05^2) weights)"] = random_model(next(iter(models.values())).cfg, seed=1, scale=0.05)
    timesteps = [int(t) for t in args.timesteps.split(",")]
    rows = []
    for name, model in models.items():
        for t in timesteps:
            errs = equivariance_errors(model, latents, text, mask, t, model.cfg.patch_size)
            rows.append({"model": name, "t": t, **errs})
            print(rows[-1], flush=True)
    command = command_line()
    lines = ["| model | t | time reversal | x-patch reversal | y-patch reversal |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['t']} | {r['time']:.4f} | {r['x patches']:.4f} | {r['y patches']:.4f} |"
              for r in rows]
    text_md = "\n".join(["# Equivariance errors of toy teachers", "",
                         f"Command: `{command}` ({jax.devices()[0].device_kind}, jax {jax.__version__})", "",
                         f"`||R f(R x) - f(x)|| / ||f(x)||` for noised ground-truth videos ({args.videos} held-out "
                         "prompts, their captions):", "", *lines, ""])
    print(text_md)
    save_report(args.out, "symmetry", text_md, {"command": command, "rows": rows})


if __name__ == "__main__":
    main()
