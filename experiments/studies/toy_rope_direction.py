"""Can a toy teacher's self-attention tell forwards from backwards? The odd share of its RoPE forms, per axis.

For every self-attention head, :func:`jax_vdit.diagnostics.rope_odd_fraction` splits the rotary bilinear forms of
W_q, W_k into the part that is even in the offset (cannot tell d from -d) and the part that is odd, per axis
(t, y, x), over the rotary pairs that turn by >= 1 radian across the toy grid (9 x 12 x 12 tokens). Random
weights give ~0.5 on every axis. A teacher whose time-axis share falls towards 0 cannot compute the sign of motion
in any head: the signature of a teacher blind to "left" vs "right" (experiments/studies/README.md).

Usage::

    python -m experiments.studies.toy_rope_direction --teacher shipped=jax_vdit/toy/assets/toy_teacher --random \
        --out experiments/results/toy_teacher/rope_direction
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from experiments.studies.presets import register
from experiments.studies.toy_guidance_sweep import parse_teachers
from experiments.studies.toy_report import command_line, save_report

from jax_vdit.config import get_preset
from jax_vdit.diagnostics import rope_odd_fraction
from jax_vdit.model import init_model
from jax_vdit.toy import load_toy_teacher

AXES = ("t", "y", "x")


def summary(frac: np.ndarray) -> dict:
    """Per-axis mean and min over heads and layers, and per-layer means: from a (layers, heads, 3) array."""
    return {
        "mean": {a: float(frac[..., i].mean()) for i, a in enumerate(AXES)},
        "min": {a: float(frac[..., i].min()) for i, a in enumerate(AXES)},
        "per_layer_mean": {a: frac[..., i].mean(axis=1).round(3).tolist() for i, a in enumerate(AXES)},
    }


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", action="append", default=[], help="NAME=FOLDER (repeatable)")
    p.add_argument("--random", action="store_true", help="add the toy-teacher preset at initialisation (seed 0)")
    p.add_argument("--grid", default="9,12,12", help="latent tokens T',H',W'")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    grid = tuple(int(v) for v in args.grid.split(","))
    models = {name: load_toy_teacher(path) for name, path in parse_teachers(args.teacher).items()}
    if args.random:
        models["random init (toy-teacher, seed 0)"] = init_model(get_preset("toy-teacher"), seed=0)
    if not models:
        raise SystemExit("nothing to measure: pass --teacher NAME=FOLDER and/or --random")
    rows = {name: summary(np.asarray(rope_odd_fraction(m, grid))) for name, m in models.items()}
    lines = ["| model | t: mean (min) | y: mean (min) | x: mean (min) | t, per layer |", "|---|---:|---:|---:|---|"]
    for name, r in rows.items():
        cells = " | ".join(f"{r['mean'][a]:.3f} ({r['min'][a]:.3f})" for a in AXES)
        lines.append(f"| {name} | {cells} | {', '.join(f'{v:.2f}' for v in r['per_layer_mean']['t'])} |")
    command = command_line()
    text = "\n".join(["# Odd share of the self-attention RoPE forms, per axis", "",
                      f"Command: `{command}` ({jax.devices()[0].device_kind}, jax {jax.__version__}); grid {grid}", "",
                      "0.5: as random weights; 0: the heads cannot tell +d from -d along that axis.", "", *lines, ""])
    print(text)
    save_report(args.out, "rope_direction", text, {"command": command, "grid": grid, "rows": rows})


if __name__ == "__main__":
    main()
