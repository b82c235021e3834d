"""World parameters of the procedural toy text-to-video world (:class:`ToyWorldConfig`) and its named presets.

Everything that shapes a sample lives here: the frame grid, the object size, the attribute vocabularies (shapes,
colours, directions, speeds), the sampling probabilities, the latent channel encoding constants and the seeds.
A config is a frozen (hashable) dataclass, so derived tables (validation and test specs, word embeddings) can be
cached per config. Presets:

* ``"toy-9x24x24"`` (default): 9 latent frames of 24 x 24 (patch 2 -> 9 x 12 x 12 = 144 tokens per frame).
* ``"toy-9x24x24-anchored"``, ``"toy-9x24x24-anchored-strong"``: the same scenes with latent frame 0 marked
  (``first_frame_offset``).
* ``"toy-9x24x24-subframe"``: the same scenes with the objectness channel half a frame ahead of the colour
  channels (``objectness_lead``), so each latent frame shows which way its objects move.
* ``"toy-tiny-5x16x16"`` (and ``-anchored``): 5 frames of 16 x 16 for unit tests.

Coordinates: pixel centres sit at integers ``0 .. W-1`` (x, to the right) and ``0 .. H-1`` (y, downwards), so
"up" is ``-y``. Speeds are in pixels per latent frame.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

# Object colours as linear RGB in [0, 1]. A config picks a subset by name (``ToyWorldConfig.colours``).
COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.15),
    "white": (0.95, 0.95, 0.95),
    "purple": (0.60, 0.20, 0.85),
    "cyan": (0.10, 0.85, 0.90),
    "orange": (1.00, 0.55, 0.10),
}

# Unit direction vectors (dx, dy) in image coordinates (y down). Diagonals are normalised to length 1.
_S = 1.0 / math.sqrt(2.0)
DIRECTION_VECTORS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-_S, -_S),
    "up-right": (_S, -_S),
    "down-left": (-_S, _S),
    "down-right": (_S, _S),
}

KNOWN_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring")
KNOWN_BACKGROUNDS: tuple[str, ...] = ("plain", "textured")

STATIC = "static"  # speed name of an object that does not move (caption: "standing still")

# Fixed caption words (see spec.SceneSpec.caption for the grammar).
FUNCTION_WORDS: tuple[str, ...] = ("a", "and", "moving", "bouncing", "standing", "still")


@dataclass(frozen=True)
class ToyWorldConfig:
    """All parameters of the toy world. Frozen and hashable; build variants with :func:`dataclasses.replace`.

    Latent encoding (see ``encoding.py``): raw channels are (luma, red-green, yellow-blue, objectness) and the
    latent is ``(raw - channel_mean) / channel_std`` per channel. ``channel_mean``/``channel_std`` were measured
    for each preset (``calibrate.measure_channel_stats``); a custom config that changes the frame size, object
    size or sampling probabilities should be re-measured with ``calibrate.calibrated(config)``.
    """

    name: str = "toy-9x24x24"
    # grid
    num_frames: int = 9
    height: int = 24
    width: int = 24
    # objects
    object_size: float = 4.0  # "radius" R in pixels; every shape's size is a fixed multiple of R
    edge_width: float = 1.0  # anti-aliasing ramp width in pixels (alpha = clip(0.5 - sdf / edge_width, 0, 1))
    shapes: tuple[str, ...] = KNOWN_SHAPES
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "purple")
    directions: tuple[str, ...] = tuple(DIRECTION_VECTORS)
    speeds: tuple[tuple[str, float], ...] = (("slowly", 0.5), ("quickly", 1.25))  # name, pixels / frame, ascending
    backgrounds: tuple[str, ...] = KNOWN_BACKGROUNDS
    # scene sampling
    max_objects: int = 2
    p_two_objects: float = 0.35
    p_static: float = 0.15
    p_bounce: float = 0.4
    min_separation_factor: float = 2.6  # centres of two objects stay >= factor * R apart in every frame
    bounce_window: tuple[float, float] = (0.4, 0.75)  # first wall contact of a bouncer, as a fraction of T - 1
    # background appearance (raw units)
    bg_luma_range: tuple[float, float] = (0.10, 0.35)
    bg_tint: float = 0.10  # background (red-green, yellow-blue) drawn uniformly in [-bg_tint, bg_tint]
    texture_luma: float = 0.08  # amplitude of the static texture in the luma channel ("textured" backgrounds)
    texture_x: float = 0.25  # amplitude of the static texture in the objectness channel
    background_x: float = -0.5  # objectness level of the background
    object_x: float = 1.0  # objectness level of an object
    # raw objectness offset of latent frame 0 (0 = off). Like the first latent frame of the v1.2 CausalVAE, which
    # encodes one pixel frame alone, it makes the start of the clip visible in the content, so "left" vs "right"
    # needs no absolute time from RoPE (relative positions only); see experiments/results/toy_teacher/README.md
    first_frame_offset: float = 0.0
    # the objectness channel (3) shows each object this fraction of a frame *later* than the colour channels (0 =
    # off). Like a latent frame of the v1.2 CausalVAE, which summarises 4 consecutive pixel frames in order, a
    # single latent frame then shows which way its objects move: time reversal is no longer a symmetry of the
    # token sequence (experiments/studies/README.md)
    objectness_lead: float = 0.0
    # latent normalisation (raw -> latent), measured per preset
    channel_mean: tuple[float, float, float, float] = (0.2609, 0.0089, 0.0028, -0.3458)
    channel_std: tuple[float, float, float, float] = (0.1347, 0.1432, 0.1620, 0.4311)
    # text stand-in
    caption_channels: int = 32
    max_text_len: int = 16
    text_seed: int = 20240617
    # seeds
    seed: int = 0  # training stream
    heldout_seed: int = 9_000_001  # reserved: the validation prompt set (the original 32 held-out prompts)
    num_heldout: int = 32  # validation prompts (checks, checkpoint choice, calibration, tuning)
    test_seed: int = 9_000_002  # reserved: the test prompt set (final reports only)
    num_test: int = 128  # test prompts: about +/- 0.02 standard error on a [0, 1] score

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"ToyWorldConfig {self.name!r}: {msg}")

        if self.num_frames < 3:
            bad(f"num_frames must be >= 3 (got {self.num_frames})")
        if self.height < 8 or self.width < 8:
            bad(f"height and width must be >= 8 (got {self.height} x {self.width})")
        if not (0 < self.object_size <= min(self.height, self.width) / 4):
            bad(f"object_size must be in (0, min(H, W) / 4] (got {self.object_size})")
        if self.edge_width <= 0:
            bad(f"edge_width must be > 0 (got {self.edge_width})")
        for s in self.shapes:
            if s not in KNOWN_SHAPES:
                bad(f"unknown shape {s!r}; known: {KNOWN_SHAPES}")
        for c in self.colours:
            if c not in COLOUR_RGB:
                bad(f"unknown colour {c!r}; known: {tuple(COLOUR_RGB)}")
        for d in self.directions:
            if d not in DIRECTION_VECTORS:
                bad(f"unknown direction {d!r}; known: {tuple(DIRECTION_VECTORS)}")
        for b in self.backgrounds:
            if b not in KNOWN_BACKGROUNDS:
                bad(f"unknown background {b!r}; known: {KNOWN_BACKGROUNDS}")
        if len(self.shapes) < 1 or len(self.colours) < self.max_objects or len(self.directions) < 1:
            bad("need >= 1 shape, >= max_objects colours (objects of a scene have distinct colours), >= 1 direction")
        if len(set(self.shapes)) != len(self.shapes) or len(set(self.colours)) != len(self.colours):
            bad("shapes and colours must be unique")
        names = [n for n, _ in self.speeds]
        vals = [v for _, v in self.speeds]
        if not self.speeds or STATIC in names or len(set(names)) != len(names):
            bad(f"speeds must be non-empty, unique, and not named {STATIC!r} (got {names})")
        if any(v <= 0 for v in vals) or list(vals) != sorted(vals):
            bad(f"speed values must be positive and ascending (got {vals})")
        if self.max_objects not in (1, 2):
            bad(f"max_objects must be 1 or 2 (got {self.max_objects})")
        for p in ("p_two_objects", "p_static", "p_bounce"):
            v = getattr(self, p)
            if not 0.0 <= v <= 1.0:
                bad(f"{p} must be in [0, 1] (got {v})")
        a, b = self.bounce_window
        if not 0.0 < a < b < 1.0:
            bad(f"bounce_window must satisfy 0 < a < b < 1 (got {self.bounce_window})")
        if not 0.0 <= self.objectness_lead <= 1.0:
            bad(f"objectness_lead must be in [0, 1] (a fraction of a frame), got {self.objectness_lead}")
        if not math.isfinite(self.first_frame_offset):
            bad(f"first_frame_offset must be finite (got {self.first_frame_offset})")
        if len(self.channel_mean) != 4 or len(self.channel_std) != 4 or min(self.channel_std) <= 0:
            bad("channel_mean / channel_std must have 4 entries, std > 0")
        if self.object_x - (self.background_x + self.texture_x) < 0.75:
            bad("object_x must exceed background_x + texture_x by >= 0.75 (objects must stand out)")
        if self.caption_channels < 2 or self.caption_channels % 2:
            bad(f"caption_channels must be even and >= 2 (got {self.caption_channels})")
        # the longest caption: 2 x "a <colour> <shape> bouncing <dir> <speed>" + "and" + EOS
        longest = 6 * self.max_objects + (self.max_objects - 1) + 1
        if self.max_text_len < longest:
            bad(f"max_text_len must be >= {longest} (longest caption + EOS), got {self.max_text_len}")
        # the fastest object must be able to cross the clip without touching a wall
        vmax = vals[-1] * (self.num_frames - 1)
        span = min(self.height, self.width) - 1.0 - 2.0 * self.max_extent - self.edge_width
        if vmax > span:
            bad(f"fastest speed travels {vmax:.1f} px per clip but only {span:.1f} px fit between walls")
        if self.num_heldout < 1:
            bad("num_heldout must be >= 1")
        if self.num_test < 1:
            bad("num_test must be >= 1")
        if self.test_seed == self.heldout_seed:
            bad(f"test_seed and heldout_seed (validation) must differ (both {self.test_seed})")

    # ---- derived quantities ---------------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C=4, T, H, W) of one video."""
        return (4, self.num_frames, self.height, self.width)

    @property
    def speed_values(self) -> dict[str, float]:
        """Speed name -> pixels per frame, including ``"static": 0.0``."""
        return {STATIC: 0.0, **dict(self.speeds)}

    @property
    def min_separation(self) -> float:
        """Minimum distance in pixels between the centroids of two objects of one scene, in every frame."""
        return self.min_separation_factor * self.object_size

    @property
    def max_extent(self) -> float:
        """Largest distance from an object's centroid to its outline over all shapes (pixels)."""
        from .shapes import shape_extents

        return max(max(shape_extents(s, self.object_size)) for s in self.shapes)


