"""Release CausalVAE weights (``checkpoint.ckpt`` or safetensors) -> :class:`~jax_vdit.vae.model.CausalVAE`.

The key map is explicit: :func:`vae_key_map` walks the config and lists, for every release tensor name, the NNX
parameter path, the release shape and the layout transform (torch ``Conv3d`` (Cout, Cin, kt, kh, kw) and
``Conv2d`` (Cout, Cin, kh, kw) -> kernel (kt, kh, kw, Cin, Cout); GroupNorm ``weight`` -> ``scale``). Before any
tensor is read the checkpoint's listing is compared with the map (:func:`jax_vdit.io.key_map.check_keys`:
one error lists every missing, unexpected and wrongly shaped key); every tensor is checked for NaN/Inf as it is
read. Keys containing ``loss`` (training-only loss modules) are ignored, as the release loader does.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_vdit.host_arrays import to_device
from jax_vdit.io.tensors import TensorSource, open_tensors
from jax_vdit.vae.config import VAE_PARTS, ComputeConfig, VAEConfig, VAEConfigError
from jax_vdit.vae.model import CausalVAE, abstract_vae, without_encoder
from jax_vdit.io.key_map import KeyMap, check_finite, check_keys, set_path
from jax_vdit.io.key_map import identity as identity_transform

StatePath = tuple[str | int, ...]


def conv3d_weight(x: np.ndarray) -> np.ndarray:
    """torch Conv3d weight (Cout, Cin, kt, kh, kw) -> (kt, kh, kw, Cin, Cout)."""
    return np.transpose(x, (2, 3, 4, 1, 0))


def conv2d_weight(x: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (Cout, Cin, kh, kw) -> (1, kh, kw, Cin, Cout)."""
    return np.transpose(x, (2, 3, 1, 0))[None]


class _Builder:
    def __init__(self) -> None:
        self.km = KeyMap(ignorable_prefixes=())

    def conv3d(self, name: str, path: StatePath, cin: int, cout: int, k: tuple[int, int, int]) -> None:
        """A CausalConv3d: keys ``<name>.conv.weight`` / ``<name>.conv.bias``."""
        self.km.add(f"{name}.conv.weight", (*path, "kernel"), (cout, cin, *k), conv3d_weight)
        self.km.add(f"{name}.conv.bias", (*path, "bias"), (cout,))

    def conv2d(self, name: str, path: StatePath, cin: int, cout: int, k: tuple[int, int]) -> None:
        """A plain nn.Conv2d: keys ``<name>.weight`` / ``<name>.bias``."""
        self.km.add(f"{name}.weight", (*path, "kernel"), (cout, cin, *k), conv2d_weight)
        self.km.add(f"{name}.bias", (*path, "bias"), (cout,))

    def norm(self, name: str, path: StatePath, c: int) -> None:
        self.km.add(f"{name}.weight", (*path, "scale"), (c,))
        self.km.add(f"{name}.bias", (*path, "bias"), (c,))

    def resnet(self, name: str, path: StatePath, cin: int, cout: int, three_d: bool) -> None:
        self.norm(f"{name}.norm1", (*path, "norm1"), cin)
        self.norm(f"{name}.norm2", (*path, "norm2"), cout)
        if three_d:
            self.conv3d(f"{name}.conv1", (*path, "conv1"), cin, cout, (3, 3, 3))
            self.conv3d(f"{name}.conv2", (*path, "conv2"), cout, cout, (3, 3, 3))
            if cin != cout:
                self.conv3d(f"{name}.nin_shortcut", (*path, "nin_shortcut"), cin, cout, (1, 1, 1))
        else:
            self.conv2d(f"{name}.conv1", (*path, "conv1"), cin, cout, (3, 3))
            self.conv2d(f"{name}.conv2", (*path, "conv2"), cout, cout, (3, 3))
            if cin != cout:
                self.conv2d(f"{name}.nin_shortcut", (*path, "nin_shortcut"), cin, cout, (1, 1))

    def attn(self, name: str, path: StatePath, c: int) -> None:
        self.norm(f"{name}.norm", (*path, "norm"), c)
        for part in ("q", "k", "v", "proj_out"):
            self.conv3d(f"{name}.{part}", (*path, part), c, c, (1, 1, 1))

    def mid(self, name: str, path: StatePath, c: int) -> None:
        self.resnet(f"{name}.block_1", (*path, "block_1"), c, c, True)
        self.attn(f"{name}.attn_1", (*path, "attn_1"), c)
        self.resnet(f"{name}.block_2", (*path, "block_2"), c, c, True)


