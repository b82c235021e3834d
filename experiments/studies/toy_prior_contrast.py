"""How much of each caption word's effect on the *data* does a toy teacher reproduce at high noise?

For a caption pair that differs in one word (e.g. "a red circle moving left quickly" against "... right ..."),
the data's answer at pure noise is the difference of the two conditional mean videos,
``m_a - m_b = E[x0 | a] - E[x0 | b]``: it is what an exact denoiser's x0-prediction changes by when the caption
changes and the input carries no information. This script renders ``--renders`` videos of each caption (common
nuisance seeds), noises a 50/50 mix of them at timestep ``t`` and asks the teacher for its x0-prediction under
both captions on the *same* inputs. The ratio

    captured = <mean(x0_hat(a) - x0_hat(b)), m_a - m_b> / ||m_a - m_b||^2

is 1 for an exact denoiser as ``t -> T`` and 0 for a model that ignores the word. ``data_energy`` =
``mean((m_a - m_b)^2)`` says how much the word is worth in the data.

The script also prints the objectness-weighted horizontal centroid of each latent frame of the data mean and of
the model's mean prediction for the first contrast ("left"): a model that knows where the clip starts moves it
from right to left like the data; a model without absolute time keeps it still.

Usage::

    python -m experiments.studies.toy_prior_contrast --teacher jax_vdit/toy/assets/toy_teacher \
        --out experiments/results/toy_teacher/prior_contrast
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.studies.presets import register
from experiments.studies.toy_report import command_line, save_report

from jax_vdit import schedules
from jax_vdit.toy import TOY_TEACHER_DIR, load_toy_teacher, world_for
from jax_vdit.toy.world import encode_captions
from jax_vdit.toy.world.data import render_spec
from jax_vdit.toy.world.spec import ObjectSpec, SceneSpec

BASE = {"shape": "circle", "colour": "red", "direction": "left", "speed": "quickly", "bounce": False}

# (name, caption a's fields, caption b's fields): single objects on a plain background
CONTRASTS: tuple[tuple[str, dict, dict], ...] = (
    ("direction sign, quick (left / right)", BASE, {**BASE, "direction": "right"}),
    ("direction sign, slow (left / right)", {**BASE, "speed": "slowly"}, {**BASE, "speed": "slowly",
                                                                            "direction": "right"}),
    ("direction sign, quick (up / down)", {**BASE, "direction": "up"}, {**BASE, "direction": "down"}),
    ("direction axis, quick (left / up)", BASE, {**BASE, "direction": "up"}),
    ("speed (quick / slow)", BASE, {**BASE, "speed": "slowly"}),
    ("colour (red / blue)", BASE, {**BASE, "colour": "blue"}),
)


def spec_of(fields: dict) -> SceneSpec:
    return SceneSpec((ObjectSpec(**fields),), "plain")


def renders(fields: dict, world, count: int) -> np.ndarray:
    """(count, 4, T, H, W) float32 latents of one caption; nuisance seed i is shared by every caption. Rendered
    once per caption and world (every timestep and contrast reuses them; do not modify the array)."""
    return _renders(tuple(sorted(fields.items())), world, count)


@functools.lru_cache(maxsize=32)
def _renders(fields: tuple, world, count: int) -> np.ndarray:
    spec = spec_of(dict(fields))
    return np.stack([render_spec(spec, world, seed=[23, i])[0] for i in range(count)])


def x_centroid(video: np.ndarray) -> np.ndarray:
    """(T,) objectness-weighted mean x (latent pixels) of a (4, T, H, W) latent, background level removed."""
    obj = video[3] - np.median(video[3], axis=(1, 2), keepdims=True)
    w = np.clip(obj, 0.0, None)
    xs = np.arange(video.shape[-1], dtype=np.float64)
    return (w * xs).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1e-9)


def contrast(model, world, a: dict, b: dict, t: int, count: int, batch: int, key) -> dict:
    """The teacher's captured fraction of the data's a-vs-b mean difference at timestep ``t``."""
    va, vb = renders(a, world, count), renders(b, world, count)
    data_diff = va.mean(0) - vb.mean(0)
    mix = np.concatenate([va[: count // 2], vb[: count - count // 2]])
    (text_a, mask_a), (text_b, mask_b) = (encode_captions([spec_of(f).caption], world) for f in (a, b))
    sum_diff = np.zeros_like(data_diff, dtype=np.float64)
    sum_pred_a = np.zeros_like(data_diff, dtype=np.float64)
    for start in range(0, count, batch):
        x0 = jnp.asarray(mix[start:start + batch])
        n = x0.shape[0]
        tt = jnp.full((n,), t, jnp.int32)
        x_t = schedules.add_noise(x0, jax.random.normal(jax.random.fold_in(key, start), x0.shape), tt)
        preds = []
        for text, mask in ((text_a, mask_a), (text_b, mask_b)):
            eps = model(x_t, tt, jnp.asarray(np.repeat(text, n, 0)), jnp.asarray(np.repeat(mask, n, 0)))
            preds.append(np.asarray(schedules.predicted_x0(x_t, eps, tt), np.float64))
        sum_diff += (preds[0] - preds[1]).sum(0)
        sum_pred_a += preds[0].sum(0)
    model_diff = sum_diff / count
    energy = float(np.sum(data_diff.astype(np.float64) ** 2))
    return {
        "t": t,
        "data_energy": energy / data_diff.size,
        "model_energy": float(np.mean(model_diff ** 2)),
        "captured": float(np.sum(model_diff * data_diff) / energy),
        "data_x_centroid_a": x_centroid(va.mean(0)).round(2).tolist(),
        "model_x_centroid_a": x_centroid(sum_pred_a / count).round(2).tolist(),
    }


def main() -> None:
    register()  # the research presets (anchored worlds, deeper teachers) that recorded teachers may name
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=None, help="release-format folder (default: the shipped toy teacher)")
    p.add_argument("--timesteps", default="999,900,700")
    p.add_argument("--renders", type=int, default=64, help="videos per caption")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--world", default=None, help="default: the world recorded with the teacher")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.renders < 2:
        raise SystemExit("--renders must be >= 2")

    world = world_for(args.teacher or TOY_TEACHER_DIR, args.world)
    model = load_toy_teacher(args.teacher)
    timesteps = [int(t) for t in args.timesteps.split(",")]
    rows = []
    for name, a, b in CONTRASTS:
        for t in timesteps:
            r = contrast(model, world, a, b, t, args.renders, args.batch, jax.random.key(t))
            rows.append({"contrast": name, **r})
            print(f"{name:40s} t={t:4d} data {r['data_energy']:.4f} model {r['model_energy']:.4f} "
                  f"captured {r['captured']:+.3f}", flush=True)
    lines = ["| caption pair | data energy | " + " | ".join(f"captured t={t}" for t in timesteps) + " |",
             "|---|---:|" + "---:|" * len(timesteps)]
    for name, _, _ in CONTRASTS:
        mine = [r for r in rows if r["contrast"] == name]
        lines.append(f"| {name} | {mine[0]['data_energy']:.4f} | "
                     + " | ".join(f"{r['captured']:+.3f}" for r in mine) + " |")
    first = [r for r in rows if r["contrast"] == CONTRASTS[0][0]]
    lines += ["", f"Horizontal centroid per latent frame, caption \"{spec_of(CONTRASTS[0][1]).caption}\":", "",
              "| source | " + " | ".join(f"f{i}" for i in range(world.num_frames)) + " |",
              "|---|" + "---:|" * world.num_frames,
              "| data mean | " + " | ".join(f"{v:.1f}" for v in first[0]["data_x_centroid_a"]) + " |"]
    lines += [f"| teacher mean prediction, t={r['t']} | " + " | ".join(f"{v:.1f}" for v in r["model_x_centroid_a"])
              + " |" for r in first]
    command = command_line()
    text = "\n".join([f"# High-noise caption contrasts of {args.teacher or 'the shipped toy teacher'}", "",
                      f"Command: `{command}` ({jax.devices()[0].device_kind}, jax {jax.__version__}); world "
                      f"{world.name}; {args.renders} renders per caption", "",
                      "captured = projection of the teacher's mean x0-prediction change onto the data's mean-video "
                      "difference (1 = an exact denoiser at t -> T, 0 = the word is ignored).", "", *lines, ""])
    print(text)
    save_report(args.out, "prior_contrast", text,
                {"command": command, "teacher": args.teacher, "world": world.name, "rows": rows})


if __name__ == "__main__":
    main()
