"""Flax NNX modules of the Open-Sora-Plan v1.2 CausalVAE (channels-last inside).

Internal layout is ``(N, T, H, W, C)``; :class:`CausalVAE` exposes ``encode_moments`` / ``decode_latent`` on that
layout, and :mod:`jax_vdit.vae.runtime` adds the public (B, C, T, H, W) API with jit caching and tiling.

Numerics: parameters are stored in ``param_dtype`` (float32 or bfloat16); convolutions and matmuls take
operands in the compute ``dtype``. GroupNorm statistics (mean and variance), the normalisation, SiLU, the
interpolation weights, biases, residual adds and the attention softmax are always float32, and results are
rounded once to ``dtype`` -- also when ``dtype`` is bfloat16.
"""

from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from jax_vdit.abstract_init import abstract, abstract_cached
from jax_vdit.vae import ops
from jax_vdit.vae.config import ComputeConfig, VAEConfig

F32 = jnp.float32


class VAEEncoderMissingError(ValueError):
    """Encoding asked of a VAE loaded without its encoder (``parts="decoder"``)."""


class Conv(nnx.Module):
    """Causal 3-D (or per-frame 2-D when kt = 1) convolution with bias.

    kernel (kt, kh, kw, Cin, Cout), bias (Cout,). ``padding`` is the spatial zero padding ((top, bottom),
    (left, right)); time is padded causally with kt-1 copies of frame 0. 1x1x1 kernels run as a matmul.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: tuple[int, int, int],
        *,
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[tuple[int, int], tuple[int, int]] | None = None,
        dtype=F32,
        param_dtype=F32,
        compute: ComputeConfig = ComputeConfig(),
        rngs: nnx.Rngs,
    ):
        kt, kh, kw = kernel_size
        if padding is None:
            padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))
        fan_in = cin * kt * kh * kw
        shape = (kt, kh, kw, cin, cout)
        self.kernel = nnx.Param(ops.torch_default_conv_init(rngs.params(), shape, fan_in, param_dtype))
        self.bias = nnx.Param(ops.torch_default_conv_init(rngs.params(), (cout,), fan_in, param_dtype))
        self.stride = tuple(stride)
        self.padding = tuple(tuple(p) for p in padding)
        self.dtype = dtype
        self.compute = compute

    @property
    def is_pointwise(self) -> bool:
        return self.kernel.shape[:3] == (1, 1, 1) and self.stride == (1, 1, 1)

    def __call__(
        self,
        x: jax.Array,
        *,
        pre: ops.PreFn | None = None,
        residual: ops.Residual | None = None,
        pre_hwc: tuple[int, int, int] | None = None,
        in_place: bool = False,
    ) -> jax.Array:
        """``in_place``: may write the output over ``x`` (see :func:`ops.causal_conv`); the caller must not use
        ``x`` afterwards."""
        if self.is_pointwise and pre is None and residual is None:
            return ops.pointwise(x, self.kernel[...], self.bias[...], self.dtype)
        return ops.causal_conv(
            x,
            self.kernel[...],
            self.bias[...],
            stride=self.stride,
            padding=self.padding,
            pre=pre,
            residual=residual,
            dtype=self.dtype,
            impl=self.compute.conv_impl,
            chunk_bytes=self.compute.chunk_bytes,
            pre_hwc=pre_hwc,
            in_place=in_place,
        )


class GroupNorm(nnx.Module):
    """GroupNorm(32 groups, eps 1e-6, affine) with float32 statistics whatever the compute dtype."""

    def __init__(self, channels: int, *, param_dtype=F32, num_groups: int = 32, eps: float = 1e-6):
        self.scale = nnx.Param(jnp.ones((channels,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype))
        self.num_groups = num_groups
        self.eps = eps

    def affine(self, x: jax.Array, *, per_frame: bool = False) -> tuple[jax.Array, jax.Array]:
        """float32 per-channel (a, b) with GroupNorm(x) = x * a + b; shapes (N, 1 or T, 1, 1, C)."""
        mean, rstd = ops.group_norm_stats(x, self.num_groups, per_frame=per_frame, eps=self.eps)
        return ops.group_norm_affine(mean, rstd, self.scale[...], self.bias[...])


def _conv(cin, cout, k, ctx, **kw) -> Conv:
    return Conv(
        cin, cout, k, dtype=ctx["dtype"], param_dtype=ctx["param_dtype"], compute=ctx["compute"], rngs=ctx["rngs"], **kw
    )


class ResnetBlock(nnx.Module):
    """ResnetBlock3D (``three_d``: 3x3x3 causal convs, GroupNorm over all frames) or ResnetBlock2D (per-frame
    3x3 convs and per-frame GroupNorm). out = shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x))))))."""

    def __init__(self, cin: int, cout: int, *, three_d: bool, ctx: dict):
        k = (3, 3, 3) if three_d else (1, 3, 3)
        self.three_d = three_d
        self.norm1 = GroupNorm(cin, param_dtype=ctx["param_dtype"])
        self.conv1 = _conv(cin, cout, k, ctx)
        self.norm2 = GroupNorm(cout, param_dtype=ctx["param_dtype"])
        self.conv2 = _conv(cout, cout, k, ctx)
        self.nin_shortcut = _conv(cin, cout, (1, 1, 1), ctx) if cin != cout else None

    def __call__(self, x: jax.Array) -> jax.Array:
        per_frame = not self.three_d
        a1, b1 = self.norm1.affine(x, per_frame=per_frame)
        h = self.conv1(x, pre=ops.norm_silu_fn(a1, b1))
        a2, b2 = self.norm2.affine(h, per_frame=per_frame)
        shortcut = None if self.nin_shortcut is None else self.nin_shortcut
        return self.conv2(h, pre=ops.norm_silu_fn(a2, b2), residual=(x, shortcut),
                          in_place=self.conv2.compute.in_place_conv2)

    def after_nearest_upsample(self, x_low: jax.Array, upsample: "Upsample") -> jax.Array:
        """``self(upsample(x_low))`` for a ``SpatialUpsample2x`` ``upsample`` and a block with a shortcut conv,
        without materialising the upsampled input (the largest tensor of the decoder): a first pass over frame
        chunks computes its GroupNorm statistics and the shortcut, and conv1 recomputes upsampled windows.
        Costs ~1.4 extra sub-pixel upsample convs; saves one full-resolution tensor of the wider width.
        """
        if self.nin_shortcut is None or upsample.kind != "SpatialUpsample2x" or not self.three_d:
            return self(upsample(x_low))
        n, t, h, w, c = x_low.shape
        conv = upsample.conv
        up_fn = ops.nearest_upsample_conv_fn(conv.kernel[...], conv.bias[...], conv.dtype)
        cu = conv.kernel.shape[-1]
        cout = self.conv1.kernel.shape[-1]
        itemsize = jnp.dtype(conv.dtype).itemsize
        chunk_bytes = self.conv1.compute.chunk_bytes
        chunk = ops.frames_per_chunk(t, 4 * h * w * max(cu, 2 * cout) * itemsize * 2, chunk_bytes)
        on_the_fly = self.conv1.compute.shortcut_on_the_fly
        mean, rstd, shortcut = ops.group_stats_and_map(
            x_low,
            up_fn,
            None if on_the_fly else self.nin_shortcut,
            num_groups=self.norm1.num_groups,
            eps=self.norm1.eps,
            chunk=chunk,
            up_hwc=(2 * h, 2 * w, cu),
            map_c=cout,
            out_dtype=self.conv1.dtype,
        )
        a1, b1 = ops.group_norm_affine(mean, rstd, self.norm1.scale[...], self.norm1.bias[...])
        act = ops.norm_silu_fn(a1, b1)
        # conv1's frame chunks also hold the recomputed upsampled window: half the usual chunk budget
        hid = ops.causal_conv(
            x_low,
            self.conv1.kernel[...],
            self.conv1.bias[...],
            padding=self.conv1.padding,
            pre=lambda window, s0: act(up_fn(window), s0),
            pre_hwc=(2 * h, 2 * w, cu),
            dtype=self.conv1.dtype,
            impl=self.conv1.compute.conv_impl,
            chunk_bytes=max(1, chunk_bytes // 2),
        )
        a2, b2 = self.norm2.affine(hid)
        if on_the_fly:
            nin = self.nin_shortcut
            residual = (x_low, lambda frames: nin(up_fn(frames)))  # conv2's chunks recompute the shortcut
        else:
            residual = (shortcut, None)
        return self.conv2(hid, pre=ops.norm_silu_fn(a2, b2), residual=residual,
                          in_place=self.conv2.compute.in_place_conv2)


class AttnBlock3DFix(nnx.Module):
    """GroupNorm (over all frames), q/k/v 1x1x1 convs, single-head attention inside each frame, proj_out,
    residual add."""

    def __init__(self, channels: int, *, ctx: dict):
        self.norm = GroupNorm(channels, param_dtype=ctx["param_dtype"])
        self.q = _conv(channels, channels, (1, 1, 1), ctx)
        self.k = _conv(channels, channels, (1, 1, 1), ctx)
        self.v = _conv(channels, channels, (1, 1, 1), ctx)
        self.proj_out = _conv(channels, channels, (1, 1, 1), ctx)
        self.dtype = ctx["dtype"]
        self.compute = ctx["compute"]

    def __call__(self, x: jax.Array) -> jax.Array:
        a, b = self.norm.affine(x)
        h = ops.norm_silu_fn(a, b, silu_after=False)(x, 0).astype(self.dtype)
        o = ops.frame_attention(
            self.q(h), self.k(h), self.v(h), dtype=self.dtype, chunk_bytes=self.compute.attn_chunk_bytes
        )
        return (x.astype(F32) + self.proj_out(o).astype(F32)).astype(self.dtype)


class Downsample(nnx.Module):
    """``Downsample`` (per-frame 3x3 conv, stride 2) or ``Spatial2xTime2x3DDownsample`` (causal 3x3x3 conv,
    stride 2 in t, h, w); both pad one zero row/column at the bottom/right only."""

    def __init__(self, channels: int, *, kind: str, ctx: dict):
        if kind == "Downsample":
            self.conv = _conv(channels, channels, (1, 3, 3), ctx, stride=(1, 2, 2), padding=((0, 1), (0, 1)))
        elif kind == "Spatial2xTime2x3DDownsample":
            self.conv = _conv(channels, channels, (3, 3, 3), ctx, stride=(2, 2, 2), padding=((0, 1), (0, 1)))
        else:  # pragma: no cover - the config rejects it
            raise ValueError(kind)
        self.kind = kind

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample(nnx.Module):
    """``SpatialUpsample2x`` (nearest x2 in space, then a (1,3,3) conv; run as sub-pixel convs) or
    ``Spatial2xTime2x3DUpsample`` (frame 0 bilinear x2 in space, frames 1.. trilinear x2, then 3x3x3 causal conv)."""

    def __init__(self, channels: int, *, kind: str, ctx: dict):
        k = (1, 3, 3) if kind == "SpatialUpsample2x" else (3, 3, 3)
        self.conv = _conv(channels, channels, k, ctx)
        self.kind = kind
        self.dtype = ctx["dtype"]
        self.compute = ctx["compute"]

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kind == "SpatialUpsample2x":
            return ops.upsample_nearest_conv(
                x, self.conv.kernel[...], self.conv.bias[...], dtype=self.dtype, chunk_bytes=self.compute.chunk_bytes
            )
        return self.conv(ops.upsample_first_frame_apart(x, self.dtype, chunk_bytes=self.compute.chunk_bytes))


class Level(nnx.Module):
    """One resolution level: ``block`` (res blocks) and an optional ``downsample`` / ``upsample``."""

    def __init__(self, blocks: list[ResnetBlock], *, downsample=None, upsample=None):
        self.block = nnx.List(blocks)
        self.downsample = downsample
        self.upsample = upsample


class Mid(nnx.Module):
    def __init__(self, channels: int, *, attention: str, ctx: dict):
        del attention  # only AttnBlock3DFix is accepted by the config
        self.block_1 = ResnetBlock(channels, channels, three_d=True, ctx=ctx)
        self.attn_1 = AttnBlock3DFix(channels, ctx=ctx)
        self.block_2 = ResnetBlock(channels, channels, three_d=True, ctx=ctx)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nnx.Module):
    """Video (N, T, H, W, 3) in [-1, 1] -> (N, ceil(T/4), H/8, W/8, 2*z_channels) (v1.2 layout)."""

    def __init__(self, cfg: VAEConfig, ctx: dict):
        widths = cfg.widths
        in_widths = (cfg.hidden_size,) + widths
        self.conv_in = _conv(3, cfg.hidden_size, (1, 3, 3) if cfg.encoder_conv_in == "Conv2d" else (3, 3, 3), ctx)
        levels = []
        for i in range(cfg.num_levels):
            three_d = cfg.encoder_resnet_blocks[i] == "ResnetBlock3D"
            blocks, cin = [], in_widths[i]
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(cin, widths[i], three_d=three_d, ctx=ctx))
                cin = widths[i]
            kind = cfg.encoder_spatial_downsample[i]
            levels.append(Level(blocks, downsample=Downsample(cin, kind=kind, ctx=ctx) if kind else None))
        self.down = nnx.List(levels)
        self.mid = Mid(widths[-1], attention=cfg.encoder_attention, ctx=ctx)
        self.norm_out = GroupNorm(widths[-1], param_dtype=ctx["param_dtype"])
        self.conv_out = _conv(widths[-1], 2 * cfg.z_channels, (3, 3, 3), ctx)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x)
        last_block = h
        for level in self.down:
            for block in level.block:
                h = block(h)
                last_block = h
            if level.downsample is not None:
                h = level.downsample(h)
        # v1.2.0 quirk: the mid block reads the last res block's output of the last level (same as h when the
        # last level has no downsample, as in every released config)
        h = self.mid(last_block)
        a, b = self.norm_out.affine(h)
        return self.conv_out(h, pre=ops.norm_silu_fn(a, b))


class Decoder(nnx.Module):
    """Latent (N, t, h, w, z_channels) -> video (N, 4t-3, 8h, 8w, 3) (v1.2 layout; no clamp)."""

    def __init__(self, cfg: VAEConfig, ctx: dict):
        widths = cfg.widths
        block_in = widths[-1]
        self.conv_in = _conv(cfg.z_channels, block_in, (3, 3, 3), ctx)
        self.mid = Mid(block_in, attention=cfg.decoder_attention, ctx=ctx)
        levels: list[Level | None] = [None] * cfg.num_levels
        for i in reversed(range(cfg.num_levels)):
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, widths[i], three_d=True, ctx=ctx))
                block_in = widths[i]
            kind = cfg.decoder_spatial_upsample[i]
            levels[i] = Level(blocks, upsample=Upsample(block_in, kind=kind, ctx=ctx) if kind else None)
        self.up = nnx.List(levels)
        self.norm_out = GroupNorm(block_in, param_dtype=ctx["param_dtype"])
        self.conv_out = _conv(block_in, 3, (3, 3, 3), ctx)

    def __call__(self, z: jax.Array, *, taps: dict | None = None) -> jax.Array:
        h = self.conv_in(z)
        if taps is not None:
            taps["dec_conv_in_out"] = h
        h = self.mid(h)
        if taps is not None:
            taps["dec_mid_out"] = h
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for block in level.block:
                h = block(h)
            if level.upsample is not None:
                h = level.upsample(h)
        a, b = self.norm_out.affine(h)
        return self.conv_out(h, pre=ops.norm_silu_fn(a, b))


class CausalVAE(nnx.Module):
    """The v1.2 ``CausalVAEModel`` (encoder, decoder, quant_conv, post_quant_conv), channels-last.

    Args:
      config: architecture (:class:`VAEConfig`).
      dtype: compute dtype of convolutions/matmuls (float32 or bfloat16). GroupNorm statistics and the other
        elementwise math stay float32 (see the module docstring).
      param_dtype: storage dtype of the parameters.
      compute: conv implementation and chunking (:class:`ComputeConfig`).
      rngs: initialiser keys (weights are random until loaded; see :func:`jax_vdit.vae.load_vae`).
    """

    def __init__(
        self,
        config: VAEConfig,
        *,
        dtype=F32,
        param_dtype=F32,
        compute: ComputeConfig = ComputeConfig(),
        rngs: nnx.Rngs,
    ):
        ctx = {"dtype": dtype, "param_dtype": param_dtype, "compute": compute, "rngs": rngs}
        self.config = config
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.compute = compute
        self.encoder = Encoder(config, ctx)
        self.decoder = Decoder(config, ctx)
        if config.use_quant_layer:
            self.quant_conv = _conv(2 * config.z_channels, 2 * config.embed_dim, (1, 1, 1), ctx)
            self.post_quant_conv = _conv(config.embed_dim, config.z_channels, (1, 1, 1), ctx)
        else:
            self.quant_conv = None
            self.post_quant_conv = None

    @property
    def has_encoder(self) -> bool:
        """False for a decoder-only VAE (:func:`without_encoder`, ``load_vae(..., parts="decoder")``)."""
        return self.encoder is not None

    def require_encoder(self) -> None:
        """Raise :class:`VAEEncoderMissingError` if this VAE was loaded without its encoder."""
        if self.encoder is None:
            raise VAEEncoderMissingError(
                "this VAE was loaded without its encoder (parts='decoder': text-to-video only decodes); load it "
                "with load_vae(path) (parts='all') to encode videos")

    def encode_moments(self, x: jax.Array, *, taps: dict | None = None) -> jax.Array:
        """Video (N, T, H, W, 3) in [-1, 1] -> float32 moments (N, t, h, w, 2*embed_dim): mean | raw logvar."""
        self.require_encoder()
        h = self.encoder(x.astype(self.dtype))
        if taps is not None:
            taps["enc_out_pre_quant"] = h
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        return h.astype(F32)

    def decode_latent(self, z: jax.Array, *, taps: dict | None = None) -> jax.Array:
        """Raw latent (N, t, h, w, embed_dim) (already divided by the scaling factor) -> (N, 4t-3, 8h, 8w, 3)
        in the compute dtype (no clamp)."""
        z = z.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z, taps=taps)


def without_encoder(vae: CausalVAE) -> CausalVAE:
    """``vae`` with its encoder and ``quant_conv`` removed (set to None, in place; returned): 94.4M of the release
    VAE's 239.2M parameters that decoding never uses. Encoding it then raises :class:`VAEEncoderMissingError`.
    The decoder's modules, and so the decode's compiled programs, are unchanged."""
    vae.encoder = None
    vae.quant_conv = None
    return vae


def abstract_vae(
    config: VAEConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, compute: ComputeConfig = ComputeConfig()
) -> CausalVAE:
    """A :class:`CausalVAE` whose parameters are shape/dtype placeholders (nothing allocated); built once per
    arguments and then unpickled (:func:`jax_vdit.abstract_init.abstract_cached`)."""
    description = ("CausalVAE", repr(config), jnp.dtype(dtype).name, jnp.dtype(param_dtype).name, repr(compute))
    return abstract_cached(description, lambda rngs: CausalVAE(config, dtype=dtype, param_dtype=param_dtype,
                                                                  compute=compute, rngs=rngs))


def random_vae(
    config: VAEConfig,
    *,
    seed: int = 0,
    dtype=jnp.float32,
    param_dtype=None,
    compute: ComputeConfig = ComputeConfig(),
) -> CausalVAE:
    """A VAE with PyTorch-default random weights (for tests and full-size benchmarks)."""
    param_dtype = dtype if param_dtype is None else param_dtype
    return CausalVAE(config, dtype=dtype, param_dtype=param_dtype, compute=compute, rngs=nnx.Rngs(seed))


def param_count(vae: CausalVAE) -> int:
    """Number of parameters of ``vae``."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(vae, nnx.Param))))