def vae_key_map(cfg: VAEConfig) -> KeyMap:
    """Every release tensor of a v1.2 CausalVAEModel built from ``cfg`` -> NNX path, shape, transform."""
    b = _Builder()
    widths = cfg.widths
    # encoder
    if cfg.encoder_conv_in == "Conv2d":
        b.conv2d("encoder.conv_in", ("encoder", "conv_in"), 3, cfg.hidden_size, (3, 3))
    else:
        b.conv3d("encoder.conv_in", ("encoder", "conv_in"), 3, cfg.hidden_size, (3, 3, 3))
    cin = cfg.hidden_size
    for i in range(cfg.num_levels):
        three_d = cfg.encoder_resnet_blocks[i] == "ResnetBlock3D"
        for j in range(cfg.num_res_blocks):
            b.resnet(f"encoder.down.{i}.block.{j}", ("encoder", "down", i, "block", j), cin, widths[i], three_d)
            cin = widths[i]
        kind = cfg.encoder_spatial_downsample[i]
        name, path = f"encoder.down.{i}.downsample.conv", ("encoder", "down", i, "downsample", "conv")
        if kind == "Downsample":
            b.conv2d(name, path, cin, cin, (3, 3))
        elif kind == "Spatial2xTime2x3DDownsample":
            b.conv3d(name, path, cin, cin, (3, 3, 3))
    b.mid("encoder.mid", ("encoder", "mid"), widths[-1])
    b.norm("encoder.norm_out", ("encoder", "norm_out"), widths[-1])
    b.conv3d("encoder.conv_out", ("encoder", "conv_out"), widths[-1], 2 * cfg.z_channels, (3, 3, 3))
    # decoder
    block_in = widths[-1]
    b.conv3d("decoder.conv_in", ("decoder", "conv_in"), cfg.z_channels, block_in, (3, 3, 3))
    b.mid("decoder.mid", ("decoder", "mid"), block_in)
    for i in reversed(range(cfg.num_levels)):
        for j in range(cfg.num_res_blocks + 1):
            b.resnet(f"decoder.up.{i}.block.{j}", ("decoder", "up", i, "block", j), block_in, widths[i], True)
            block_in = widths[i]
        kind = cfg.decoder_spatial_upsample[i]
        if kind:
            k = (1, 3, 3) if kind == "SpatialUpsample2x" else (3, 3, 3)
            b.conv3d(f"decoder.up.{i}.upsample.conv", ("decoder", "up", i, "upsample", "conv"), block_in, block_in, k)
    b.norm("decoder.norm_out", ("decoder", "norm_out"), block_in)
    b.conv3d("decoder.conv_out", ("decoder", "conv_out"), block_in, 3, (3, 3, 3))
    if cfg.use_quant_layer:
        b.conv3d("quant_conv", ("quant_conv",), 2 * cfg.z_channels, 2 * cfg.embed_dim, (1, 1, 1))
        b.conv3d("post_quant_conv", ("post_quant_conv",), cfg.embed_dim, cfg.z_channels, (1, 1, 1))
    return b.km


class _IgnoreLossKeys(KeyMap):
    """The release loader tolerates unexpected keys that contain ``loss`` (training loss modules)."""

    def is_ignorable(self, name: str) -> bool:
        return "loss" in name or super().is_ignorable(name)