PRESETS: dict[str, ToyWorldConfig] = {
    "toy-9x24x24": ToyWorldConfig(),
    # the same scenes with channel 3 rendered half a frame later than channels 0-2 (objectness_lead)
    "toy-9x24x24-subframe": ToyWorldConfig(name="toy-9x24x24-subframe", objectness_lead=0.5),
    "toy-tiny-5x16x16": ToyWorldConfig(
        name="toy-tiny-5x16x16",
        num_frames=5,
        height=16,
        width=16,
        object_size=3.0,
        channel_mean=(0.2699, 0.0105, 0.0038, -0.3071),
        channel_std=(0.1417, 0.1545, 0.1753, 0.4616),
    ),
}
# the small world at full complexity (two objects, bounce, textures, 8 directions, 2 speeds) with the subframe cue:
# does complexity alone keep a small model from the sign of motion? (experiments/studies/README.md)
PRESETS["toy-tiny-5x16x16-subframe"] = dataclasses.replace(
    PRESETS["toy-tiny-5x16x16"], name="toy-tiny-5x16x16-subframe", objectness_lead=0.5
)


def _sign_world(base: str, name: str, mean: tuple[float, ...], std: tuple[float, ...]) -> ToyWorldConfig:
    """``base`` cut down to the sign study's world: one object at one speed (1.25 px per frame) on a plain
    background, 4 directions, never static or bouncing; ``mean``/``std`` measured with ``calibrate.calibrated``.
    The world has only 5 x 6 x 4 = 120 distinct scenes: 32 validation and 16 test prompts keep 72 for training."""
    return dataclasses.replace(
        PRESETS[base], name=name, speeds=(("quickly", 1.25),), backgrounds=("plain",),
        directions=("left", "right", "up", "down"), max_objects=1, p_two_objects=0.0, p_static=0.0, p_bounce=0.0,
        channel_mean=mean, channel_std=std, num_test=16,
    )


