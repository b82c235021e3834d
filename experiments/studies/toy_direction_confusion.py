"""Which way do a toy teacher's objects move? The direction confusion of its samples on the held-out prompts.

Samples the held-out prompts with a teacher (Euler-ancestral, CFG) or reads saved latents, scores them with
ToyBench, and prints the per-attribute accuracies plus the direction confusion by angle (correct / 45 / 90 / 135
degrees / opposite / not moving): the tool behind the "direction is the weak attribute" note of the toy teacher.

Usage::

    python -m experiments.studies.toy_direction_confusion --teacher jax_vdit/toy/assets/toy_teacher --steps 20 \
        --save-videos /tmp/videos.npy --out experiments/results/toy_teacher/direction_confusion
    python -m experiments.studies.toy_direction_confusion --videos /tmp/videos.npy --steps 20 --out ...
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import numpy as np

from experiments.studies.presets import register
from experiments.studies.toy_report import save_report

from jax_vdit import sampling
from jax_vdit.toy import TOY_TEACHER_DIR, heldout, load_toy_teacher, sample_specs, world_for
from jax_vdit.toy.world import direction_confusion, evaluate, get_config


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="release-format folder (default: the shipped toy teacher)")
    p.add_argument("--videos", default=None, help="score these saved latents (N, 4, T, H, W) instead of sampling")
    p.add_argument("--save-videos", default=None, help="save the sampled latents here (.npy)")
    p.add_argument("--steps", type=int, default=20, help="Euler-ancestral steps")
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--world", default=None,
                   help="default: the world recorded with --teacher (with --videos alone: toy-9x24x24)")
    p.add_argument("--out", default=None, help="folder for direction_confusion.{json,md}")
    args = p.parse_args()

    if args.videos and args.teacher is None:
        world = get_config(args.world or "toy-9x24x24")
    else:  # the teacher's own world; a --world that disagrees is refused
        world = world_for(args.teacher or TOY_TEACHER_DIR, args.world)
    specs = heldout(world, args.prompts)
    if args.videos:
        videos = np.load(args.videos)
        sampling_s = None
    else:
        model = load_toy_teacher(args.teacher)
        t0 = time.perf_counter()
        videos = sample_specs(model, specs, world, plan=sampling.euler_ancestral(args.steps),
                              guidance_scale=args.guidance, key=jax.random.PRNGKey(args.seed))
        sampling_s = round(time.perf_counter() - t0, 1)
        if args.save_videos:
            np.save(args.save_videos, videos)
    result = evaluate(videos, specs, world)
    counts = direction_confusion(result["directions"])
    lines = ["| prompted | seen |", "|---|---|"] + [f"| {w} | {g} |" for w, g in result["directions"]]
    mean = {k: round(v, 3) for k, v in result["mean"].items()}
    summary = {
        "command": "python -m experiments.studies.toy_direction_confusion " + " ".join(sys.argv[1:]),
        "device": jax.devices()[0].device_kind if not args.videos else "(scored only)",
        "setting": f"euler-a {args.steps} g{args.guidance} seed {args.seed}, {args.prompts} held-out prompts",
        "sampling_s": sampling_s, "toybench": mean, "direction_confusion": counts,
        "pairs": result["directions"],
    }
    table = ["| " + " | ".join(counts) + " |", "|" + "---|" * len(counts), "| " + " | ".join(map(str, counts.values())) + " |"]
    text = "\n".join([f"# Direction confusion ({summary['setting']})", "", f"Command: `{summary['command']}`", "",
                      "ToyBench: " + ", ".join(f"{k} {mean[k]}" for k in
                                               ("alignment", "colour_acc", "shape_acc", "speed_acc", "direction_acc",
                                                "bounce_acc")),
                      "", *table, "", *lines, ""])
    print(text)
    save_report(args.out, "direction_confusion", text, summary)


if __name__ == "__main__":
    main()
