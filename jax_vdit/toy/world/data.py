"""Procedural text-to-video data: scene sampling, rendering to 4-channel latents, a resumable sharded batch stream
and the held-out prompt set.

Determinism: sample ``i`` of the training stream is a pure function of ``(config.seed, i)`` (its own
``numpy.random.Generator`` seeded by ``SeedSequence([seed, tag, i])``), and batch ``step`` of worker ``w`` is a
pure function of ``(config.seed, step, w, num_workers, batch_size)``. The iterator's whole state is its step
counter, so resuming at step ``s`` reproduces exactly the batches a fresh stream would yield from ``s`` on.

Prompt splits. Besides the training stream there are two reserved prompt sets per world:

* validation (:func:`heldout_specs`, the original 32 "held-out" prompts): ``config.num_heldout`` distinct scenes
  from the reserved ``config.heldout_seed``. Used for training checks, best-checkpoint choice and any tuning.
* test (``config.num_test`` distinct scenes from the reserved ``config.test_seed``, none of them a validation
  scene): used only for final reports, reached through :func:`jax_vdit.toy.world.splits.report_split`.

The training stream rejects (and redraws) any scene whose :attr:`SceneSpec.key` (objects regardless of order and
background, i.e. the prompt up to clause order) is in either set (:func:`reserved_keys`), so neither a validation
nor a test caption ever appears in training.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import DIRECTION_VECTORS, STATIC, ToyWorldConfig
from .encoding import colour_raw, raw_to_latent
from .shapes import shape_alpha, shape_extents
from .spec import ObjectSpec, SceneSpec, validate_spec
from .text import encode_captions

_STREAM_TAG = 0x5EED_0001
_HELDOUT_TAG = 0x5EED_0002
_DROPOUT_TAG = 0x5EED_0003
_TEST_TAG = 0x5EED_0004
_MAX_LAYOUT_TRIES = 8
_LAYOUT_CANDIDATES = 16
_MAX_SPEC_TRIES = 1000


@dataclass(frozen=True, eq=False)
class SceneLayout:
    """Nuisance parameters of one rendered scene.

    ``positions``: (K, T, 2) float64 centroid (x, y) of each object per frame, pixels.
    ``background``: (4, H, W) float64 raw background channels (static over time).
    ``bounce_times``: (K,) float64 time (in frames) of the first wall contact, ``inf`` if none in the clip.
    """

    positions: np.ndarray
    background: np.ndarray
    bounce_times: np.ndarray


# --------------------------------------------------------------------------------------------------------------
# scene sampling
# --------------------------------------------------------------------------------------------------------------


def _sample_object(rng: np.random.Generator, config: ToyWorldConfig, colour: str) -> ObjectSpec:
    shape = config.shapes[rng.integers(len(config.shapes))]
    if rng.random() < config.p_static:
        return ObjectSpec(shape, colour, None, STATIC, False)
    direction = config.directions[rng.integers(len(config.directions))]
    speed = config.speeds[rng.integers(len(config.speeds))][0]
    return ObjectSpec(shape, colour, direction, speed, bool(rng.random() < config.p_bounce))


def sample_spec(
    rng: np.random.Generator, config: ToyWorldConfig, exclude_keys: frozenset = frozenset()
) -> SceneSpec:
    """Draw a random :class:`SceneSpec` whose key is not in ``exclude_keys``."""
    for _ in range(_MAX_SPEC_TRIES):
        k = 2 if (config.max_objects >= 2 and rng.random() < config.p_two_objects) else 1
        colours = rng.choice(len(config.colours), size=k, replace=False)
        objects = tuple(_sample_object(rng, config, config.colours[int(c)]) for c in colours)
        background = config.backgrounds[rng.integers(len(config.backgrounds))]
        spec = SceneSpec(objects, background)
        if spec.key not in exclude_keys:
            return spec
    raise RuntimeError("could not draw a scene outside the excluded set; is the exclusion set the whole space?")


def _axis_bounds(shape: str, config: ToyWorldConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """((x_lo, x_hi), (y_lo, y_hi)): range of the centroid that keeps the whole (anti-aliased) shape in frame."""
    left, right, up, down = shape_extents(shape, config.object_size)
    m = 0.5 * config.edge_width - 0.5  # pixel (i) covers [i - 0.5, i + 0.5]; keep the AA ramp inside
    return (left + m, config.width - 1 - right - m), (up + m, config.height - 1 - down - m)


def _reflect(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold unconstrained coordinates ``u`` into [lo, hi] by mirror reflection at the walls."""
    span = hi - lo
    v = np.mod(u - lo, 2.0 * span)
    return lo + np.where(v > span, 2.0 * span - v, v)


