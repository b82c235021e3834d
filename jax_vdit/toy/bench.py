"""Sampling toy prompts and scoring them with ToyBench: one noise seed (:func:`toybench`) or several with mean,
standard deviation and per-seed values (:func:`summarise_seeds`), on the validation or the test split."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jax_vdit import sampling
from jax_vdit.model import DENSE, AttentionConfig
from jax_vdit.toy.world import ToyWorldConfig, encode_captions, evaluate, validation_split


def encode_specs(specs, world: ToyWorldConfig) -> tuple[np.ndarray, np.ndarray]:
    return encode_captions([s.caption for s in specs], world)


def sample_specs(
    model,
    specs,
    world: ToyWorldConfig,
    *,
    plan: sampling.SamplingPlan,
    guidance_scale: float | None,
    key: jax.Array,
    attention: AttentionConfig = DENSE,
    batch_size: int = 32,
    latent_dtype=jnp.float32,
) -> np.ndarray:
    """Latents (N, 4, T, H, W) float32 for the captions of ``specs``. ``guidance_scale=None``: no CFG (one
    forward per step, as consistency students sample); otherwise CFG against the empty caption."""
    text, mask = encode_specs(specs, world)
    neg_text, neg_mask = encode_captions([""], world)
    out = []
    for i in range(0, len(specs), batch_size):
        kw = {}
        if guidance_scale is not None:
            kw = dict(negative_text=jnp.asarray(neg_text), negative_mask=jnp.asarray(neg_mask),
                      guidance_scale=guidance_scale)
        lat = sampling.sample(model, jnp.asarray(text[i:i + batch_size]), jnp.asarray(mask[i:i + batch_size]),
                              key=jax.random.fold_in(key, i), latent_shape=world.latent_shape, plan=plan,
                              attention=attention, latent_dtype=latent_dtype, **kw)
        out.append(np.asarray(jax.device_get(lat), np.float32))
    return np.concatenate(out)


def toybench(videos: np.ndarray, specs, world: ToyWorldConfig, reference: np.ndarray | None = None) -> dict:
    """ToyBench means (plus ``teacher_rel_err`` against ``reference`` videos from the same noise)."""
    from jax_vdit.toy.world import teacher_error

    scores = {k: float(v) for k, v in evaluate(videos, list(specs), world)["mean"].items()}
    if reference is not None:
        scores.update(teacher_error(videos, reference)["mean"])
    return scores


def heldout(world: ToyWorldConfig, count: int | None = None):
    """The first ``count`` (default all) validation prompts: the original held-out set, for checks, selection,
    tuning and the demo. Final reports use ``jax_vdit.toy.world.report_split(world, "test")``."""
    return validation_split(world).take(count)


def summarise_seeds(per_seed: dict[int, dict[str, float]]) -> dict:
    """ToyBench scores of several noise seeds -> ``{"mean": {k: float}, "sd": {k: float | None}, "per_seed":
    {seed: {k: float}}, "seeds": [int]}``. ``sd`` is the sample standard deviation over seeds (ddof 1; None with
    one seed); a score missing or NaN for a seed is left out of its mean and sd."""
    if not per_seed:
        raise ValueError("summarise_seeds needs the scores of at least one seed")
    keys = list(dict.fromkeys(k for scores in per_seed.values() for k in scores))
    mean, sd = {}, {}
    for k in keys:
        vals = np.array([float(s[k]) for s in per_seed.values() if k in s and math.isfinite(float(s[k]))])
        mean[k] = float(vals.mean()) if vals.size else float("nan")
        sd[k] = float(vals.std(ddof=1)) if vals.size > 1 else None
    return {"mean": mean, "sd": sd, "per_seed": {int(s): dict(v) for s, v in per_seed.items()},
            "seeds": [int(s) for s in per_seed]}


# what two `vdit toybench --json` runs must share to be one evaluation over more seeds
_SAME_RUN = ("checkpoint", "world", "split", "prompts", "platform", "device_kind", "jax")


def _checkpoint_of(header: dict) -> str | None:
    """The checkpoint a toybench header scored (recorded since 2026-12; older files: the command's first argument)."""
    if header.get("checkpoint"):
        return str(header["checkpoint"])
    words = str(header.get("command", "")).split()[2:]
    return words[0] if words and not words[0].startswith("--") else None


def extend_seeds(old: dict, new: dict) -> dict:
    """Join two ``vdit toybench --json`` payloads of the same evaluation run with different noise seeds.

    Both must score the same checkpoint, world, split, prompt count, sampler settings, device and jax version, and
    no seed may appear in both; otherwise ``ValueError`` names what differs. Returns a payload of the same layout whose
    results are :func:`summarise_seeds` of the union of the per-seed scores, whose header lists both runs' commands
    (``commands``) and whose ``seeds`` are the old seeds then the new ones."""
    h_old, h_new = dict(old["header"]), dict(new["header"])
    h_old["checkpoint"], h_new["checkpoint"] = _checkpoint_of(h_old), _checkpoint_of(h_new)
    differ = [f"{k} ({h_old.get(k)!r} vs {h_new.get(k)!r})" for k in _SAME_RUN if h_old.get(k) != h_new.get(k)]
    if set(old["results"]) != set(new["results"]):
        differ.append(f"settings ({sorted(old['results'])} vs {sorted(new['results'])})")
    if differ:
        raise ValueError("cannot add these seeds to the earlier toybench results: they differ in " + "; ".join(differ))
    repeated = sorted(set(map(int, h_old["seeds"])) & set(map(int, h_new["seeds"])))
    if repeated:
        raise ValueError(f"noise seeds {repeated} are already in the earlier toybench results")
    results = {}
    for setting, row in old["results"].items():
        per_seed = {int(s): v for s, v in row["per_seed"].items()}
        per_seed.update({int(s): v for s, v in new["results"][setting]["per_seed"].items()})
        results[setting] = summarise_seeds(per_seed)
    commands = list(h_old.get("commands") or [h_old["command"]]) + [h_new["command"]]
    header = {**h_new, "command": h_new["command"], "commands": commands,
              "seeds": [int(s) for s in h_old["seeds"]] + [int(s) for s in h_new["seeds"]]}
    return {"header": header, "results": results}


def device_info() -> dict[str, str]:
    """Which device runs the sampling: ``platform`` ("cpu", "gpu", "tpu"; numerics differ between them) and
    ``device_kind``."""
    d = jax.devices()[0]
    return {"platform": d.platform, "device_kind": d.device_kind}


