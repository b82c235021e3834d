"""Model configuration: a frozen dataclass, named presets, and the mapping from the release's ``config.json``.

The presets ``osp-v1.2-{29,93}x{720,480}p`` describe the released Open-Sora-Plan v1.2 transformers (2.77B
parameters; 32 layers, 24 heads x 96). They differ only in RoPE interpolation scales and the nominal sample size.
``tiny`` presets are for tests and the toy world.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class UnsupportedConfigError(ValueError):
    """A release config field has a value this port does not implement."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an OpenSoraT2V transformer plus our numerics policy.

    Architecture fields follow the release's ``config.json`` names where one exists.
    ``param_dtype`` is the storage dtype of weights; ``compute_dtype`` the dtype of activations and matmuls
    (softmax, LayerNorm statistics and the timestep sinusoid are always fp32).
    ``rope_round_angles``: round RoPE angles to ``compute_dtype`` before cos/sin, as the PyTorch release does
    (needed to reproduce its bf16 outputs; a no-op in fp32).
    """

    num_layers: int = 32
    num_attention_heads: int = 24
    attention_head_dim: int = 96
    in_channels: int = 4
    out_channels: int = 4
    patch_size: int = 2
    patch_size_t: int = 1
    caption_channels: int = 4096
    interpolation_scale_t: float = 1.0
    interpolation_scale_h: float = 1.5
    interpolation_scale_w: float = 2.0
    norm_eps: float = 1e-6
    sample_size: tuple[int, int] = (90, 160)
    sample_size_t: int = 8
    rope_theta: float = 10000.0
    param_dtype: str = "float32"
    compute_dtype: str = "bfloat16"
    rope_round_angles: bool = True
    remat: bool = False

    def __post_init__(self) -> None:
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {getattr(self, name)!r}")
        if self.attention_head_dim % 6 != 0:
            raise ValueError(
                f"attention_head_dim={self.attention_head_dim} must be divisible by 6 (3D RoPE splits the head "
                "dimension into three equal chunks of even size)"
            )
        if self.patch_size_t != 1:
            raise ValueError(
                f"patch_size_t={self.patch_size_t} is not supported: OpenSoraT2V v1.2 embeds patches frame by frame "
                "(patch_size_t must be 1)"
            )
        for name in ("num_layers", "num_attention_heads", "patch_size", "in_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def inner_dim(self) -> int:
        """D = heads x head_dim (2304 for the release)."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def patch_dim(self) -> int:
        """Input features per token: in_channels x patch_t x patch x patch."""
        return self.in_channels * self.patch_size_t * self.patch_size**2

    @property
    def out_patch_dim(self) -> int:
        return self.out_channels * self.patch_size_t * self.patch_size**2

    @property
    def param_jnp_dtype(self):
        return DTYPES[self.param_dtype]

    @property
    def compute_jnp_dtype(self):
        return DTYPES[self.compute_dtype]

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["sample_size"] = list(d["sample_size"])
        return json.dumps({"jax_vdit_model_config": d}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        if "jax_vdit_model_config" not in data:
            raise ValueError("not a jax-vdit model config (missing 'jax_vdit_model_config')")
        d = dict(data["jax_vdit_model_config"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config fields: {unknown}")
        d["sample_size"] = tuple(d["sample_size"])
        return cls(**d)

    def num_params(self) -> int:
        """Parameter count from the architecture (2,771,907,856 for the release)."""
        d, c = self.inner_dim, self.caption_channels
        attn = 4 * (d * d + d)
        ff = d * 4 * d + 4 * d + 4 * d * d + d
        block = 6 * d + 2 * attn + ff
        others = (
            self.patch_dim * d + d  # patch embedding
            + 256 * d + d + d * d + d  # timestep embedder
            + d * 6 * d + 6 * d  # adaln linear
            + c * d + d + d * d + d  # caption projection
            + 2 * d  # final scale_shift_table
            + d * self.out_patch_dim + self.out_patch_dim  # proj_out
        )
        return self.num_layers * block + others


_RELEASE = ModelConfig()

PRESETS: dict[str, ModelConfig] = {
    "osp-v1.2-29x720p": _RELEASE,
    "osp-v1.2-93x720p": _RELEASE.replace(sample_size_t=24),
    "osp-v1.2-29x480p": _RELEASE.replace(
        sample_size=(60, 80), interpolation_scale_h=1.0, interpolation_scale_w=1.0
    ),
    "osp-v1.2-93x480p": _RELEASE.replace(
        sample_size=(60, 80), sample_size_t=24, interpolation_scale_h=1.0, interpolation_scale_w=1.0
    ),
    # tiny configs for tests (fp32, no RoPE-angle rounding effect)
    "tiny": ModelConfig(
        num_layers=2, num_attention_heads=2, attention_head_dim=24, caption_channels=16,
        sample_size=(8, 8), sample_size_t=3, param_dtype="float32", compute_dtype="float32",
    ),
    # the toy-world teacher: 9 latent frames of 24x24 (12x12 = 144 tokens per frame after patching)
    "toy-teacher": ModelConfig(
        num_layers=6, num_attention_heads=4, attention_head_dim=48, caption_channels=32,
        interpolation_scale_h=1.0, interpolation_scale_w=1.0,
        sample_size=(24, 24), sample_size_t=9, param_dtype="float32", compute_dtype="float32",
    ),
}

# the sign study's model (experiments/studies/README.md): 3 layers of 2 heads x 48 (the toy teacher's
# head dim, half its width) on the 5 x 16 x 16 grid, small enough to train on a CPU
PRESETS["toy-sign"] = PRESETS["toy-teacher"].replace(
    num_layers=3, num_attention_heads=2, attention_head_dim=48, sample_size=(16, 16), sample_size_t=5
)

PRESETS["toy-tiny"] = PRESETS["toy-teacher"].replace(
    num_layers=2, num_attention_heads=2, attention_head_dim=24, sample_size=(16, 16), sample_size_t=5
)

# name -> (latent frames, latent height, latent width): the video size each preset was trained for
PRESET_LATENT_SHAPES: dict[str, tuple[int, int, int]] = {
    "osp-v1.2-29x720p": (8, 90, 160),
    "osp-v1.2-93x720p": (24, 90, 160),
    "osp-v1.2-29x480p": (8, 60, 80),
    "osp-v1.2-93x480p": (24, 60, 80),
    "tiny": (3, 8, 8),
    "toy-teacher": (9, 24, 24),
    "toy-sign": (5, 16, 16),
    "toy-tiny": (5, 16, 16),
}


def dtype_policy(param_dtype: str | None, compute_dtype: str | None) -> dict[str, str]:
    """The ``ModelConfig`` fields a loader overrides: those of ``param_dtype`` / ``compute_dtype`` that are given."""
    return {k: v for k, v in (("param_dtype", param_dtype), ("compute_dtype", compute_dtype)) if v is not None}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset, optionally with fields replaced (e.g. ``compute_dtype="float32"``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


# ---------------------------------------------------------------------------------------------------------------
# Release config.json -> ModelConfig

# fields whose value must be exactly this for the architecture we implement
_REQUIRED_VALUES: dict[str, Any] = {
    "_class_name": "OpenSoraT2V",
    "use_rope": True,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "downsampler": None,
    "only_cross_attention": False,
    "double_self_attention": False,
    "num_vector_embeds": None,
    "attention_type": "default",
}
# fields that must be falsy / default if present
_MUST_BE_FALSY = ("use_additional_conditions", "use_linear_projection", "upcast_attention")
# fields that do not change the computation
_IGNORED = {
    "_diffusers_version", "_name_or_path", "attention_mode", "dropout", "num_embeds_ada_norm", "norm_num_groups",
    "use_stable_fp32", "decay", "inv_gamma", "min_decay", "optimization_step", "power", "update_after_step",
    "use_ema_warmup",
}
_MAPPED = {
    "num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "patch_size",
    "patch_size_t", "caption_channels", "cross_attention_dim", "interpolation_scale_t", "interpolation_scale_h",
    "interpolation_scale_w", "norm_eps", "sample_size", "sample_size_t",
}


def _release_int(release: dict[str, Any], name: str, default: int | None) -> int:
    value = release.get(name, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        raise UnsupportedConfigError(f"release config field {name!r} must be an integer, got {value!r}")
    return value


def _release_float(release: dict[str, Any], name: str, default: float) -> float:
    value = release.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UnsupportedConfigError(f"release config field {name!r} must be a positive number, got {value!r}")
    return float(value)


def release_interpolation_scales(sample_size: tuple[int, int], sample_size_t: int) -> tuple[float, float, float]:
    """The RoPE interpolation scales (t, h, w) the release derives when its config leaves them out (or null):
    ``sample_size_t / 16`` for an even ``sample_size_t`` and ``(sample_size_t - 1) // 16 + 1`` for an odd one;
    ``sample_size[0] / 30`` and ``sample_size[1] / 40`` (OpenSoraT2V._init_patched_inputs)."""
    t = (sample_size_t - 1) // 16 + 1 if sample_size_t % 2 == 1 else sample_size_t / 16
    return float(t), sample_size[0] / 30, sample_size[1] / 40


def config_from_release(release: dict[str, Any], **policy: Any) -> ModelConfig:
    """Map a release ``config.json`` dict to a :class:`ModelConfig`.

    Raises :class:`UnsupportedConfigError` naming every field whose value we do not implement (e.g.
    ``use_rope: false`` or a ``downsampler``) or that we do not know, and naming any field of the wrong type
    (integers must be JSON integers, scales positive numbers). ``interpolation_scale_{t,h,w}`` left out or null are
    derived from ``sample_size_t`` / ``sample_size`` as the release does (:func:`release_interpolation_scales`).
    ``policy`` sets dtype fields.
    """
    if not isinstance(release, dict):
        raise UnsupportedConfigError(f"a release config must be a JSON object, got {type(release).__name__}")
    problems: list[str] = []
    for name, value in _REQUIRED_VALUES.items():
        if name in release and release[name] != value:
            problems.append(f"{name}={release[name]!r} (supported: {value!r})")
    for name in _MUST_BE_FALSY:
        if release.get(name):
            problems.append(f"{name}={release[name]!r} (supported: false/null)")
    unknown = sorted(set(release) - set(_REQUIRED_VALUES) - set(_MUST_BE_FALSY) - _IGNORED - _MAPPED)
    for name in unknown:
        problems.append(f"{name}={release[name]!r} (unknown field)")
    if problems:
        raise UnsupportedConfigError("unsupported OpenSoraT2V config: " + "; ".join(problems))
    heads = _release_int(release, "num_attention_heads", 24)
    head_dim = _release_int(release, "attention_head_dim", 96)
    cross = release.get("cross_attention_dim")
    if cross is not None and _release_int(release, "cross_attention_dim", None) != heads * head_dim:
        raise UnsupportedConfigError(
            f"unsupported OpenSoraT2V config: cross_attention_dim={cross} (supported: equal to "
            f"num_attention_heads*attention_head_dim={heads * head_dim}, since text is projected to the inner dim "
            "first)")
    sample_size = release.get("sample_size", [90, 160])
    if isinstance(sample_size, int) and not isinstance(sample_size, bool):
        sample_size = [sample_size, sample_size]
    if not (isinstance(sample_size, list) and len(sample_size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sample_size)):
        raise UnsupportedConfigError(
            f"release config field 'sample_size' must be a positive integer or a list of two, got {sample_size!r}")
    sample_size_t = _release_int(release, "sample_size_t", 1)
    in_channels = _release_int(release, "in_channels", 4)
    out_channels = release.get("out_channels")
    derived = release_interpolation_scales((sample_size[0], sample_size[1]), sample_size_t)
    scales = {}
    for axis, default in zip("thw", derived):
        name = f"interpolation_scale_{axis}"
        scales[name] = default if release.get(name) is None else _release_float(release, name, default)
    kwargs = dict(
        num_layers=_release_int(release, "num_layers", 32),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=in_channels,
        out_channels=in_channels if out_channels is None else _release_int(release, "out_channels", None),
        patch_size=_release_int(release, "patch_size", 2),
        patch_size_t=_release_int(release, "patch_size_t", 1),
        caption_channels=_release_int(release, "caption_channels", 4096),
        norm_eps=_release_float(release, "norm_eps", 1e-6),
        sample_size=(sample_size[0], sample_size[1]),
        sample_size_t=sample_size_t,
        **scales,
    )
    kwargs.update(policy)
    return ModelConfig(**kwargs)


def load_release_config(path: str | Path, **policy: Any) -> ModelConfig:
    """Read a release ``config.json`` (or the folder holding it) into a :class:`ModelConfig`."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"release config not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UnsupportedConfigError(f"{path} is not valid JSON: {err}") from err
    try:
        return config_from_release(raw, **policy)
    except UnsupportedConfigError as err:
        raise UnsupportedConfigError(f"{path}: {err}") from err


# ---------------------------------------------------------------------------------------------------------------
# video sizes

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
