"""Where does the toy teacher lose the caption? ToyBench of its one-step x0 predictions from noised ground truth.

For the 32 held-out prompts, render the ground-truth video, noise it to timestep t, predict x0 = (x_t - s_t eps)/a_t
with the teacher, and score that estimate. High scores at moderate t mean the teacher represents the attribute given
partial evidence; low scores at high t are expected (the one-step estimate is a blurred average) — generation then
depends on the text alone, which is what the sampling results measure.

Usage::

    python -m experiments.studies.toy_teacher_x0_diagnostic [--teacher DIR] --out experiments/results/toy_teacher
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.studies.presets import register
from jax_vdit import schedules
from jax_vdit.toy import TOY_TEACHER_DIR, heldout, load_toy_teacher, world_for
from jax_vdit.toy.world import encode_captions, evaluate, format_table, render_spec

ROOT = Path(__file__).resolve().parents[2]

KEYS = ["alignment", "colour_acc", "shape_acc", "direction_acc", "speed_acc", "dynamic_degree"]


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None)
    p.add_argument("--timesteps", default="200,500,700,850,950")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "toy_teacher"))
    args = p.parse_args()
    world = world_for(args.teacher or TOY_TEACHER_DIR)  # the world the teacher was trained on
    model = load_toy_teacher(args.teacher)
    specs = list(heldout(world))
    x0 = np.stack([render_spec(s, world, seed=i)[0] for i, s in enumerate(specs)])
    text, mask = encode_captions([s.caption for s in specs], world)
    forward = jax.jit(lambda x, t: model(x, t, jnp.asarray(text), jnp.asarray(mask)))
    results = {"ground truth": {k: float(v) for k, v in evaluate(x0, specs, world)["mean"].items()}}
    for t in [int(v) for v in args.timesteps.split(",")]:
        tt = jnp.full((len(specs),), t)
        x_t = schedules.add_noise(jnp.asarray(x0), jax.random.normal(jax.random.key(t), x0.shape), tt)
        x0_hat = np.asarray(schedules.predicted_x0(x_t, forward(x_t, tt.astype(jnp.float32)), tt))
        results[f"x0 from t={t}"] = {k: float(v) for k, v in evaluate(x0_hat, specs, world)["mean"].items()}
    table = format_table(results, keys=KEYS)
    command = "python -m experiments.studies.toy_teacher_x0_diagnostic " + " ".join(sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = {"command": command, "device": f"{jax.devices()[0].device_kind} ({platform.machine()})",
              "date": datetime.datetime.now().isoformat(timespec="seconds")}
    (out / "x0_diagnostic.json").write_text(json.dumps({"header": header, "results": results}, indent=2))
    (out / "x0_diagnostic.md").write_text(
        f"# Toy teacher: ToyBench of one-step x0 predictions ({header['device']}, {header['date']})\n\n"
        f"Command: `{command}`\n\n32 held-out prompts, ground truth noised to t.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
