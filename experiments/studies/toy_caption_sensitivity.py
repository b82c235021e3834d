"""Does a toy teacher use each caption word? Denoising error with the true caption against an altered one.

For ground-truth videos of the held-out prompts, noised at fixed timesteps with fixed noise, compares the teacher's
epsilon error under the true caption with the error under a caption where one attribute is swapped: the colour,
the speed, the direction's axis (left <-> up, ...) or the direction's sign (left <-> right, up-left <-> down-right).
A teacher that uses a word pays for the swap: the relative increase ``(err_swapped - err_true) / err_true`` is
large. A teacher blind to the sign of motion pays for an axis swap but not for a sign swap.

Usage::

    python -m experiments.studies.toy_caption_sensitivity --teacher jax_vdit/toy/assets/toy_teacher \
        --out experiments/results/toy_teacher/caption_sensitivity
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments.studies.presets import register
from experiments.studies.toy_report import command_line, save_report

from jax_vdit import schedules
from jax_vdit.toy import TOY_TEACHER_DIR, load_toy_teacher, world_for
from jax_vdit.toy.world import encode_captions, heldout_batch

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "up-left": "down-right",
            "down-right": "up-left", "up-right": "down-left", "down-left": "up-right"}
OTHER_AXIS = {"left": "up", "right": "down", "up": "left", "down": "right", "up-left": "up-right",
              "up-right": "up-left", "down-left": "down-right", "down-right": "down-left"}


def swapped_spec(spec, attribute: str, world):
    """``spec`` with ``attribute`` (colour / speed / direction-axis / direction-sign) of every object changed;
    None if no object has that attribute (static objects have no speed or direction) or ``world`` offers no other
    value for it (a one-speed world, a direction whose opposite the world lacks)."""
    objects, changed = [], False
    speeds = [n for n, _ in world.speeds]
    used_colours = {o.colour for o in spec.objects}
    for o in spec.objects:
        if attribute == "colour":
            new = next(c for c in world.colours if c not in used_colours)
            used_colours.add(new)
            o, changed = dataclasses.replace(o, colour=new), True
        elif o.moving and attribute == "speed" and len(speeds) > 1:
            o, changed = dataclasses.replace(o, speed=speeds[(speeds.index(o.speed) + 1) % len(speeds)]), True
        elif o.moving and attribute == "direction-sign" and OPPOSITE[o.direction] in world.directions:
            o, changed = dataclasses.replace(o, direction=OPPOSITE[o.direction]), True
        elif o.moving and attribute == "direction-axis" and OTHER_AXIS[o.direction] in world.directions:
            o, changed = dataclasses.replace(o, direction=OTHER_AXIS[o.direction]), True
        objects.append(o)
    return dataclasses.replace(spec, objects=tuple(objects)) if changed else None


def draw_key(t: int, draw: int) -> jax.Array:
    """The noise key of draw ``draw`` at timestep ``t``: the same noise for the true and the swapped caption."""
    return jax.random.fold_in(jax.random.key(t), draw)


def eps_error(model, latents, text, mask, t: int, key) -> np.ndarray:
    """Per-sample mean squared epsilon error at timestep ``t`` (N,)."""
    noise = jax.random.normal(key, latents.shape)
    tt = jnp.full((latents.shape[0],), t, jnp.int32)
    x_t = schedules.add_noise(latents, noise, tt)
    eps = model(x_t, tt, text, mask)
    return np.asarray(jnp.mean((eps - noise) ** 2, axis=(1, 2, 3, 4)))


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="release-format folder (default: the shipped toy teacher)")
    p.add_argument("--timesteps", default="100,300,500,700,900")
    p.add_argument("--noise-draws", type=int, default=4, help="noise draws per video and timestep")
    p.add_argument("--world", default=None, help="default: the world recorded with the teacher")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    world = world_for(args.teacher or TOY_TEACHER_DIR, args.world)
    model = load_toy_teacher(args.teacher)
    batch = heldout_batch(world)
    latents = jnp.asarray(batch["latents"])
    timesteps = [int(t) for t in args.timesteps.split(",")]
    attributes = ("colour", "speed", "direction-axis", "direction-sign")
    true_text_all, true_mask_all = encode_captions(batch["captions"], world)
    true_errors: dict[tuple, float] = {}  # (videos, t) -> error with the true captions; attributes share subsets

    def true_error(idx: np.ndarray, t: int) -> float:
        if (tuple(idx), t) not in true_errors:
            text, mask = jnp.asarray(true_text_all[idx]), jnp.asarray(true_mask_all[idx])
            true_errors[(tuple(idx), t)] = float(np.mean(
                [eps_error(model, latents[idx], text, mask, t, draw_key(t, d)) for d in range(args.noise_draws)]))
        return true_errors[(tuple(idx), t)]

    rows = {}
    for attribute in attributes:
        pairs = [(i, swapped_spec(s, attribute, world)) for i, s in enumerate(batch["specs"])]
        pairs = [(i, s) for i, s in pairs if s is not None]
        if not pairs:
            continue  # the world has nothing to swap this word for
        idx = np.array([i for i, _ in pairs])
        alt_text, alt_mask = (jnp.asarray(a) for a in encode_captions([s.caption for _, s in pairs], world))
        for t in timesteps:
            e_true = true_error(idx, t)
            e_alt = float(np.mean([eps_error(model, latents[idx], alt_text, alt_mask, t, draw_key(t, d))
                                   for d in range(args.noise_draws)]))
            rows[(attribute, t)] = {"videos": len(idx), "err_true": e_true, "err_swapped": e_alt,
                                    "relative_increase": (e_alt - e_true) / e_true}
    lines = ["| swapped word | videos | " + " | ".join(f"t={t}" for t in timesteps) + " |",
             "|---|---:|" + "---:|" * len(timesteps)]
    for attribute in [a for a in attributes if (a, timesteps[0]) in rows]:
        cells = " | ".join(f"{rows[(attribute, t)]['relative_increase']:+.3f}" for t in timesteps)
        lines.append(f"| {attribute} | {rows[(attribute, timesteps[0])]['videos']} | {cells} |")
    command = command_line()
    text = "\n".join([f"# Caption sensitivity of {args.teacher or 'the shipped toy teacher'}", "",
                      f"Command: `{command}` ({jax.devices()[0].device_kind}, jax {jax.__version__})", "",
                      "Relative increase of the epsilon error when one caption word is swapped (ground-truth videos "
                      f"of the held-out prompts, {args.noise_draws} noise draws per timestep):", "", *lines, ""])
    print(text)
    save_report(args.out, "caption_sensitivity", text, {
        "command": command, "teacher": args.teacher,
        "rows": [{"attribute": a, "t": t, **r} for (a, t), r in rows.items()]})


if __name__ == "__main__":
    main()