def _with_loss_ignored(km: KeyMap) -> KeyMap:
    out = _IgnoreLossKeys(rules=km.rules, ignorable_prefixes=km.ignorable_prefixes)
    return out


def _check_map_matches_model(km: KeyMap, state) -> None:
    """Internal consistency: the key map fills every model parameter exactly once, with matching shapes."""
    flat = {tuple(path): leaf for path, leaf in nnx.to_flat_state(state)}
    model_paths = set(flat)
    mapped = {rule.path: rule for rule in km.rules.values()}
    problems = []
    for path in sorted(model_paths - set(mapped), key=str):
        problems.append(f"model parameter {path} has no release key")
    for path in sorted(set(mapped) - model_paths, key=str):
        problems.append(f"key map path {path} is not a model parameter")
    for path in model_paths & set(mapped):
        rule = mapped[path]
        expect = rule.transform(np.empty(rule.source_shape, np.float32)).shape
        if tuple(expect) != tuple(flat[path].shape):
            problems.append(f"{path}: model shape {tuple(flat[path].shape)}, key map gives {tuple(expect)}")
    if problems:  # a bug in this module, not in the checkpoint
        raise AssertionError("VAE key map does not match the model:\n  " + "\n  ".join(problems))


_ENCODER_KEYS = ("encoder.", "quant_conv.")  # what parts="decoder" neither reads nor requires


def _decoder_only(km: KeyMap) -> KeyMap:
    """``km`` without the encoder's and quant_conv's tensors, which become ignorable (read nowhere, required
    nowhere: a checkpoint holding only the decoder loads too)."""
    rules = {name: rule for name, rule in km.rules.items() if not name.startswith(_ENCODER_KEYS)}
    return type(km)(rules=rules, ignorable_prefixes=tuple(km.ignorable_prefixes) + _ENCODER_KEYS)


def load_vae_weights(vae: CausalVAE, source: TensorSource, *, what: str = "checkpoint",
                     parts: str = "all") -> CausalVAE:
    """Fill ``vae`` (concrete or abstract) from a tensor source; returns the loaded model. ``parts="decoder"``:
    the decoder and post_quant_conv only; the encoder and quant_conv are dropped from the model
    (:func:`~jax_vdit.vae.model.without_encoder`) and their tensors are not read.

    Raises :class:`~jax_vdit.io.key_map.WeightMismatchError` (every missing/unexpected/mis-shaped key at
    once) before reading, and :class:`~jax_vdit.io.key_map.NonFiniteWeightError` naming a NaN/Inf tensor.
    """
    if parts not in VAE_PARTS:
        raise ValueError(f"parts must be one of {VAE_PARTS}, not {parts!r}")
    km = _with_loss_ignored(vae_key_map(vae.config))
    if parts == "decoder":
        vae = without_encoder(vae)
        km = _decoder_only(km)
    graphdef, state = nnx.split(vae)
    _check_map_matches_model(km, state)
    check_keys(km, source.infos(), what=what)
    param_dtype = jnp.dtype(vae.param_dtype)
    values: dict = {}
    for name, rule in km.rules.items():
        array = source.read(name)
        check_finite(name, array)
        array = rule.transform(np.asarray(array))
        if array.dtype != param_dtype:  # through float32, so that float16 -> bfloat16 rounds once
            array = array.astype(np.float32, copy=False).astype(param_dtype)
        set_path(values, rule.path, to_device(array))
    nnx.replace_by_pure_dict(state, values)
    return nnx.merge(graphdef, state)


def _resolve_files(path: Path, config: str | os.PathLike | VAEConfig | None) -> tuple[VAEConfig, Path]:
    if isinstance(config, VAEConfig):
        cfg = config
    elif config is not None:
        cfg = VAEConfig.from_json(config)
    else:
        folder = path if path.is_dir() else path.parent
        cfg_file = folder / "config.json"
        if not cfg_file.is_file():
            raise VAEConfigError(
                f"no config.json next to {path}; pass config= (a config.json path or a VAEConfig)"
            )
        cfg = VAEConfig.from_json(cfg_file)
    return cfg, path


