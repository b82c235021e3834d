"""The pipeline's inputs and outputs as values: sampler settings, text embeddings, a checked job and its videos,
what a call returns, and the errors it raises for bad input or a non-finite sample. Used by
:class:`jax_vdit.pipeline.OpenSoraPipeline` (and importable from :mod:`jax_vdit.pipeline`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jax_vdit import sampling
from jax_vdit.config import VAE_SPATIAL, VAE_TEMPORAL, VideoSize
from jax_vdit.model.attention import AttentionConfig
from jax_vdit.text_encoder import load_embeddings

DEFAULT_GUIDANCE = 7.5  # the release's sample scripts (the authors advise ~2.5 for 29x480p)
DEFAULT_STEPS = 100


class PipelineInputError(ValueError):
    """An argument of a pipeline call is invalid or contradicts the checkpoint; the message names it."""


class NonFiniteSampleError(FloatingPointError):
    """A video's latents became NaN or infinite while sampling; the message names the first bad step."""


@dataclass(frozen=True)
class SamplerSettings:
    """A sampler and its settings: ``sampler`` "euler_ancestral" | "ddim" | "consistency"; ``edges`` are the
    consistency segment edges (None: uniform); ``guidance_scale`` None or 1 means no CFG."""

    sampler: str = "euler_ancestral"
    num_inference_steps: int = DEFAULT_STEPS
    edges: tuple[int, ...] | None = None
    guidance_scale: float | None = DEFAULT_GUIDANCE

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale is not None and self.guidance_scale != 1.0

    def plan(self) -> sampling.SamplingPlan:
        edges = None if self.edges is None else ",".join(str(e) for e in self.edges)
        return sampling.plan_from_name(self.sampler, self.num_inference_steps, edges)

    def describe(self) -> str:
        plan = self.plan()
        edges = f", edges {','.join(map(str, self.edges))}" if self.edges else ""
        cfg = f"CFG {self.guidance_scale:g}" if self.uses_cfg else "no CFG"
        return f"{self.sampler}, {plan.num_steps} steps{edges}, {cfg}"


RELEASE_SETTINGS = SamplerSettings()


@dataclass(frozen=True)
class TextEmbeddings:
    """Text conditioning: ``text`` (B, L, C) float32, ``text_mask`` (B, L) int32, optional ``negative_text``
    (1 or B, L, C) and ``negative_mask``; ``prompts`` / ``negative_prompt`` are the strings when known."""

    text: np.ndarray
    text_mask: np.ndarray
    negative_text: np.ndarray | None = None
    negative_mask: np.ndarray | None = None
    prompts: tuple[str | None, ...] = ()
    negative_prompt: str | None = None

    @classmethod
    def from_any(cls, value: TextEmbeddings | Mapping[str, Any] | str | os.PathLike) -> TextEmbeddings:
        """From a :class:`TextEmbeddings`, a dict with the keys of :func:`~jax_vdit.text_encoder.load_embeddings`,
        or a ``.safetensors`` file of them."""
        if isinstance(value, TextEmbeddings):
            return value
        if isinstance(value, (str, os.PathLike)):
            value = load_embeddings(value)
        text = np.asarray(value["text"], np.float32)
        text = text[:, 0] if text.ndim == 4 else text
        mask = value.get("text_mask")
        mask = np.ones(text.shape[:2], np.int32) if mask is None else np.asarray(mask, np.int32)
        mask = mask[:, 0] if mask.ndim == 3 else mask
        neg = value.get("negative_text")
        neg_mask = value.get("negative_mask")
        if neg is not None:
            neg = np.asarray(neg, np.float32)
            neg = neg[:, 0] if neg.ndim == 4 else neg
            neg_mask = np.ones(neg.shape[:2], np.int32) if neg_mask is None else np.asarray(neg_mask, np.int32)
            neg_mask = neg_mask[:, 0] if neg_mask.ndim == 3 else neg_mask
        prompts = tuple(value.get("prompts", (None,) * text.shape[0]))
        return cls(text, mask, neg, neg_mask, prompts, value.get("negative_prompt"))

    def check(self, caption_channels: int) -> None:
        """Shapes agree with each other and the model; every value finite (names the tensor and row)."""
        if self.text.ndim != 3 or self.text.shape[-1] != caption_channels:
            raise PipelineInputError(f"text embeddings must be (B, L, {caption_channels}) for this model, got "
                                     f"{self.text.shape}")
        if self.text_mask.shape != self.text.shape[:2]:
            raise PipelineInputError(f"text_mask {self.text_mask.shape} does not match text {self.text.shape}")
        if self.negative_text is not None:
            if self.negative_text.shape[0] not in (1, self.text.shape[0]) or \
                    self.negative_text.shape[1:] != self.text.shape[1:]:
                raise PipelineInputError(f"negative_text {self.negative_text.shape} does not match text "
                                         f"{self.text.shape} (it may have batch 1)")
            if self.negative_mask is None or self.negative_mask.shape != self.negative_text.shape[:2]:
                raise PipelineInputError("negative_mask is missing or does not match negative_text")
        for name in ("text", "negative_text"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(value).all():
                rows = sorted({int(r) for r in np.nonzero(~np.isfinite(value))[0]})
                raise PipelineInputError(f"{name} embeddings hold NaN or infinite values (rows {rows})")

    @property
    def batch(self) -> int:
        return self.text.shape[0]


@dataclass(frozen=True)
class VideoJob:
    """One video to sample: row ``prompt_index`` of the embeddings with ``seed``."""

    index: int
    prompt_index: int
    seed: int
    prompt: str | None


@dataclass(frozen=True)
class Job:
    """A checked request: what will run (recorded in each video's sidecar)."""

    size: VideoSize
    settings: SamplerSettings
    plan: sampling.SamplingPlan
    attention: AttentionConfig
    attention_spec: str
    text: TextEmbeddings
    videos: tuple[VideoJob, ...]
    latent_dtype: Any = jnp.bfloat16
    notes: tuple[str, ...] = ()

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return self.size.latent_shape

    def describe(self) -> str:
        s = self.size
        note = f" [{'; '.join(self.notes)}]" if self.notes else ""
        return (f"{len(self.videos)} video(s) of {s.frames}x{s.height}x{s.width}: {self.settings.describe()}, "
                f"attention {self.attention_spec}{note}")


@dataclass
class PipelineOutput:
    """``latents`` (N, C, T, H, W) float32; ``frames`` (N, F, H, W, 3) uint8 or None (``output_type="latent"``);
    ``records`` one dict per video (what the sidecar holds); ``paths`` the files written."""

    latents: np.ndarray
    frames: np.ndarray | None
    records: list[dict]
    paths: list[Path] = field(default_factory=list)


@dataclass
class DecodedVideos:
    """What :meth:`OpenSoraPipeline.decode_and_write` did: the videos written (not the sidecars), their frames
    (N, F, H, W, 3) uint8 when kept, seconds until the last frames reached the host (``decoded_s``) and in all
    (``total_s``: the rest is the encoding of the last part and the sidecars)."""

    paths: list[Path]
    frames: np.ndarray | None = None
    decoded_s: float = 0.0
    total_s: float = 0.0


def default_size(cfg) -> VideoSize:
    """The pixel size a model was configured for: (4 (T-1) + 1) x 8 H x 8 W of its ``sample_size``."""
    return VideoSize(VAE_TEMPORAL * (cfg.sample_size_t - 1) + 1, VAE_SPATIAL * cfg.sample_size[0],
                     VAE_SPATIAL * cfg.sample_size[1])
