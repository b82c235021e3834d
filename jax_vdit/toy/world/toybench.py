"""ToyBench: metrics on generated latent videos of the toy world, judged against the SceneSpecs they were
prompted with.

Because the world is known, each video is *parsed back* into objects and motions, and those are compared with the
spec. The parser only assumes the latent encoding (``encoding.py``) and the shape geometry (``shapes.py``); it is
built to work on imperfect videos (noise, blur, flicker), not only on exact renders:

1. **Background.** Per video, per pixel: the temporal median of the raw channels; where that median is itself
   object-like (static or slow objects, plus a 1-pixel dilation) the video's global per-channel median is used
   instead.
2. **Object alpha.** ``alpha = (x3 - bg3) / (object_x - bg3)`` from the objectness channel (an estimate of the
   compositing coverage); the object mask is ``box3x3(alpha) > 0.5`` dilated by one pixel (cores plus their
   anti-aliased rims); centroids and areas are alpha-weighted inside it.
3. **Objects.** The number of objects K is taken from the spec (1 or 2). For K = 2 every frame's mask pixels are
   split by 2-means on their coordinates and the two clusters are linked over time by nearest centroid; every
   pixel belongs to the nearer cluster. An object counts as present in a frame if its mask area is at least 30%
   of a typical object's area.
4. **Attributes.** colour: least-squares unmixing (``dv = a (o - bg)``, solved for o) over mask pixels, then the
   nearest colour of the config in opponent space; shape: the shape whose anti-aliased template, placed at the
   estimated centroid, has the smallest squared error against alpha (summed over present frames); speed: median
   frame-to-frame centroid displacement, classified as static (< half the slowest speed) or the nearest speed in
   log space; direction: the 8-way direction nearest to the least-squares velocity over the early frames (before
   any possible bounce); bounce: a velocity component (> 0.4 x speed) that reverses sign between the early and
   the late frames.
5. **Matching.** For two-object scenes the assignment of parsed objects to spec objects that maximises the number
   of matching attributes is used (ties: nearest colours).

Scores (per video; batch means are plain means, NaN-aware where an attribute does not apply):

* ``alignment``: fraction of spec attributes recovered, averaged over objects (colour, shape, speed class; plus
  direction and bounce for moving objects). Per attribute: ``colour_acc``, ``shape_acc``, ``speed_acc``,
  ``direction_acc``, ``bounce_acc``; ``count_acc`` (number of objects estimated from the total mask area).
* ``smoothness``: ``exp(-rms / 0.25 px)`` of the residual of a per-axis least-squares fit of the centroid track
  with a line plus one kink (constant velocity with at most one bounce per axis); 0 for a missing object.
* ``consistency``: subject consistency, ``present_fraction * mean(exp(-area_cv / 0.1), exp(-colour_dev / 0.1),
  shape_agreement)``: stable size, stable colour (raw opponent units) and the same best shape in every frame.
* ``dynamic_degree``: fraction of objects whose moving/static state matches the spec; ``speed_ratio``: estimated /
  spec speed for moving objects (1 = right amount of motion; few-step students often move too little).
* ``overall``: mean of alignment, smoothness, consistency and dynamic_degree.

Resolution (``python -m jax_vdit.toy.world.calibrate``): the attribute scores are deliberately robust (the parser
averages over pixels and frames): ground truth plus N(0, 1) latent noise still reaches alignment ~0.98, while
smoothness and consistency fall steadily with the noise level (0.95 / 0.98 on ground truth, 0.67 / 0.75 at
sigma = 1). Pure noise and all-zero videos contain no objects and score 0. Use alignment for "does it follow the
prompt", smoothness / consistency / speed_ratio for sample quality, and :func:`teacher_error` for fidelity of a
student to its teacher.

:func:`teacher_error` compares student samples with the teacher's samples from the same noise.
:func:`format_table` prints a markdown table for several sampler settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import DIRECTION_VECTORS, STATIC, ToyWorldConfig
from .encoding import colour_table, latent_to_raw
from .shapes import shape_alpha, shape_area
from .spec import ObjectSpec, SceneSpec, validate_spec

SMOOTH_SCALE_PX = 0.25
AREA_CV_SCALE = 0.1
COLOUR_DEV_SCALE = 0.1
PRESENT_AREA_FRACTION = 0.3
MASK_THRESHOLD = 0.5

SUMMARY_KEYS = (
    "overall",
    "alignment",
    "smoothness",
    "consistency",
    "dynamic_degree",
    "colour_acc",
    "shape_acc",
    "direction_acc",
    "speed_acc",
    "bounce_acc",
    "count_acc",
    "speed_ratio",
)


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _box3(a: np.ndarray) -> np.ndarray:
    """3 x 3 box filter over the last two axes with edge replication."""
    h, w = a.shape[-2:]
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    out = np.zeros_like(a)
    for i in range(3):
        for j in range(3):
            out += p[..., i : i + h, j : j + w]
    return out / 9.0


def _dilate3(m: np.ndarray) -> np.ndarray:
    h, w = m.shape[-2:]
    p = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(1, 1), (1, 1)], mode="constant")
    out = np.zeros_like(m)
    for i in range(3):
        for j in range(3):
            out |= p[..., i : i + h, j : j + w]
    return out


def _slope(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y (N, D) over times t (N,) -> (D,)."""
    tc = t - t.mean()
    return (tc[:, None] * (y - y.mean(axis=0))).sum(axis=0) / max(float((tc**2).sum()), 1e-12)