# the sign worlds: one object, four directions. The small one lets a CPU-sized model meet "left" vs "right" in
# minutes (experiments/studies/README.md); the one at the teacher's size (9 x 24 x 24) is the first stage of the
# shipped teacher's curriculum. Each has a subframe twin.
PRESETS["toy-sign-5x16x16"] = _sign_world(
    "toy-tiny-5x16x16", "toy-sign-5x16x16", (0.2587, 0.0061, 0.0044, -0.3538), (0.1265, 0.1404, 0.1556, 0.4062))
PRESETS["toy-sign-9x24x24"] = _sign_world(
    "toy-9x24x24", "toy-sign-9x24x24", (0.2517, 0.0046, 0.0034, -0.385), (0.1196, 0.1297, 0.1432, 0.3738))
for _name in ("toy-sign-5x16x16", "toy-sign-9x24x24"):
    PRESETS[f"{_name}-subframe"] = dataclasses.replace(PRESETS[_name], name=f"{_name}-subframe", objectness_lead=0.5)

DEFAULT_CONFIG_NAME = "toy-9x24x24"


def get_config(name: str = DEFAULT_CONFIG_NAME, **overrides: object) -> ToyWorldConfig:
    """Return the named preset, optionally with fields replaced (``get_config("toy-9x24x24", seed=3)``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown toy-world preset {name!r}; known: {sorted(PRESETS)}")
    cfg = PRESETS[name]
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
