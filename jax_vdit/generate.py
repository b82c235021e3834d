"""Prompt-to-latents (and video) helpers shared by the ``sample`` CLI and Python users: size validation,
attention choice from a mask schedule, sampler selection."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jax_vdit import sampling
from jax_vdit.model.attention import AttentionConfig

VAE_TEMPORAL, VAE_SPATIAL = 4, 8


class VideoSizeError(ValueError):
    """Frames, height or width the model cannot generate."""


@dataclass(frozen=True)
class VideoSize:
    """A pixel-space video size and its latent grid (C=4, T, H, W)."""

    frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        problems = []
        if self.frames < 1 or (self.frames - 1) % VAE_TEMPORAL:
            problems.append(f"frames={self.frames} is not 4k+1 (e.g. 1, 29, 93): the causal VAE maps 4k+1 frames "
                            "to k+1 latent frames")
        for name, value in (("height", self.height), ("width", self.width)):
            if value < 16 or value % 16:
                problems.append(f"{name}={value} is not a positive multiple of 16 (VAE factor 8 x patch size 2)")
        if problems:
            raise VideoSizeError("; ".join(problems))

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (4, (self.frames - 1) // VAE_TEMPORAL + 1, self.height // VAE_SPATIAL, self.width // VAE_SPATIAL)


def attention_from_spec(spec: str | None, num_layers: int, num_frames: int, *, tile_backend: str = "auto",
                        dense_backend: str = "auto") -> AttentionConfig:
    """``None``/"dense" -> dense; "k:m" (e.g. "1:7") -> that mask on every layer; a path -> a mask schedule JSON."""
    if spec is None or spec == "dense":
        return AttentionConfig(dense_backend=dense_backend, tile_backend=tile_backend)
    import pallas_kernels

    if Path(spec).suffix == ".json" or Path(spec).is_file():
        schedule = pallas_kernels.MaskSchedule.load(spec)
        masks = tuple(schedule)
        if len(masks) != num_layers:
            raise ValueError(f"mask schedule {spec} has {len(masks)} layers, the model has {num_layers}")
        for i, m in enumerate(masks):
            if m is not None and m.num_frames != num_frames:
                raise ValueError(f"mask schedule layer {i} is for {m.num_frames} latent frames, video has {num_frames}")
    else:
        mask = pallas_kernels.TileMask.from_string(spec, num_frames)
        masks = (mask,) * num_layers
    return AttentionConfig(dense_backend=dense_backend, tile_backend=tile_backend, masks=masks)


def plan_from_name(sampler: str, steps: int, edges: str | None = None) -> sampling.SamplingPlan:
    """"euler_ancestral" (the release), "ddim", or "consistency" (with comma-separated segment edges)."""
    if sampler in ("euler_ancestral", "euler-a", "euler"):
        return sampling.euler_ancestral(steps)
    if sampler == "ddim":
        return sampling.ddim(steps)
    if sampler == "consistency":
        if edges is None:
            edges_list = [round(i * 1000 / steps) for i in range(steps)]
        else:
            edges_list = [int(e) for e in edges.split(",")]
        return sampling.consistency(edges_list)
    raise ValueError(f"unknown sampler {sampler!r}: use euler_ancestral, ddim or consistency")