def _sample_tracks(
    obj: ObjectSpec, rng: np.random.Generator, config: ToyWorldConfig, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` candidate centroid tracks (n, T, 2) of one object and their first wall-contact times (n,) (inf if
    none). Static objects get a uniform position. A non-bouncer never touches a wall during the clip. A bouncer
    touches a wall with one moving axis (its "primary" axis) at a uniform time in ``bounce_window`` and with its
    other axis not before the start of that window."""
    t = np.arange(config.num_frames, dtype=np.float64)
    t_end = config.num_frames - 1
    bounds = _axis_bounds(obj.shape, config)
    if not obj.moving:
        start = np.stack([rng.uniform(lo, hi, size=n) for lo, hi in bounds], axis=-1)  # (n, 2)
        return np.repeat(start[:, None, :], config.num_frames, axis=1), np.full(n, math.inf)
    vel = np.array(DIRECTION_VECTORS[obj.direction]) * config.speed_values[obj.speed]
    moving_axes = np.array([a for a in (0, 1) if abs(vel[a]) > 1e-12])
    t_a, t_b = (f * t_end for f in config.bounce_window)
    primary = moving_axes[rng.integers(len(moving_axes), size=n)] if obj.bounce else np.full(n, -1)
    tb = rng.uniform(t_a, t_b, size=n)
    horizon = t_a if obj.bounce else float(t_end)
    pos = np.empty((n, config.num_frames, 2))
    for a in (0, 1):
        lo, hi = bounds[a]
        v = vel[a]
        free = rng.uniform(lo - min(0.0, v * horizon), hi - max(0.0, v * horizon), size=n)
        wall = hi if v > 0 else lo
        start = np.where(primary == a, wall - v * tb, free)
        pos[:, :, a] = _reflect(start[:, None] + v * t[None, :], lo, hi)
    return pos, np.where(primary >= 0, tb, math.inf)


def _sample_background(background: str, rng: np.random.Generator, config: ToyWorldConfig) -> np.ndarray:
    """(4, H, W) raw background: tinted flat colour, plus a static smooth texture for "textured"."""
    h, w = config.height, config.width
    lum = rng.uniform(*config.bg_luma_range)
    tint = rng.uniform(-config.bg_tint, config.bg_tint, size=2)
    bg = np.empty((4, h, w))
    bg[0], bg[1], bg[2], bg[3] = lum, tint[0], tint[1], config.background_x
    if background == "textured":
        ys, xs = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
        tex = np.zeros((h, w))
        for _ in range(3):  # three random plane waves of 1.5 - 4 cycles per frame
            f = rng.uniform(1.5, 4.0)
            theta = rng.uniform(0.0, 2 * math.pi)
            phase = rng.uniform(0.0, 2 * math.pi)
            tex += np.cos(2 * math.pi * f * (xs * math.cos(theta) / w + ys * math.sin(theta) / h) + phase)
        tex /= 3.0  # in [-1, 1]
        bg[0] += config.texture_luma * tex
        bg[3] += config.texture_x * tex
    return bg


def sample_layout(spec: SceneSpec, rng: np.random.Generator, config: ToyWorldConfig) -> SceneLayout | None:
    """Draw start positions and a background for ``spec``; None if no layout keeps two objects apart."""
    validate_spec(spec, config)
    background = _sample_background(spec.background, rng, config)
    n = _LAYOUT_CANDIDATES
    for _ in range(_MAX_LAYOUT_TRIES):
        cands = [_sample_tracks(o, rng, config, n) for o in spec.objects]
        if len(spec.objects) == 1:
            pos, bt = cands[0][0][:1], cands[0][1][:1]
        else:
            # all n x n pairings of candidates; take the first (row-major) that keeps the objects apart
            d = np.linalg.norm(cands[0][0][:, None] - cands[1][0][None, :], axis=-1).min(axis=-1)  # (n, n)
            ok = np.flatnonzero(d.ravel() >= config.min_separation)
            if ok.size == 0:
                continue
            i, j = divmod(int(ok[0]), n)
            pos = np.stack([cands[0][0][i], cands[1][0][j]])
            bt = np.array([cands[0][1][i], cands[1][1][j]])
        return SceneLayout(pos, background, bt)
    return None


def positions_later(positions: np.ndarray, lead: float) -> np.ndarray:
    """(..., T, 2) per-frame centres -> the centres ``lead`` of a frame later: linear between frames, the last
    frame extrapolated with the last step."""
    step = np.diff(positions, axis=-2)
    step = np.concatenate([step, step[..., -1:, :]], axis=-2)
    return positions + lead * step


def render_raw(spec: SceneSpec, layout: SceneLayout, config: ToyWorldConfig) -> np.ndarray:
    """Composite the scene: (4, T, H, W) float64 raw channels (channel 3 ``config.objectness_lead`` of a frame
    later than channels 0-2)."""
    t, h, w = config.num_frames, config.height, config.width
    raw = np.broadcast_to(layout.background[:, None], (4, t, h, w)).copy()
    for k, obj in enumerate(spec.objects):
        pos = layout.positions[k]
        alpha = shape_alpha(obj.shape, pos[:, 0], pos[:, 1], h, w, config.object_size, config.edge_width)  # (T,H,W)
        col = colour_raw(obj.colour, config).reshape(4, 1, 1, 1)
        if config.objectness_lead:
            later = positions_later(pos, config.objectness_lead)
            alpha_x = shape_alpha(obj.shape, later[:, 0], later[:, 1], h, w, config.object_size, config.edge_width)
            alpha = np.concatenate([np.broadcast_to(alpha, (3, t, h, w)), alpha_x[None]])
        raw = raw * (1.0 - alpha) + alpha * col
    return raw


def sample_scene(
    rng: np.random.Generator, config: ToyWorldConfig, exclude_keys: frozenset = frozenset()
) -> tuple[SceneSpec, SceneLayout]:
    """Draw a spec (outside ``exclude_keys``) and a feasible layout for it."""
    for _ in range(_MAX_SPEC_TRIES):
        spec = sample_spec(rng, config, exclude_keys)
        layout = sample_layout(spec, rng, config)
        if layout is not None:
            return spec, layout
    raise RuntimeError("could not find a feasible scene layout; is the frame too small for two objects?")


def render_spec(
    spec: SceneSpec, config: ToyWorldConfig, seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, SceneLayout]:
    """Render a given spec with nuisance randomness from ``seed``: ((4, T, H, W) float32 latents, layout)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    for _ in range(_MAX_SPEC_TRIES):
        layout = sample_layout(spec, rng, config)
        if layout is not None:
            return raw_to_latent(render_raw(spec, layout, config), config), layout
    raise RuntimeError(f"no feasible layout for spec {spec.caption!r}")


# --------------------------------------------------------------------------------------------------------------
# validation and test prompts
# --------------------------------------------------------------------------------------------------------------


def _draw_distinct(config: ToyWorldConfig, seed: int, tag: int, count: int, exclude: frozenset,
                   what: str) -> tuple[tuple[SceneSpec, ...], tuple[SceneLayout, ...]]:
    """``count`` scenes with distinct keys, none in ``exclude``; draw ``i`` uses ``SeedSequence([seed, tag, i])``."""
    specs: list[SceneSpec] = []
    layouts: list[SceneLayout] = []
    keys: set = set(exclude)
    i = 0
    while len(specs) < count:
        rng = np.random.default_rng(np.random.SeedSequence([seed, tag, i]))
        i += 1
        spec, layout = sample_scene(rng, config, frozenset(keys))
        keys.add(spec.key)
        specs.append(spec)
        layouts.append(layout)
        if i > 100 * count:
            raise RuntimeError(f"could not draw enough distinct {what} scenes")
    return tuple(specs), tuple(layouts)


@functools.lru_cache(maxsize=16)
def _heldout(config: ToyWorldConfig) -> tuple[tuple[SceneSpec, ...], tuple[SceneLayout, ...]]:
    return _draw_distinct(config, config.heldout_seed, _HELDOUT_TAG, config.num_heldout, frozenset(), "validation")


@functools.lru_cache(maxsize=16)
def _test_set(config: ToyWorldConfig) -> tuple[tuple[SceneSpec, ...], tuple[SceneLayout, ...]]:
    """The test prompts and their reference layouts. Private: reports reach them through
    ``splits.report_split(config, "test")``; selection code has no way to ask for them."""
    return _draw_distinct(config, config.test_seed, _TEST_TAG, config.num_test, heldout_keys(config), "test")


def heldout_specs(config: ToyWorldConfig) -> tuple[SceneSpec, ...]:
    """The validation prompt set (the original held-out prompts): ``config.num_heldout`` distinct specs from
    ``config.heldout_seed``. Never produced by the training stream (see module docstring)."""
    return _heldout(config)[0]


@functools.lru_cache(maxsize=16)
def heldout_keys(config: ToyWorldConfig) -> frozenset:
    """Keys (:attr:`SceneSpec.key`) of the validation specs."""
    return frozenset(s.key for s in heldout_specs(config))


@functools.lru_cache(maxsize=16)
def reserved_keys(config: ToyWorldConfig) -> frozenset:
    """Keys of the validation and the test specs together: the scenes the training stream never yields."""
    return heldout_keys(config) | frozenset(s.key for s in _test_set(config)[0])


def scenes_batch(specs: Sequence[SceneSpec], layouts: Sequence[SceneLayout], config: ToyWorldConfig) -> dict[str, Any]:
    """A fixed prompt set as one batch (same keys as :meth:`ToyWorldStream.batch`): ``latents`` (N, 4, T, H, W)
    float32 ground truth rendered with ``layouts``, ``text_emb`` (N, L, C) float32, ``text_mask`` (N, L) int32,
    ``captions``, ``specs``, ``indices`` (N,) int64, ``dropped`` (N,) bool (all False), ``step`` 0."""
    latents = np.stack([raw_to_latent(render_raw(s, l, config), config) for s, l in zip(specs, layouts)])
    captions = [s.caption for s in specs]
    emb, mask = encode_captions(captions, config)
    return {
        "latents": latents,
        "text_emb": emb,
        "text_mask": mask,
        "captions": captions,
        "specs": list(specs),
        "indices": np.arange(len(specs), dtype=np.int64),
        "dropped": np.zeros(len(specs), dtype=bool),
        "step": 0,
    }


def heldout_batch(config: ToyWorldConfig) -> dict[str, Any]:
    """The validation set as one batch (see :func:`scenes_batch`), with ground-truth latents rendered from the
    reserved seed (reference videos for the validation prompts)."""
    return scenes_batch(*_heldout(config), config)


# --------------------------------------------------------------------------------------------------------------
# training stream
# --------------------------------------------------------------------------------------------------------------


def make_sample(config: ToyWorldConfig, index: int, seed: int | None = None,
                exclude_keys: frozenset = frozenset()) -> tuple[np.ndarray, SceneSpec]:
    """Training-stream sample ``index``: ((4, T, H, W) float32 latents, spec). Pure function of (seed, index);
    ``seed`` defaults to ``config.seed``. Validation and test scenes are excluded (:func:`reserved_keys`), and so
    are specs with a key in ``exclude_keys`` (another world's reserved sets, when this world's samples are mixed
    into its training)."""
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    s = config.seed if seed is None else seed
    rng = np.random.default_rng(np.random.SeedSequence([s, _STREAM_TAG, int(index)]))
    spec, layout = sample_scene(rng, config, reserved_keys(config) | exclude_keys)
    return raw_to_latent(render_raw(spec, layout, config), config), spec


class ToyWorldStream:
    """Resumable, sharded, infinite stream of training batches (plain NumPy).

    Batch ``step`` of worker ``worker_index`` holds the samples with global indices
    ``(step * num_workers + worker_index) * batch_size + j`` for ``j < batch_size``, so the workers of one step
    together cover a contiguous block and no two (step, worker) pairs share a sample.

    Each batch is a dict:

    * ``latents``: (B, 4, T, H, W) float32
    * ``text_emb``: (B, L, caption_channels) float32, ``text_mask``: (B, L) int32 (1 = keep)
    * ``captions``: list[str] (the caption actually encoded: "" when dropped), ``specs``: list[SceneSpec]
    * ``dropped``: (B,) bool, caption replaced by "" (classifier-free-guidance dropout, ``caption_dropout``)
    * ``indices``: (B,) int64 global sample indices, ``step``: int
    """

    def __init__(
        self,
        config: ToyWorldConfig,
        batch_size: int,
        *,
        worker_index: int = 0,
        num_workers: int = 1,
        start_step: int = 0,
        caption_dropout: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 1 or not 0 <= worker_index < num_workers:
            raise ValueError(f"need 0 <= worker_index < num_workers, got {worker_index} / {num_workers}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        if not 0.0 <= caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {caption_dropout}")
        self.config = config
        self.batch_size = batch_size
        self.worker_index = worker_index
        self.num_workers = num_workers
        self.caption_dropout = caption_dropout
        self.seed = config.seed if seed is None else seed
        self.step = start_step

    def indices(self, step: int) -> np.ndarray:
        """(B,) int64 global sample indices of batch ``step`` for this worker."""
        first = (step * self.num_workers + self.worker_index) * self.batch_size
        return np.arange(first, first + self.batch_size, dtype=np.int64)

    def batch(self, step: int) -> dict[str, Any]:
        """Batch ``step`` (pure function of seed, step, worker, sizes; does not move the iterator)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        idx = self.indices(step)
        samples = [make_sample(self.config, int(i), self.seed) for i in idx]
        latents = np.stack([x for x, _ in samples])
        specs = [s for _, s in samples]
        dropped = np.zeros(len(idx), dtype=bool)
        if self.caption_dropout > 0:
            for j, i in enumerate(idx):
                r = np.random.default_rng(np.random.SeedSequence([self.seed, _DROPOUT_TAG, int(i)]))
                dropped[j] = r.random() < self.caption_dropout
        captions = ["" if d else s.caption for s, d in zip(specs, dropped)]
        emb, mask = encode_captions(captions, self.config)
        return {
            "latents": latents,
            "text_emb": emb,
            "text_mask": mask,
            "captions": captions,
            "specs": specs,
            "dropped": dropped,
            "indices": idx,
            "step": step,
        }

    def state_dict(self) -> dict[str, int]:
        """The iterator state: the next step to yield (plus the sharding, for checking on restore)."""
        return {"step": self.step, "worker_index": self.worker_index, "num_workers": self.num_workers,
                "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        for k in ("worker_index", "num_workers", "batch_size", "seed"):
            if k in state and state[k] != getattr(self, k):
                raise ValueError(f"stream state has {k}={state[k]} but this stream has {k}={getattr(self, k)}")
        self.step = int(state["step"])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        b = self.batch(self.step)
        self.step += 1
        return b


def generate_dataset(config: ToyWorldConfig, num_samples: int, start_index: int = 0) -> dict[str, Any]:
    """Materialise training-stream samples ``start_index .. start_index + num_samples - 1`` (e.g. to pre-generate
    a fixed dataset): dict with ``latents`` (N, 4, T, H, W) float32, ``captions``, ``specs``, ``indices``."""
    samples = [make_sample(config, i) for i in range(start_index, start_index + num_samples)]
    return {
        "latents": np.stack([x for x, _ in samples]),
        "captions": [s.caption for _, s in samples],
        "specs": [s for _, s in samples],
        "indices": np.arange(start_index, start_index + num_samples, dtype=np.int64),
    }
