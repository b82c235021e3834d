"""Configuration of the Open-Sora-Plan v1.2 CausalVAE, parsed from the release's ``vae/config.json``.

:class:`VAEConfig` holds every architecture field of the release config (same names). Block type names are
checked when the config is built: a name this port does not implement (for example the v1.0 layout's
``TimeDownsampleRes2x``) raises :class:`VAEConfigError` naming the field, the index and the value. Fields the
v1.2.0 model code ignores (``loss_*``, ``lr``, ``in_channels``, ``out_channels``, ``*_unup``, ``*_undown``, and
diffusers' ``_class_name`` style metadata) are accepted and dropped.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

SCALING_FACTOR = 0.18215
"""Latent scale of the release pipeline: DiT latents = posterior sample * 0.18215."""
VAE_PARTS = ("all", "decoder")  # what a load reads: the whole VAE, or the decoder and post_quant_conv

CONV_IN_TYPES = ("Conv2d", "CausalConv3d")
CONV_OUT_TYPES = ("CausalConv3d",)
RESNET_TYPES = ("ResnetBlock2D", "ResnetBlock3D")
MID_RESNET_TYPES = ("ResnetBlock3D",)
ATTENTION_TYPES = ("AttnBlock3DFix",)
SPATIAL_DOWNSAMPLE_TYPES = ("", "Downsample", "Spatial2xTime2x3DDownsample")
TEMPORAL_DOWNSAMPLE_TYPES = ("",)
SPATIAL_UPSAMPLE_TYPES = ("", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample")
TEMPORAL_UPSAMPLE_TYPES = ("",)
Q_CONV_TYPES = ("CausalConv3d",)

# release fields the v1.2.0 model code does not use
IGNORED_FIELDS = frozenset(
    {
        "in_channels",
        "out_channels",
        "lr",
        "loss_type",
        "loss_params",
        "decoder_spatial_upsample_unup",
        "encoder_spatial_downsample_undown",
    }
)


class VAEConfigError(ValueError):
    """The VAE config names something this port does not implement, or is inconsistent."""


_ELEMENT_TYPES = {"attn_resolutions": int}


def _type_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]


def _is_a(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def _check_field_type(name: str, value: Any, default: Any) -> None:
    """Raise :class:`VAEConfigError` naming ``name`` when ``value`` has not the type of the field's ``default``
    (ints must be JSON integers, lists lists of the right element type)."""
    if isinstance(default, tuple):
        kind = type(default[0]) if default else _ELEMENT_TYPES.get(name, int)
        if not isinstance(value, (list, tuple)) or not all(_is_a(v, kind) for v in value):
            raise VAEConfigError(f"VAE config field {name!r} must be a list of {_type_name(kind)}s, got {value!r}")
    elif not _is_a(value, type(default)):
        raise VAEConfigError(f"VAE config field {name!r} must be {_type_name(type(default))}, got {value!r}")


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a v1.2 ``CausalVAEModel`` (field names as in the release ``config.json``).

    Defaults are the released model (``LanguageBind/Open-Sora-Plan-v1.2.0/vae``): widths 128/256/512/512,
    4 latent channels, compression 4x8x8. Use :meth:`from_json` for a release folder's config.
    """

    hidden_size: int = 128
    hidden_size_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 4
    embed_dim: int = 4
    double_z: bool = True
    use_quant_layer: bool = True
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256
    dropout: float = 0.0
    q_conv: str = "CausalConv3d"
    encoder_conv_in: str = "Conv2d"
    encoder_conv_out: str = "CausalConv3d"
    encoder_attention: str = "AttnBlock3DFix"
    encoder_mid_resnet: str = "ResnetBlock3D"
    encoder_resnet_blocks: tuple[str, ...] = ("ResnetBlock2D", "ResnetBlock2D", "ResnetBlock3D", "ResnetBlock3D")
    encoder_spatial_downsample: tuple[str, ...] = (
        "Downsample",
        "Spatial2xTime2x3DDownsample",
        "Spatial2xTime2x3DDownsample",
        "",
    )
    encoder_temporal_downsample: tuple[str, ...] = ("", "", "", "")
    decoder_conv_in: str = "CausalConv3d"
    decoder_conv_out: str = "CausalConv3d"
    decoder_attention: str = "AttnBlock3DFix"
    decoder_mid_resnet: str = "ResnetBlock3D"
    decoder_resnet_blocks: tuple[str, ...] = ("ResnetBlock3D",) * 4
    decoder_spatial_upsample: tuple[str, ...] = (
        "",
        "SpatialUpsample2x",
        "Spatial2xTime2x3DUpsample",
        "Spatial2xTime2x3DUpsample",
    )
    decoder_temporal_upsample: tuple[str, ...] = ("", "", "", "")
    scaling_factor: float = SCALING_FACTOR

    def __post_init__(self) -> None:
        # lists from JSON -> tuples (keeps the dataclass hashable)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self._validate()

    # ------------------------------------------------------------------ validation
    def _check_one(self, name: str, allowed: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in allowed:
            raise VAEConfigError(
                f"VAE config field {name!r} = {value!r} is not supported by this port "
                f"(supported: {', '.join(repr(a) for a in allowed)})"
            )

    def _check_list(self, name: str, allowed: tuple[str, ...]) -> None:
        values = getattr(self, name)
        if len(values) != self.num_levels:
            raise VAEConfigError(
                f"VAE config field {name!r} has {len(values)} entries; hidden_size_mult has {self.num_levels}"
            )
        for i, value in enumerate(values):
            if value not in allowed:
                raise VAEConfigError(
                    f"VAE config field {name!r}[{i}] = {value!r} is not supported by this port "
                    f"(supported: {', '.join(repr(a) for a in allowed)})"
                )

    def _validate(self) -> None:
        if self.num_levels < 1:
            raise VAEConfigError("VAE config field 'hidden_size_mult' is empty")
        for name in ("hidden_size", "num_res_blocks", "z_channels", "embed_dim"):
            if int(getattr(self, name)) < 1:
                raise VAEConfigError(f"VAE config field {name!r} = {getattr(self, name)!r} must be >= 1")
        for w in self.widths:
            if w % 32:
                raise VAEConfigError(
                    f"VAE widths {self.widths} (hidden_size * hidden_size_mult) must be multiples of 32 "
                    "(GroupNorm uses 32 groups)"
                )
        if not self.double_z:
            raise VAEConfigError(
                "VAE config field 'double_z' = False is not supported (the posterior needs mean and logvar)"
            )
        if self.attn_resolutions:
            raise VAEConfigError(
                f"VAE config field 'attn_resolutions' = {list(self.attn_resolutions)!r} is not supported by this port "
                "(v1.2 uses [] : attention only in the mid blocks)"
            )
        self._check_one("q_conv", Q_CONV_TYPES)
        self._check_one("encoder_conv_in", CONV_IN_TYPES)
        self._check_one("encoder_conv_out", CONV_OUT_TYPES)
        self._check_one("encoder_attention", ATTENTION_TYPES)
        self._check_one("encoder_mid_resnet", MID_RESNET_TYPES)
        self._check_one("decoder_conv_in", ("CausalConv3d",))
        self._check_one("decoder_conv_out", CONV_OUT_TYPES)
        self._check_one("decoder_attention", ATTENTION_TYPES)
        self._check_one("decoder_mid_resnet", MID_RESNET_TYPES)
        self._check_list("encoder_resnet_blocks", RESNET_TYPES)
        self._check_list("encoder_spatial_downsample", SPATIAL_DOWNSAMPLE_TYPES)
        self._check_list("encoder_temporal_downsample", TEMPORAL_DOWNSAMPLE_TYPES)
        self._check_list("decoder_resnet_blocks", ("ResnetBlock3D",))
        self._check_list("decoder_spatial_upsample", SPATIAL_UPSAMPLE_TYPES)
        self._check_list("decoder_temporal_upsample", TEMPORAL_UPSAMPLE_TYPES)

    # ------------------------------------------------------------------ derived
    @property
    def num_levels(self) -> int:
        return len(self.hidden_size_mult)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channel width of each level (level 0 = full resolution)."""
        return tuple(self.hidden_size * m for m in self.hidden_size_mult)

    @property
    def spatial_compression(self) -> int:
        """Pixels per latent along H and W (8 for v1.2)."""
        return 2 ** sum(1 for s in self.encoder_spatial_downsample if s)

    @property
    def temporal_compression(self) -> int:
        """Frames per latent frame after the first (4 for v1.2)."""
        return 2 ** sum(1 for s in self.encoder_spatial_downsample if s == "Spatial2xTime2x3DDownsample")

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, t, h, w) of the latent of a video with ``frames`` x ``height`` x ``width`` pixels (encoder rule)."""
        t = frames
        for s in self.encoder_spatial_downsample:
            if s == "Spatial2xTime2x3DDownsample":
                t = (t + 1) // 2
        f = self.spatial_compression
        return self.embed_dim, t, height // f, width // f

    def decoded_frames(self, latent_frames: int) -> int:
        """Frames produced by the decoder from ``latent_frames`` latent frames (4t-3 for v1.2)."""
        t = latent_frames
        for s in self.decoder_spatial_upsample:
            if s == "Spatial2xTime2x3DUpsample":
                t = 2 * t - 1 if t > 1 else 1
        return t

    # ------------------------------------------------------------------ I/O
    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "VAEConfig":
        """Build from a parsed ``config.json``; unknown fields raise, the release's unused fields are dropped."""
        if not isinstance(raw, dict):
            raise VAEConfigError(f"a VAE config must be a JSON object, got {type(raw).__name__}")
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in raw.items():
            if key in known:
                _check_field_type(key, value, known[key].default)
                kwargs[key] = tuple(value) if isinstance(value, list) else value
            elif key.startswith("_") or key in IGNORED_FIELDS:
                continue
            else:
                unknown.append(key)
        if unknown:
            raise VAEConfigError(f"unknown VAE config field(s) {sorted(unknown)} (not part of the v1.2 CausalVAEModel)")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "VAEConfig":
        """Read a release ``config.json`` (a file, or a folder holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except json.JSONDecodeError as err:
            raise VAEConfigError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(raw, dict):
            raise VAEConfigError(f"{path} must hold a JSON object")
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    # ------------------------------------------------------------------ presets
    @classmethod
    def release_v12(cls) -> "VAEConfig":
        """The released v1.2 VAE (239,189,991 parameters)."""
        return cls()

    @classmethod
    def tiny(cls) -> "VAEConfig":
        """The golden-test layout: v1.2 block types with hidden_size 32, multipliers 1,2,1,1 (2,045,991 params)."""
        return cls(hidden_size=32, hidden_size_mult=(1, 2, 1, 1))

    @classmethod
    def micro(cls) -> "VAEConfig":
        """Three levels with 2-D and 3-D res blocks, a 2-D and a 3-D downsample and a fusable spatial upsample:
        the smallest layout with every stage kind of the release (compresses 4x in space, 2x in time; tests)."""
        return cls(
            hidden_size=32, hidden_size_mult=(1, 2, 2), num_res_blocks=1,
            encoder_resnet_blocks=("ResnetBlock2D", "ResnetBlock3D", "ResnetBlock3D"),
            encoder_spatial_downsample=("Downsample", "Spatial2xTime2x3DDownsample", ""),
            encoder_temporal_downsample=("", "", ""), decoder_resnet_blocks=("ResnetBlock3D",) * 3,
            decoder_spatial_upsample=("", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample"),
            decoder_temporal_upsample=("", "", ""),
        )


PRESETS = {"v1.2": VAEConfig.release_v12, "tiny": VAEConfig.tiny, "micro": VAEConfig.micro}


CONV_IMPLS = ("auto", "stack", "taps", "conv3d")


@dataclass(frozen=True)
class ComputeConfig:
    """How the convolutions run (results agree to rounding; speed and memory differ).

    conv_impl:
      ``"auto"`` (default): ``"stack"`` on GPU, ``"conv3d"`` elsewhere (XLA:CPU runs 3-D convs well and compiles
      them faster);
      ``"stack"``: a causal 3-D conv with kt temporal taps runs as one 2-D conv over frames whose input
      stacks the kt tap frames along channels (kernel kh x kw, kt*Cin inputs) -- 2-D NHWC convs are the
      fast cuDNN path on Hopper, where XLA lays 3-D convs out channels-first;
      ``"taps"``: kt separate 2-D convs (one per temporal tap) summed;
      ``"conv3d"``: one ``lax.conv_general_dilated`` with 3 spatial dims.
    chunk_bytes: largest stacked conv input (bytes) built at once; longer inputs are processed in time chunks
      (a loop over frame chunks writing into the output), which bounds the temporaries of high-resolution convs.
    attn_chunk_bytes: largest fp32 attention score tensor built at once (frames are processed in chunks above).
    staged: run the encoder/decoder as a sequence of separately compiled stages (head, each res block, each
      up/downsample, tail) whose inputs are donated: bounds peak memory to one stage, lets identical blocks
      share compiled code, and makes the identity-shortcut add happen in place. False: one executable.
    fuse_upsample: with ``staged``, a ``SpatialUpsample2x`` followed by a res block with a shortcut conv (v1.2:
      decoder up.1 -> up.0) runs as one stage that never materialises the upsampled (widest full-resolution)
      tensor (recomputes it in frame chunks; ~5% more FLOPs, one full-resolution tensor less).
    shortcut_on_the_fly: in that fused stage, also recompute the block's shortcut (upsample conv + 1x1 conv) inside
      conv2's frame chunks instead of storing it: one more full-resolution tensor less, one more upsample conv of
      FLOPs.
    in_place_conv2: a res block whose shortcut is not an identity add (a 1x1 shortcut conv, or the fused stage's
      recomputed shortcut) writes conv2's output over its input (the hidden activation) frame chunk by frame
      chunk, carrying the two overwritten halo frames: one full-size tensor less in those blocks, same results.

    Defaults (measured on an H100, release widths, bf16, 29x720p / 93x720p with the release tiling,
    experiments/results/vae): 256 MiB chunks, shortcut on the fly and in-place conv2 give 4.70 / 5.22 GiB peak
    at 1.77 / 5.91 s; 1 GiB chunks without them gave 6.44 / 6.94 GiB at 1.65 / 5.53 s.
    """

    conv_impl: str = "auto"
    chunk_bytes: int = 256 << 20
    attn_chunk_bytes: int = 1 << 30
    staged: bool = True
    fuse_upsample: bool = True
    shortcut_on_the_fly: bool = True
    in_place_conv2: bool = True

    def __post_init__(self) -> None:
        if self.conv_impl not in CONV_IMPLS:
            raise VAEConfigError(f"ComputeConfig.conv_impl = {self.conv_impl!r}; expected one of {CONV_IMPLS}")
        if self.chunk_bytes < 1 or self.attn_chunk_bytes < 1:
            raise VAEConfigError("ComputeConfig chunk sizes must be positive")
