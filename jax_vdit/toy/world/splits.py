"""The two reserved prompt splits of a toy world, as typed objects.

* :class:`ValidationSplit` (:func:`validation_split`): the original 32 held-out prompts. The only split that
  training checks, best-checkpoint choice, calibration and tuning may read; they take a ``ValidationSplit`` and
  refuse anything else (:func:`require_validation`).
* :class:`TestSplit`: ``config.num_test`` prompts from their own reserved seed, disjoint from the validation set
  and from the training stream. Reachable only through :func:`report_split` (``vdit toybench``, final reports).

Both are frozen; ``specs`` is a tuple of :class:`SceneSpec` and ``batch()`` renders their reference videos.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .config import ToyWorldConfig
from .data import _heldout, _test_set, scenes_batch
from .spec import SceneSpec

SPLIT_NAMES: tuple[str, ...] = ("validation", "test")


@dataclass(frozen=True, eq=False)
class PromptSplit:
    """A fixed prompt set of ``world``: ``specs`` (N distinct scenes) with the layouts of their reference videos."""

    world: ToyWorldConfig
    specs: tuple[SceneSpec, ...]
    layouts: tuple = field(repr=False)
    name: ClassVar[str] = ""

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def keys(self) -> frozenset:
        """:attr:`SceneSpec.key` of every prompt."""
        return frozenset(s.key for s in self.specs)

    def take(self, count: int | None = None) -> tuple[SceneSpec, ...]:
        """The first ``count`` specs (all when None); ``count`` outside [1, len] raises ValueError."""
        if count is None:
            return self.specs
        if not 1 <= count <= len(self.specs):
            raise ValueError(f"the {self.name} split of {self.world.name!r} has {len(self.specs)} prompts; "
                             f"asked for {count}")
        return self.specs[:count]

    def batch(self) -> dict[str, Any]:
        """The split as one batch with ground-truth latents (N, 4, T, H, W) float32 (see ``data.scenes_batch``)."""
        return scenes_batch(self.specs, self.layouts, self.world)


@dataclass(frozen=True, eq=False)
class ValidationSplit(PromptSplit):
    """The validation prompts (``world.num_heldout`` from ``world.heldout_seed``): checks, selection, tuning."""

    name: ClassVar[str] = "validation"


@dataclass(frozen=True, eq=False)
class TestSplit(PromptSplit):
    """The test prompts (``world.num_test`` from ``world.test_seed``): final reports only."""

    name: ClassVar[str] = "test"
    __test__: ClassVar[bool] = False  # not a pytest test class


def validation_split(world: ToyWorldConfig) -> ValidationSplit:
    """The validation split of ``world`` (the original held-out prompts, unchanged)."""
    specs, layouts = _heldout(world)
    return ValidationSplit(world, specs, layouts)


def report_split(world: ToyWorldConfig, name: str) -> PromptSplit:
    """The split ``name`` (``"validation"`` or ``"test"``) for a report. The only public way to the test prompts:
    selection code (checks, checkpoint choice, calibration) must use :func:`validation_split`."""
    if name == "validation":
        return validation_split(world)
    if name == "test":
        specs, layouts = _test_set(world)
        return TestSplit(world, specs, layouts)
    raise ValueError(f"unknown prompt split {name!r}; known: {SPLIT_NAMES}")


def require_validation(split: object) -> ValidationSplit:
    """``split`` if it is the validation split; TypeError otherwise (the test split must never drive a choice)."""
    if not isinstance(split, ValidationSplit):
        what = f"the {split.name} split" if isinstance(split, PromptSplit) else type(split).__name__
        raise TypeError(f"checks, checkpoint choice and calibration read only the validation split, got {what}; "
                        f"the test split is for final reports")
    return split