def read_vae_config(path: str | os.PathLike) -> VAEConfig:
    """The :class:`VAEConfig` that :func:`load_vae` would use for ``path``, without reading any weights."""
    return _resolve_files(Path(path), None)[0]


def load_vae(
    path: str | os.PathLike,
    *,
    dtype=jnp.float32,
    param_dtype=None,
    config: str | os.PathLike | VAEConfig | None = None,
    compute: ComputeConfig = ComputeConfig(),
    parts: str = "all",
) -> CausalVAE:
    """Load the release VAE.

    Args:
      path: a folder (``config.json`` + ``checkpoint.ckpt`` or ``diffusion_pytorch_model.safetensors``, as the
        release's ``vae/``), or a weights file (``.ckpt``/``.pt``/``.safetensors``/sharded index) with its
        ``config.json`` beside it or given as ``config``. PyTorch pickles may nest the weights under
        ``state_dict``/``ema_state_dict``/``gen_model`` and prefix them with ``module.``.
      dtype: compute dtype (float32 or bfloat16; the release samples in bfloat16).
      param_dtype: parameter storage dtype (default: ``dtype``).
      config: a ``config.json`` path or a :class:`VAEConfig`, overriding the one found next to ``path``.
      compute: conv implementation / chunking (:class:`ComputeConfig`).
      parts: "all", or "decoder": the decoder and post_quant_conv only (what decoding latents needs: 144.8M of
        the release's 239.2M parameters); the encoder's tensors are neither read nor required, and encoding
        with the result raises :class:`~jax_vdit.vae.model.VAEEncoderMissingError`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VAE checkpoint not found: {path}")
    cfg, path = _resolve_files(path, config)
    param_dtype = dtype if param_dtype is None else param_dtype
    vae = abstract_vae(cfg, dtype=dtype, param_dtype=param_dtype, compute=compute)
    source = open_tensors(path)
    try:
        return load_vae_weights(vae, source, what=str(path), parts=parts)
    finally:
        source.close()


def _conv3d_to_release(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`conv3d_weight`: (kt, kh, kw, Cin, Cout) -> (Cout, Cin, kt, kh, kw)."""
    return np.transpose(x, (4, 3, 0, 1, 2))


def _conv2d_to_release(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`conv2d_weight`: (1, kh, kw, Cin, Cout) -> (Cout, Cin, kh, kw)."""
    return np.transpose(x[0], (3, 2, 0, 1))


def write_vae_folder(vae: CausalVAE, folder: str | os.PathLike, *, dtype: str = "float32") -> Path:
    """Write ``vae`` as a release-format VAE folder (``config.json`` + ``diffusion_pytorch_model.safetensors``
    with the release tensor names and layouts, every tensor in ``dtype``) that :func:`load_vae` reads back
    exactly. For synthetic checkpoints (tests, benchmarks with random weights) and fine-tuned VAEs."""
    import json

    import ml_dtypes
    from safetensors.numpy import save_file

    inverse = {identity_transform: lambda x: x, conv3d_weight: _conv3d_to_release, conv2d_weight: _conv2d_to_release}
    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float16": np.float16}[dtype]
    _, state = nnx.split(vae)
    flat = {tuple(k): np.asarray(v, np.float32) for k, v in nnx.to_flat_state(state)}
    tensors = {}
    for name, rule in vae_key_map(vae.config).rules.items():
        if rule.transform not in inverse:
            raise NotImplementedError(f"no inverse layout for {name} ({rule.transform.__name__})")
        array = inverse[rule.transform](flat[rule.path])
        if tuple(array.shape) != rule.source_shape:  # a bug here, not in the model
            raise AssertionError(f"{name}: wrote shape {array.shape}, the release has {rule.source_shape}")
        tensors[name] = np.ascontiguousarray(array).astype(np_dtype)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    config = {"_class_name": "CausalVAEModel", **vae.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return folder
