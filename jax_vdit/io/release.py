"""Release-format transformer weights: the key map, streaming reads of release folders, safetensors files and PyTorch
pickles, and writing release-format folders (config.json + tensors).

``jax_vdit.io.load_model(path)`` is the one-call API. Release tensors are checked against an explicit key map (every key and
shape, in one pass, before any data is read), then streamed one tensor at a time into the model's parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jax_vdit.config import ModelConfig, dtype_policy, get_preset, load_release_config
from jax_vdit.io.device_layout import place_groups
from jax_vdit.io.key_map import (  # noqa: F401  (CastRangeError: re-exported)
    CastRangeError,
    KeyMap,
    cast_range_error,
    check_finite,
    check_keys,
    set_path,
)
from jax_vdit.io.load_timing import timed
from jax_vdit.io.params import model_from_pure_params
from jax_vdit.io.tensors import TensorSource, open_tensors
from jax_vdit.model.transformer import OpenSoraT2V

# non-persistent sin-cos buffers of the release's PatchEmbed2D; unused with RoPE
IGNORED_RELEASE_PREFIXES = ("pos_embed.pos_embed", "pos_embed.temp_pos_embed")


def release_key_map(cfg: ModelConfig) -> KeyMap:
    """Release tensor name -> (NNX path, release shape, layout transform) for every parameter."""
    d, p, c = cfg.inner_dim, cfg.patch_size, cfg.in_channels
    km = KeyMap(ignorable_prefixes=IGNORED_RELEASE_PREFIXES)

    def patch_kernel(w: np.ndarray) -> np.ndarray:  # Conv2d OIHW (D, C, p, p) -> (C*p*p, D), (c, ph, pw) order
        return w.reshape(w.shape[0], -1).T

    km.add("pos_embed.proj.weight", ("patch_embed", "kernel"), (d, c, p, p), patch_kernel)
    km.add("pos_embed.proj.bias", ("patch_embed", "bias"), (d,))
    km.add_linear("adaln_single.emb.timestep_embedder.linear_1", ("adaln_single", "linear_1"), 256, d)
    km.add_linear("adaln_single.emb.timestep_embedder.linear_2", ("adaln_single", "linear_2"), d, d)
    km.add_linear("adaln_single.linear", ("adaln_single", "linear"), d, 6 * d)
    km.add_linear("caption_projection.linear_1", ("caption_projection", "linear_1"), cfg.caption_channels, d)
    km.add_linear("caption_projection.linear_2", ("caption_projection", "linear_2"), d, d)
    for i in range(cfg.num_layers):
        src, dst = f"transformer_blocks.{i}", ("blocks", i)
        km.add(f"{src}.scale_shift_table", (*dst, "scale_shift_table"), (6, d))
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v"):
                km.add_linear(f"{src}.{attn}.{proj}", (*dst, attn, proj), d, d)
            km.add_linear(f"{src}.{attn}.to_out.0", (*dst, attn, "to_out"), d, d)
        km.add_linear(f"{src}.ff.net.0.proj", (*dst, "ff", "proj_in"), d, 4 * d)
        km.add_linear(f"{src}.ff.net.2", (*dst, "ff", "proj_out"), 4 * d, d)
    km.add("scale_shift_table", ("scale_shift_table",), (2, d))
    km.add_linear("proj_out", ("proj_out",), d, cfg.out_patch_dim)
    return km


def _read_rule(source: TensorSource, name: str, rule, dtype: np.dtype, raw: np.ndarray | None = None) -> np.ndarray:
    raw = source.read(name) if raw is None else raw
    check_finite(name, raw)
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(rule.transform(raw)).astype(dtype, copy=False)
    if out.dtype != raw.dtype and not np.isfinite(out.astype(np.float32, copy=False)).all():
        raise cast_range_error(name, dtype, float(np.max(np.abs(raw.astype(np.float32)))))
    return out


def stream_release_params(
    cfg: ModelConfig,
    source: TensorSource,
    *,
    to_array: Callable[[np.ndarray], Any] | None = None,
    progress: Callable[[str], None] | None = None,
    groups: Callable[[KeyMap], dict[str, list[str]]] | None = None,
) -> dict:
    """Check the source against the key map, then read each tensor once into a nested pure dict.

    Each tensor is finite-checked, transformed to our layout and cast to ``cfg.param_dtype``. By default this
    happens on the device, one parameter group at a time (everything outside the blocks, then each block): the
    group's tensors are copied over together and laid out by one program, which every block shares, so a
    32-layer checkpoint needs two layout programs and 33 dispatches, not one per tensor. ``to_array`` instead
    converts on the host and places each tensor itself. The next few tensors are read from the file while the
    current group is placed (:func:`~jax_vdit.io.tensors.read_ahead`); host memory holds one group and a few
    tensors beyond what ``to_array`` keeps. ``groups`` (key map -> name lists; default: main, then each block)
    sets how the tensors are grouped for the device (benchmarks compare other groupings).
    """
    key_map = release_key_map(cfg)
    check_keys(key_map, source.infos(), what="release checkpoint")
    dtype = np.dtype(cfg.param_jnp_dtype)
    return place_groups(source, key_map, (groups or _param_groups)(key_map), dtype,
                        host_convert=lambda name, rule, raw: _read_rule(source, name, rule, dtype, raw),
                        to_array=to_array, progress=progress)


def _param_groups(key_map: KeyMap) -> dict[str, list[str]]:
    """Release tensor names by parameter group: "main" (everything outside the blocks), then "blocks/<i>" in
    order. The blocks' groups have the same shapes and layouts, so they share one layout program."""
    groups: dict[str, list[str]] = {"main": []}
    for name, rule in key_map.rules.items():
        groups.setdefault(f"blocks/{rule.path[1]}" if rule.path[0] == "blocks" else "main", []).append(name)
    return {g: names for g, names in groups.items() if names}