def _kink_projectors(num_frames: int) -> np.ndarray:
    """(n_tau, T, T) residual projectors of the bases [1, t, |t - tau|] over a grid of kink times tau."""
    t = np.arange(num_frames, dtype=np.float64)
    taus = np.arange(0.25, num_frames - 1, 0.25)
    mats = []
    for tau in taus:
        b = np.stack([np.ones_like(t), t, np.abs(t - tau)], axis=1)
        mats.append(np.eye(num_frames) - b @ np.linalg.pinv(b))
    return np.stack(mats)


def _smooth_rms(track: np.ndarray, projectors: np.ndarray) -> float:
    """RMS residual (pixels) of the best line-plus-one-kink fit, per axis, of a (T, 2) track."""
    res = np.einsum("kst,ta->ksa", projectors, track)  # (n_tau, T, 2)
    sse = (res**2).sum(axis=1).min(axis=0)  # best kink per axis
    return float(np.sqrt(sse.sum() / (2 * track.shape[0])))


def _two_means(coords: np.ndarray, weights: np.ndarray, iters: int = 8) -> np.ndarray:
    """Weighted 2-means per frame. coords (P, 2), weights (T, P) >= 0 -> centres (T, 2, 2)."""
    tot = weights.sum(axis=1, keepdims=True)
    mean = (weights @ coords) / np.maximum(tot, 1e-12)  # (T, 2)
    d0 = ((coords[None] - mean[:, None]) ** 2).sum(-1)  # (T, P)
    a = np.argmax(np.where(weights > 0, d0, -1.0), axis=1)
    da = ((coords[None] - coords[a][:, None]) ** 2).sum(-1)
    b = np.argmax(np.where(weights > 0, da, -1.0), axis=1)
    centres = np.stack([coords[a], coords[b]], axis=1)  # (T, 2, 2)
    for _ in range(iters):
        d = ((coords[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (T, P, 2)
        lab = np.argmin(d, axis=-1)
        for j in (0, 1):
            wj = weights * (lab == j)
            s = wj.sum(axis=1, keepdims=True)
            new = (wj @ coords) / np.maximum(s, 1e-12)
            centres[:, j] = np.where(s > 0, new, centres[:, j])
    return centres


def _classify_direction(v: np.ndarray, config: ToyWorldConfig) -> str:
    vecs = np.array([DIRECTION_VECTORS[d] for d in config.directions])
    return config.directions[int(np.argmax(vecs @ v))]


def _classify_speed(s: float, config: ToyWorldConfig) -> str:
    names = [n for n, _ in config.speeds]
    vals = np.array([v for _, v in config.speeds])
    if s < 0.5 * vals[0]:
        return STATIC
    return names[int(np.argmin(np.abs(np.log(max(s, 1e-6)) - np.log(vals))))]


# --------------------------------------------------------------------------------------------------------------
# parsing one video
# --------------------------------------------------------------------------------------------------------------


def _parse_video(raw: np.ndarray, k: int, config: ToyWorldConfig, projectors: np.ndarray) -> list[dict[str, Any]]:
    """Parse a raw (4, T, H, W) video into ``k`` object estimates.

    Each estimate is a dict with ``found`` (bool: present in at least half the frames), ``present_fraction``,
    ``area`` (T,), ``count`` (objects estimated from the total mask area) and, when found: ``positions`` (T, 2)
    centroid (x, y), ``colour`` / ``colour_opponent`` (3,) / ``colour_dev``, ``shape`` / ``shape_agreement``,
    ``area_cv``, ``speed_px`` / ``speed`` (class), ``direction``, ``bounce``, ``smooth_rms``.
    """
    _, t_len, h, w = raw.shape
    g = np.median(raw.reshape(4, -1), axis=1)  # (4,)
    m = np.median(raw, axis=1)  # (4, H, W)
    contrast = max(config.object_x - g[3], 0.25)
    occupied = _dilate3((m[3] - g[3]) > 0.5 * contrast)
    bg = np.where(occupied[None], g[:, None, None], m)  # (4, H, W)
    den = np.maximum(config.object_x - bg[3], 0.25)
    alpha = (raw[3] - bg[3][None]) / den[None]  # (T, H, W)
    mask = _dilate3(_box3(alpha) > MASK_THRESHOLD)  # object cores plus their anti-aliased rims
    wgt = np.clip(alpha, 0.0, 1.0) * mask  # (T, H, W)

    ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (P, 2) as (x, y)
    wflat = wgt.reshape(t_len, -1)
    if k == 1:
        labels = np.zeros((t_len, h * w), dtype=np.int64)
    else:
        centres = _two_means(coords, wflat)
        for t in range(1, t_len):  # link clusters over time by nearest centroid
            same = np.linalg.norm(centres[t] - centres[t - 1], axis=-1).sum()
            swap = np.linalg.norm(centres[t, ::-1] - centres[t - 1], axis=-1).sum()
            if swap < same:
                centres[t] = centres[t, ::-1].copy()
        d = ((coords[None, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)  # (T, P, 2)
        labels = np.argmin(d, axis=-1)

    typical_area = float(np.mean([shape_area(s, config.object_size, config.edge_width) for s in config.shapes]))
    alpha_c = np.clip(alpha, -0.5, 1.5).reshape(t_len, -1)
    dv = (raw[:3] - bg[:3, None]).reshape(3, t_len, -1)  # (3, T, P)
    ctab = colour_table(config)
    out = []
    for j in range(k):
        region = labels == j  # (T, P)
        wj = wflat * region
        area = wj.sum(axis=1)  # (T,)
        present = area >= PRESENT_AREA_FRACTION * typical_area
        est: dict[str, Any] = {"present_fraction": float(present.mean()), "area": area}
        if present.sum() < max(2, math.ceil(t_len / 2)):
            est["found"] = False
            out.append(est)
            continue
        est["found"] = True
        cen = (wj @ coords) / np.maximum(area, 1e-12)[:, None]  # (T, 2)
        tt = np.arange(t_len, dtype=np.float64)
        for a in (0, 1):  # fill frames where the object was not found
            cen[:, a] = np.interp(tt, tt[present], cen[present, a])
        # colour: least-squares unmixing over mask pixels of this object
        u = (mask.reshape(t_len, -1) & region).astype(np.float64)
        ac = np.clip(alpha.reshape(t_len, -1), 0.0, 1.5)
        num = (u * ac)[None] * dv  # (3, T, P)
        den_t = (u * ac * ac).sum(axis=1)  # (T,)
        bg_term = (u * ac * ac) @ bg[:3].reshape(3, -1).T  # (T, 3)
        # least squares per frame: argmin_o sum_p u (dv_p - a_p (o - bg_p))^2
        col_frames = (num.sum(axis=2).T + bg_term) / np.maximum(den_t, 1e-12)[:, None]  # (T, 3)
        wcol = den_t * present
        col = (col_frames * wcol[:, None]).sum(0) / max(wcol.sum(), 1e-12)
        colour_dev = float(np.sqrt((((col_frames - col) ** 2).sum(1) * present).sum() / present.sum()))
        colour = config.colours[int(np.argmin(((ctab - col) ** 2).sum(1)))]
        # shape: template squared error inside this object's region
        sse = []
        for s in config.shapes:
            tmpl = shape_alpha(s, cen[:, 0], cen[:, 1], h, w, config.object_size, config.edge_width).reshape(t_len, -1)
            sse.append((((alpha_c - tmpl) ** 2) * region).sum(axis=1))
        sse = np.stack(sse)  # (S, T)
        shape_idx = int(np.argmin((sse * present).sum(axis=1)))
        per_frame = np.argmin(sse, axis=0)
        shape_agreement = float(((per_frame == shape_idx) & present).sum() / present.sum())
        # motion
        steps = np.linalg.norm(np.diff(cen, axis=0), axis=1)
        speed = float(np.median(steps))
        a_frac, b_frac = config.bounce_window
        e = max(1, math.floor(a_frac * (t_len - 1)))
        l0 = min(t_len - 2, math.ceil(b_frac * (t_len - 1)))
        v_early = _slope(tt[: e + 1], cen[: e + 1])
        v_late = _slope(tt[l0:], cen[l0:])
        thr = 0.4 * speed  # a real bounce reverses a component of >= 0.71 x speed
        reversal = (v_early * v_late < 0) & (np.abs(v_early) > thr) & (np.abs(v_late) > thr)
        area_p = area[present]
        est.update(
            positions=cen,
            colour=colour,
            colour_opponent=col,
            colour_dev=colour_dev,
            shape=config.shapes[shape_idx],
            shape_agreement=shape_agreement,
            area_cv=float(area_p.std() / max(area_p.mean(), 1e-12)),
            speed_px=speed,
            speed=_classify_speed(speed, config),
            direction=_classify_direction(v_early, config),
            bounce=bool(reversal.any()),
            smooth_rms=_smooth_rms(cen, projectors),
        )
        out.append(est)
    est_count = int(round(float(np.median(wflat.sum(axis=1))) / typical_area))
    for est in out:
        est["count"] = est_count
    return out


def _score_object(est: dict[str, Any], obj: ObjectSpec, config: ToyWorldConfig) -> dict[str, float]:
    """Attribute hits (1.0 / 0.0; NaN where not applicable) and quality scores of one parsed object."""
    nan = float("nan")
    if not est["found"]:
        return {
            "colour": 0.0, "shape": 0.0, "speed": 0.0,
            "direction": 0.0 if obj.moving else nan, "bounce": 0.0 if obj.moving else nan,
            "smoothness": 0.0, "consistency": 0.0, "dynamic": 0.0, "speed_ratio": 0.0 if obj.moving else nan,
        }
    moving_est = est["speed"] != STATIC
    cons = (math.exp(-est["area_cv"] / AREA_CV_SCALE) + math.exp(-est["colour_dev"] / COLOUR_DEV_SCALE)
            + est["shape_agreement"]) / 3.0
    return {
        "colour": float(est["colour"] == obj.colour),
        "shape": float(est["shape"] == obj.shape),
        "speed": float(est["speed"] == obj.speed),
        "direction": float(moving_est and est["direction"] == obj.direction) if obj.moving else nan,
        "bounce": float(moving_est and est["bounce"] == obj.bounce) if obj.moving else nan,
        "smoothness": math.exp(-est["smooth_rms"] / SMOOTH_SCALE_PX),
        "consistency": est["present_fraction"] * cons,
        "dynamic": float(moving_est == obj.moving),
        "speed_ratio": est["speed_px"] / config.speed_values[obj.speed] if obj.moving else nan,
    }


def _attr_fraction(sc: dict[str, float]) -> float:
    vals = [sc[a] for a in ("colour", "shape", "speed", "direction", "bounce") if not math.isnan(sc[a])]
    return float(np.mean(vals))


def _estimated_caption(ests: list[dict[str, Any]]) -> str:
    """What the parser saw, as a caption (``"<missing>"`` for objects it did not find)."""
    clauses = []
    for e in ests:
        if not e["found"]:
            clauses.append("<missing>")
        elif e["speed"] == STATIC:
            clauses.append(f"a {e['colour']} {e['shape']} standing still")
        else:
            verb = "bouncing" if e["bounce"] else "moving"
            clauses.append(f"a {e['colour']} {e['shape']} {verb} {e['direction']} {e['speed']}")
    return " and ".join(clauses)


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


def evaluate(
    videos: np.ndarray, specs: Sequence[SceneSpec], config: ToyWorldConfig
) -> dict[str, Any]:
    """ToyBench scores of latent videos against the specs they were prompted with.

    Args:
      videos: (B, 4, T, H, W) float latents (normalised, as produced by the generator / the model).
      specs: B SceneSpecs (the prompts).
      config: the toy world the videos belong to.

    Returns a dict with
      ``"mean"``: {name: float} batch means of :data:`SUMMARY_KEYS` (NaN-aware);
      ``"per_video"``: {name: (B,) float64} the same scores per video (NaN where an attribute does not apply, e.g.
      direction of a static object);
      ``"seen_captions"``: list[str] what the parser recovered from each video, as captions;
      ``"directions"``: list of (prompted, seen) direction pairs, one per moving object of the specs (seen is None
      when the matched object was not found or does not move); :func:`direction_confusion` summarises them.
    """
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[1:] != config.latent_shape:
        raise ValueError(f"videos must be (B, {', '.join(map(str, config.latent_shape))}), got {videos.shape}")
    if len(specs) != videos.shape[0]:
        raise ValueError(f"got {videos.shape[0]} videos but {len(specs)} specs")
    if not np.all(np.isfinite(videos)):
        raise ValueError("videos contain NaN or inf")
    for s in specs:
        validate_spec(s, config)
    raw = latent_to_raw(videos, config)
    projectors = _kink_projectors(config.num_frames)
    b = videos.shape[0]
    per: dict[str, np.ndarray] = {k: np.full(b, np.nan) for k in SUMMARY_KEYS}
    seen = []
    directions: list[tuple[str, str | None]] = []
    for i, spec in enumerate(specs):
        k = len(spec.objects)
        ests = _parse_video(raw[i], k, config, projectors)
        perms = [(0,)] if k == 1 else [(0, 1), (1, 0)]
        best = None
        for perm in perms:
            scores = [_score_object(ests[p], obj, config) for p, obj in zip(perm, spec.objects)]
            fit = sum(_attr_fraction(sc) for sc in scores)
            cdist = sum(
                float(np.sum((ests[p]["colour_opponent"] - colour_table(config)[config.colours.index(o.colour)]) ** 2))
                if ests[p]["found"] else 1e9
                for p, o in zip(perm, spec.objects)
            )
            key = (fit, -cdist)
            if best is None or key > best[0]:
                best = (key, perm, scores)
        _, perm, scores = best
        seen.append(_estimated_caption([ests[p] for p in perm]))
        for p, obj in zip(perm, spec.objects):
            if obj.moving:
                est = ests[p]
                moves = est["found"] and est["speed"] != STATIC
                directions.append((obj.direction, est["direction"] if moves else None))

        def mean_of(name: str) -> float:
            vals = [sc[name] for sc in scores if not math.isnan(sc[name])]
            return float(np.mean(vals)) if vals else float("nan")

        per["alignment"][i] = float(np.mean([_attr_fraction(sc) for sc in scores]))
        per["colour_acc"][i] = mean_of("colour")
        per["shape_acc"][i] = mean_of("shape")
        per["speed_acc"][i] = mean_of("speed")
        per["direction_acc"][i] = mean_of("direction")
        per["bounce_acc"][i] = mean_of("bounce")
        per["smoothness"][i] = mean_of("smoothness")
        per["consistency"][i] = mean_of("consistency")
        per["dynamic_degree"][i] = mean_of("dynamic")
        per["speed_ratio"][i] = mean_of("speed_ratio")
        per["count_acc"][i] = float(ests[0]["count"] == k)
        per["overall"][i] = float(
            np.mean([per["alignment"][i], per["smoothness"][i], per["consistency"][i], per["dynamic_degree"][i]])
        )
    mean = {k: (float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan")) for k, v in per.items()}
    return {"mean": mean, "per_video": per, "seen_captions": seen, "directions": directions}


DIRECTION_ERROR_CLASSES = ("correct", "45 deg", "90 deg", "135 deg", "opposite", "not moving")


def direction_confusion(pairs: Sequence[tuple[str, str | None]]) -> dict[str, int]:
    """Counts of (prompted, seen) direction pairs (``evaluate(...)["directions"]``) by the angle between the
    two directions: "correct", "45 deg", "90 deg", "135 deg", "opposite", or "not moving" (object missing or
    static). A model that gets the axis right but the sign wrong piles up in "opposite"; one that ignores the
    direction word spreads like the 8-way prior (1 : 2 : 2 : 2 : 1)."""
    counts = dict.fromkeys(DIRECTION_ERROR_CLASSES, 0)
    for wanted, got in pairs:
        if got is None:
            counts["not moving"] += 1
            continue
        cos = float(np.dot(DIRECTION_VECTORS[wanted], DIRECTION_VECTORS[got]))
        angle = int(round(math.degrees(math.acos(max(-1.0, min(1.0, cos)))) / 45.0)) * 45
        counts[("correct", "45 deg", "90 deg", "135 deg", "opposite")[angle // 45]] += 1
    return counts


def teacher_error(student_videos: np.ndarray, teacher_videos: np.ndarray) -> dict[str, Any]:
    """Distance of student samples to the teacher's samples from the same noise (and prompts).

    Both (B, 4, T, H, W) latents. Returns ``{"mean": {...}, "per_video": {...}}`` with ``teacher_mse`` (mean squared
    difference in latent units) and ``teacher_rel_err`` (``||s - t|| / ||t||``), per video (B,) and averaged.
    """
    s = np.asarray(student_videos, dtype=np.float64)
    t = np.asarray(teacher_videos, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 5:
        raise ValueError(
            f"student and teacher videos must have the same (B, C, T, H, W) shape; got {s.shape}, {t.shape}"
        )
    diff = (s - t).reshape(s.shape[0], -1)
    mse = (diff**2).mean(axis=1)
    rel = np.linalg.norm(diff, axis=1) / np.maximum(np.linalg.norm(t.reshape(t.shape[0], -1), axis=1), 1e-12)
    per = {"teacher_mse": mse, "teacher_rel_err": rel}
    return {"mean": {k: float(v.mean()) for k, v in per.items()}, "per_video": per}


def format_table(results: dict[str, dict[str, Any]], keys: Sequence[str] | None = None, digits: int = 3) -> str:
    """Markdown table, one row per setting.

    ``results``: {setting name: scores}, where scores is either a result of :func:`evaluate` /
    :func:`teacher_error` (its ``"mean"`` is used) or a flat {metric: float} dict (e.g. both merged). ``keys``:
    columns to show (default: :data:`SUMMARY_KEYS` that occur, then any other scalar metrics in first-seen order).
    """
    rows = {}
    for name, res in results.items():
        flat = res["mean"] if isinstance(res, dict) and isinstance(res.get("mean"), dict) else res
        rows[name] = {k: v for k, v in flat.items() if isinstance(v, (int, float, np.floating, np.integer))}
    if keys is None:
        present = list(dict.fromkeys(k for r in rows.values() for k in r))
        keys = [k for k in SUMMARY_KEYS if k in present] + [k for k in present if k not in SUMMARY_KEYS]
    header = "| setting | " + " | ".join(keys) + " |"
    sep = "|---|" + "|".join("---:" for _ in keys) + "|"
    lines = [header, sep]
    for name, r in rows.items():
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
