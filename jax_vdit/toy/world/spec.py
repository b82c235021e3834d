"""Structured scene descriptions (:class:`SceneSpec`) and their captions.

A :class:`SceneSpec` is the semantic content of a sample; the caption, the rendered video (together with
nuisance randomness: start positions, background tint and texture) and the ToyBench targets all derive from it.

Caption grammar (one clause per object, joined by "and")::

    clause  := "a" COLOUR SHAPE ( "moving" | "bouncing" ) DIRECTION SPEED
             | "a" COLOUR SHAPE "standing" "still"
    caption := clause ( "and" clause )?

e.g. ``"a red circle moving left quickly"``, ``"a blue square bouncing up-right slowly and a green triangle
standing still"``. Diagonal directions are single words (``"up-left"``). The background is not named in the
caption (it is a nuisance variable, like lighting in real data).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import FUNCTION_WORDS, STATIC, ToyWorldConfig


@dataclass(frozen=True, order=True)
class ObjectSpec:
    """One object: ``shape``, ``colour``, ``direction`` (None iff static), ``speed`` ("static" or a speed name
    from the config, e.g. "slowly"/"quickly") and ``bounce`` (it hits a wall during the clip and reflects)."""

    shape: str
    colour: str
    direction: str | None
    speed: str
    bounce: bool = False

    def __post_init__(self) -> None:
        if (self.speed == STATIC) != (self.direction is None):
            raise ValueError(f"ObjectSpec: direction must be None exactly when speed is {STATIC!r}: {self}")
        if self.speed == STATIC and self.bounce:
            raise ValueError(f"ObjectSpec: a static object cannot bounce: {self}")

    @property
    def moving(self) -> bool:
        return self.speed != STATIC

    @property
    def clause(self) -> str:
        if not self.moving:
            return f"a {self.colour} {self.shape} standing still"
        verb = "bouncing" if self.bounce else "moving"
        return f"a {self.colour} {self.shape} {verb} {self.direction} {self.speed}"


@dataclass(frozen=True)
class SceneSpec:
    """A scene: 1 or 2 objects (distinct colours; drawn in order, later on top) and a background kind."""

    objects: tuple[ObjectSpec, ...]
    background: str = "plain"

    def __post_init__(self) -> None:
        if not isinstance(self.objects, tuple) or not self.objects:
            raise ValueError(f"SceneSpec.objects must be a non-empty tuple of ObjectSpec, got {self.objects!r}")
        cols = [o.colour for o in self.objects]
        if len(set(cols)) != len(cols):
            raise ValueError(f"SceneSpec: objects of one scene must have distinct colours, got {cols}")

    @property
    def caption(self) -> str:
        return " and ".join(o.clause for o in self.objects)

    @property
    def key(self) -> tuple[ObjectSpec, ...]:
        """Order- and background-free identity of the prompt: the sorted objects. Two specs with the same key have
        the same caption up to clause order, so held-out exclusion works on keys."""
        return tuple(sorted(self.objects))


def validate_spec(spec: SceneSpec, config: ToyWorldConfig) -> None:
    """Raise ValueError if ``spec`` uses an attribute the config does not know."""
    if len(spec.objects) > config.max_objects:
        raise ValueError(f"spec has {len(spec.objects)} objects; config {config.name!r} allows {config.max_objects}")
    if spec.background not in config.backgrounds:
        raise ValueError(f"unknown background {spec.background!r} for config {config.name!r}")
    speeds = config.speed_values
    for o in spec.objects:
        if o.shape not in config.shapes:
            raise ValueError(f"unknown shape {o.shape!r} for config {config.name!r}; known {config.shapes}")
        if o.colour not in config.colours:
            raise ValueError(f"unknown colour {o.colour!r} for config {config.name!r}; known {config.colours}")
        if o.speed not in speeds:
            raise ValueError(f"unknown speed {o.speed!r} for config {config.name!r}; known {tuple(speeds)}")
        if o.direction is not None and o.direction not in config.directions:
            raise ValueError(f"unknown direction {o.direction!r} for config {config.name!r}")


def caption_vocabulary(config: ToyWorldConfig) -> tuple[str, ...]:
    """All words captions of this config can use, in a fixed order (function words, colours, shapes, directions,
    speed names)."""
    words = list(FUNCTION_WORDS) + list(config.colours) + list(config.shapes) + list(config.directions)
    words += [n for n, _ in config.speeds]
    return tuple(dict.fromkeys(words))


def parse_caption(caption: str, config: ToyWorldConfig, background: str = "plain") -> SceneSpec:
    """Inverse of :attr:`SceneSpec.caption` (e.g. to score prompts typed by a user). Raises ValueError naming the
    offending word if the caption does not follow the grammar."""
    clauses = [c.split() for c in caption.strip().split(" and ")]
    objects = []
    speeds = config.speed_values
    for words in clauses:
        if len(words) < 5 or words[0] != "a":
            raise ValueError(f"cannot parse clause {' '.join(words)!r} of caption {caption!r}")
        colour, shape = words[1], words[2]
        rest = words[3:]
        if rest == ["standing", "still"]:
            obj = ObjectSpec(shape, colour, None, STATIC, False)
        elif len(rest) == 3 and rest[0] in ("moving", "bouncing"):
            if rest[2] not in speeds or rest[2] == STATIC:
                raise ValueError(f"unknown speed word {rest[2]!r} in caption {caption!r}")
            obj = ObjectSpec(shape, colour, rest[1], rest[2], rest[0] == "bouncing")
        else:
            raise ValueError(f"cannot parse motion {' '.join(rest)!r} in caption {caption!r}")
        objects.append(obj)
    spec = SceneSpec(tuple(objects), background)
    validate_spec(spec, config)
    return spec