def stream_release_groups(
    cfg: ModelConfig, source: TensorSource, *, progress: Callable[[str], None] | None = None
) -> Iterator[tuple[str, dict]]:
    """Like :func:`stream_release_params`, but yields NumPy parameter groups one at a time: ("main", ...) for
    everything outside the blocks, then ("blocks/<i>", block i). Only one group is held at a time."""
    key_map = release_key_map(cfg)
    check_keys(key_map, source.infos(), what="release checkpoint")
    dtype = np.dtype(cfg.param_jnp_dtype)
    for group, names in _param_groups(key_map).items():
        tree: dict = {}
        for name in names:
            rule = key_map.rules[name]
            path = rule.path[2:] if group != "main" else rule.path
            set_path(tree, path, _read_rule(source, name, rule, dtype))
            if progress is not None:
                progress(name)
        yield group, tree


def _flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def resolve_config(path: Path, config: ModelConfig | str | None, policy: dict[str, Any]) -> ModelConfig:
    """The model config for a checkpoint at ``path``: an explicit ModelConfig, a preset name, a release
    ``config.json`` path, or (default) the ``config.json`` next to the weights; ``policy`` sets dtype fields."""
    if isinstance(config, ModelConfig):
        return config.replace(**policy) if policy else config
    if isinstance(config, (str, Path)) and (str(config).endswith(".json") or Path(config).is_dir()):
        return load_release_config(config, **policy)
    if isinstance(config, str):
        return get_preset(config, **policy)
    folder = path if path.is_dir() else path.parent
    if (folder / "config.json").is_file():
        return load_release_config(folder / "config.json", **policy)
    raise ValueError(
        f"no config.json next to {path}: pass config= (a ModelConfig or a preset name such as 'osp-v1.2-29x720p')"
    )


def load_release(
    path: str | Path,
    *,
    config: ModelConfig | str | None = None,
    param_dtype: str | None = None,
    compute_dtype: str | None = None,
) -> OpenSoraT2V:
    """Load a release folder (``config.json`` + weights), a lone ``.safetensors`` or a PyTorch pickle."""
    path = Path(path)
    policy = dtype_policy(param_dtype, compute_dtype)
    cfg = resolve_config(path, config, policy)
    with timed("open"):
        source = open_tensors(path)
    try:
        params = stream_release_params(cfg, source)
    finally:
        source.close()
    with timed("build_model"):
        return model_from_pure_params(cfg, params)


def release_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    """A release-style ``config.json`` for ``cfg`` (used to write synthetic release folders in tests)."""
    return {
        "_class_name": "OpenSoraT2V", "_diffusers_version": "0.28.0", "activation_fn": "gelu-approximate",
        "attention_bias": True, "attention_head_dim": cfg.attention_head_dim, "attention_mode": "xformers",
        "attention_type": "default", "caption_channels": cfg.caption_channels, "cross_attention_dim": cfg.inner_dim,
        "double_self_attention": False, "downsampler": None, "dropout": 0.0, "in_channels": cfg.in_channels,
        "interpolation_scale_h": cfg.interpolation_scale_h, "interpolation_scale_t": cfg.interpolation_scale_t,
        "interpolation_scale_w": cfg.interpolation_scale_w, "norm_elementwise_affine": False,
        "norm_eps": cfg.norm_eps, "norm_num_groups": 32, "norm_type": "ada_norm_single",
        "num_attention_heads": cfg.num_attention_heads, "num_embeds_ada_norm": 1000, "num_layers": cfg.num_layers,
        "num_vector_embeds": None, "only_cross_attention": False, "out_channels": cfg.out_channels,
        "patch_size": cfg.patch_size, "patch_size_t": cfg.patch_size_t, "sample_size": list(cfg.sample_size),
        "sample_size_t": cfg.sample_size_t, "upcast_attention": False, "use_additional_conditions": None,
        "use_linear_projection": False, "use_rope": True, "use_stable_fp32": True,
    }


def write_release_config(cfg: ModelConfig, folder: str | Path) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / "config.json").write_text(json.dumps(release_config_dict(cfg), indent=2, sort_keys=True))


def params_to_release_tensors(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    """Inverse of the key map: our parameters -> release-named fp32 NumPy tensors (for tests and export)."""
    flat = _flatten(params)
    d, p, c = cfg.inner_dim, cfg.patch_size, cfg.in_channels
    out: dict[str, np.ndarray] = {}
    for name, rule in release_key_map(cfg).rules.items():
        value = np.asarray(jax.device_get(flat[rule.path]), dtype=np.float32)
        if name == "pos_embed.proj.weight":
            value = value.T.reshape(d, c, p, p)
        elif value.ndim == 2 and name.endswith(".weight"):
            value = value.T
        out[name] = np.ascontiguousarray(value)
    return out


def write_release_folder(model: OpenSoraT2V, folder: str | Path, *, dtype: str = "bfloat16") -> Path:
    """Write ``model`` as a release-format folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` with
    every tensor in ``dtype`` ("bfloat16", "float32" or "float16")."""
    import ml_dtypes
    from safetensors.numpy import save_file

    from jax_vdit.io.params import pure_params

    np_dtype = {"bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float16": np.float16}[dtype]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = params_to_release_tensors(model.cfg, pure_params(model))
    save_file({k: v.astype(np_dtype) for k, v in tensors.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    write_release_config(model.cfg, folder)
    return folder
