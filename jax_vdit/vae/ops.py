"""Pure JAX building blocks of the CausalVAE, channels-last.

Every activation is ``(N, T, H, W, C)``. Kernels are ``(kt, kh, kw, Cin, Cout)``. Functions take a compute
``dtype`` (the conv/matmul operand dtype); GroupNorm statistics, the normalisation itself, SiLU, interpolation,
bias and residual adds are computed in float32 and rounded once to ``dtype``.

Causal convolution: frame 0 is replicated ``kt - 1`` times in front (no padding at the end), so output frame
``i`` of a stride-1, kt=3 conv sees input frames ``(i-2, i-1, i)`` with negative indices replaced by 0. Spatial
padding is zero padding of the conv input. See :func:`causal_conv`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

F32 = jnp.float32
Pad2 = tuple[tuple[int, int], tuple[int, int]]
# pre(window, first_frame_index) -> activated window (elementwise; first_frame_index may be traced)
PreFn = Callable[[jax.Array, Any], jax.Array]
# (source, fn): residual chunk = fn(source[:, a:a+F]) (fn None -> identity); source is aligned with the output
Residual = tuple[jax.Array, Callable[[jax.Array], jax.Array] | None]


# ----------------------------------------------------------------------------------------------- valid region
class _ValidRegion:
    """Frames/rows/columns of a zero-padded tile that hold the real tile (see :func:`valid_region`)."""

    def __init__(self, rows, cols, base_rows: int, base_cols: int, frames=None, base_frames: int | None = None):
        self.rows, self.cols = rows, cols
        self.base_rows, self.base_cols = base_rows, base_cols
        self.frames, self.base_frames = frames, base_frames

    def extent(self, size: int, axis: int):
        """Valid length along spatial ``axis`` (2: rows, 3: columns) of an activation ``size`` long there."""
        base, valid = (self.base_rows, self.rows) if axis == 2 else (self.base_cols, self.cols)
        if size % base:
            raise ValueError(f"valid region: an activation of {size} along axis {axis} is not a multiple of the "
                             f"tile's {base} (only upsampling stages are supported)")
        return valid * (size // base)

    def frame_extent(self, t: int):
        """Valid frames of an activation of ``t`` frames (None: every frame is real). The decoder's time
        upsampling keeps frame 0 apart (T -> 2T - 1), so ``t - 1`` is a multiple of the tile's ``base - 1``."""
        if self.frames is None:
            return None
        base = self.base_frames
        if base == 1:
            return self.frames
        if (t - 1) % (base - 1):
            raise ValueError(f"valid region: an activation of {t} frames does not follow a tile of {base} frames "
                             "(only upsampling stages are supported)")
        return (self.frames - 1) * ((t - 1) // (base - 1)) + 1


_REGION = threading.local()


@contextmanager
def valid_region(rows, cols, base_rows: int, base_cols: int, frames=None, base_frames: int | None = None):
    """Trace the ops inside as applied to the top-left ``rows x cols`` part of a zero-padded
    ``base_rows x base_cols`` tile and, if ``frames`` is given, its first ``frames`` of ``base_frames`` frames
    (``rows``/``cols``/``frames`` may be traced int32 scalars; at an activation k times the tile's size the part
    is k times larger). Convolutions read zeros outside it (their zero padding; causal convolutions never read
    later frames), GroupNorm statistics, attention keys and the edge clamps of the linear interpolations use only
    the part: the values inside it equal those of the unpadded tile up to float rounding, whatever lies outside.
    Tiles of several shapes then share one compiled program (``TilingConfig(uniform_tiles=True)``). This thread
    only (tracing)."""
    previous = getattr(_REGION, "value", None)
    _REGION.value = _ValidRegion(jnp.asarray(rows, jnp.int32), jnp.asarray(cols, jnp.int32), base_rows, base_cols,
                                 None if frames is None else jnp.asarray(frames, jnp.int32), base_frames)
    try:
        yield
    finally:
        _REGION.value = previous


def _region() -> _ValidRegion | None:
    return getattr(_REGION, "value", None)


def _spatial_mask(h: int, w: int) -> jax.Array | None:
    """(1, 1, h, w, 1) boolean: inside the current valid region (None when there is none)."""
    region = _region()
    if region is None:
        return None
    rows = jnp.arange(h) < region.extent(h, 2)
    cols = jnp.arange(w) < region.extent(w, 3)
    return (rows[:, None] & cols[None, :]).reshape(1, 1, h, w, 1)


def _frame_mask(t: int, start=0, length: int | None = None) -> jax.Array | None:
    """(1, length, 1, 1, 1) boolean: frames ``start .. start+length-1`` of a ``t``-frame activation that are
    real (None when every frame is)."""
    region = _region()
    valid = None if region is None else region.frame_extent(t)
    if valid is None:
        return None
    length = t if length is None else length
    return ((start + jnp.arange(length)) < valid).reshape(1, length, 1, 1, 1)


def zero_outside_region(x: jax.Array) -> jax.Array:
    """``x`` (N, T, H, W, C) with zeros outside the current valid region (``x`` itself when there is none)."""
    mask = _spatial_mask(x.shape[2], x.shape[3])
    return x if mask is None else jnp.where(mask, x, jnp.zeros((), x.dtype))


def _precision(dtype) -> lax.Precision:
    """float32 convs/matmuls run in true float32 (no TF32) so fp32 results can be trusted as references."""
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def silu(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(x)


# ----------------------------------------------------------------------------------------------- GroupNorm
def _masked_group_moments(
    x: jax.Array, mask: jax.Array | None, count, num_groups: int, *, per_frame: bool
) -> tuple[jax.Array, jax.Array]:
    """float32 per-group mean and sum of squared deviations (M2) of ``x`` (N, T, H, W, C) where ``mask`` is true.

    ``mask`` broadcasts against ``x`` (None: every element counts); ``count`` is the number of counted elements per
    (sample, group[, frame]) (a Python float or a traced scalar). ``per_frame`` reduces over (H, W, C/G) of each frame,
    else over (T, H, W, C/G). Two passes: the mean, then the squared deviations from it; each reduces to per-channel
    sums first (keeping the contiguous channel axis), then sums the channels of a group. Returns (N, T', G) arrays,
    T' = T or 1.
    """
    n, t, _, _, c = x.shape
    g, cg = num_groups, c // num_groups
    axes = (2, 3) if per_frame else (1, 2, 3)
    tp = t if per_frame else 1
    xf = x.astype(F32) if mask is None else jnp.where(mask, x.astype(F32), 0.0)
    mean = jnp.sum(xf, axis=axes).reshape(n, tp, g, cg).sum(-1) / count
    dev = jnp.square(xf - jnp.repeat(mean, cg, axis=-1).reshape(n, tp, 1, 1, c))
    if mask is not None:
        dev = jnp.where(mask, dev, 0.0)
    return mean, jnp.sum(dev, axis=axes).reshape(n, tp, g, cg).sum(-1)


def group_norm_stats(
    x: jax.Array, num_groups: int = 32, *, per_frame: bool = False, eps: float = 1e-6
) -> tuple[jax.Array, jax.Array]:
    """float32 (mean, 1/std) of GroupNorm over ``x`` (N, T, H, W, C).

    ``per_frame=False`` (3-D blocks): statistics of each (sample, group) over (T, H, W, C/G) -- all frames at
    once. ``per_frame=True`` (2-D blocks): over (H, W, C/G) of each frame. Two passes in float32 whatever the
    dtype of ``x`` (the mean, then the mean squared deviation from it); each pass reduces to per-channel sums
    first (a reduction that keeps the contiguous channel axis), then sums the channels of each group.
    Returns arrays of shape (N, 1 or T, 1, G, 1).
    """
    n, t, h, w, c = x.shape
    if c % num_groups:
        raise ValueError(f"GroupNorm: {c} channels is not a multiple of {num_groups} groups")
    g, cg = num_groups, c // num_groups
    mask = _spatial_mask(h, w)
    if mask is None:
        count = float((h * w if per_frame else t * h * w) * cg)
    else:  # statistics of the valid region only (per-frame statistics of padded frames are never used)
        region = _region()
        area = (region.extent(h, 2) * region.extent(w, 3)).astype(F32)
        frames = None if per_frame else region.frame_extent(t)
        count = area * (1 if per_frame else (t if frames is None else frames.astype(F32))) * cg
        frame_mask = None if per_frame else _frame_mask(t)
        if frame_mask is not None:
            mask = mask & frame_mask
    mean, m2 = _masked_group_moments(x, mask, count, num_groups, per_frame=per_frame)
    var = m2 / count
    tp = t if per_frame else 1
    shape = (n, tp, 1, g, 1)
    return mean.reshape(shape), lax.rsqrt(var + eps).reshape(shape)


def group_norm_affine(
    mean: jax.Array, rstd: jax.Array, scale: jax.Array, bias: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Fold GroupNorm statistics and the affine parameters into a per-channel ``x * a + b`` (float32).

    ``mean``/``rstd`` from :func:`group_norm_stats` (N, T', 1, G, 1); returns ``a``, ``b`` of shape (N, T', 1, 1, C).
    """
    n, tp, _, g, _ = mean.shape
    c = scale.shape[0]
    a = rstd * scale.astype(F32).reshape(1, 1, 1, g, c // g)
    b = bias.astype(F32).reshape(1, 1, 1, g, c // g) - mean * a
    return a.reshape(n, tp, 1, 1, c), b.reshape(n, tp, 1, 1, c)


def norm_silu_fn(a: jax.Array, b: jax.Array, *, silu_after: bool = True) -> PreFn:
    """Elementwise ``silu(x * a + b)`` for windows of frames (per-frame ``a``/``b`` are sliced to the window)."""

    def pre(window: jax.Array, start) -> jax.Array:
        aa, bb = a, b
        if a.shape[1] > 1:  # per-frame statistics: slice to the window's frames
            length = window.shape[1]
            if isinstance(start, int):
                if start < 0:
                    raise ValueError("per-frame GroupNorm with causal time padding is not supported")
                aa, bb = a[:, start : start + length], b[:, start : start + length]
            else:
                aa = lax.dynamic_slice_in_dim(a, start, length, axis=1)
                bb = lax.dynamic_slice_in_dim(b, start, length, axis=1)
        y = window.astype(F32) * aa + bb
        return silu(y) if silu_after else y

    return pre


# ----------------------------------------------------------------------------------------------- time chunks
def _time_window(x: jax.Array, start, length: int) -> jax.Array:
    """Frames ``start .. start+length-1`` of ``x`` along axis 1, indices below 0 replaced by 0 (causal padding).

    ``start`` is a Python int (may be negative) or a traced non-negative scalar.
    """
    if not isinstance(start, int):
        return lax.dynamic_slice_in_dim(x, start, length, axis=1)
    if start >= 0:
        return x[:, start : start + length]
    first = jnp.repeat(x[:, :1], -start, axis=1) if -start > 1 else x[:, :1]
    rest = x[:, : start + length]
    return jnp.concatenate([first, rest], axis=1) if rest.shape[1] else first[:, :length]


def frames_per_chunk(t_out: int, bytes_per_frame: int, chunk_bytes: int) -> int:
    """How many output frames one chunk computes so that its temporary stays under ``chunk_bytes``."""
    return int(max(1, min(t_out, chunk_bytes // max(1, bytes_per_frame))))


def map_time_chunks(
    x: jax.Array,
    *,
    kt: int,
    st: int,
    t_out: int,
    chunk: int,
    out_tail: tuple[int, ...],
    out_dtype,
    chunk_fn: Callable[..., jax.Array],
    init: jax.Array | None = None,
    in_place: bool = False,
) -> jax.Array:
    """Compute a causal-in-time op frame chunk by frame chunk.

    Output frame ``i`` depends on input frames ``st*i - (kt-1) .. st*i`` (clamped at 0). For output frames
    ``a .. a+F-1`` the op gets the window of input frames starting at ``s0 = st*a - (kt-1)`` of length
    ``st*(F-1) + kt``: ``chunk_fn(window, s0, a, F, acc) -> (N, F, *out_tail)``, where ``acc`` is the output
    buffer before this chunk is written (``init``, or zeros), so an op may read its own output frames
    ``a .. a+F-1`` from it (an in-place residual add). With ``chunk >= t_out`` this is a single call;
    otherwise chunks run in a ``fori_loop`` (sequentially: temporaries bounded by one chunk) writing in place
    into the output; chunks touching the causal padding and a shorter last chunk are peeled off (static shapes).

    ``in_place``: the output overwrites ``x`` itself (stride 1, output shape and dtype equal to ``x``'s, no
    ``init``; ``acc`` is then the partly overwritten ``x``, which ``chunk_fn`` must not read). Chunks run in
    order; the ``kt - 1`` input frames before each chunk, already overwritten, come from a carried copy of the
    previous window's last frames, so the op needs one buffer of ``x``'s size instead of two.
    """
    n = x.shape[0]
    if init is not None and (tuple(init.shape) != (n, t_out, *out_tail) or init.dtype != jnp.dtype(out_dtype)):
        raise ValueError(f"map_time_chunks: init {init.shape} {init.dtype} does not match the output")
    if in_place:
        if st != 1 or init is not None or tuple(x.shape) != (n, t_out, *out_tail) or x.dtype != jnp.dtype(out_dtype):
            raise ValueError(
                f"map_time_chunks(in_place=True) needs stride 1, no init and an output of the input's shape and "
                f"dtype; got stride {st}, init {init is not None}, input {x.shape} {x.dtype}, output "
                f"{(n, t_out, *out_tail)} {jnp.dtype(out_dtype)}"
            )
        return _map_time_chunks_in_place(x, kt=kt, chunk=min(chunk, t_out), chunk_fn=chunk_fn)

    def run(a, f: int, acc) -> jax.Array:
        s0 = st * a - (kt - 1)
        window = _time_window(x, s0, st * (f - 1) + kt)
        return chunk_fn(window, s0, a, f, acc).astype(out_dtype)

    if chunk >= t_out:
        return run(0, t_out, init)
    n_full, rem = divmod(t_out, chunk)
    out = jnp.zeros((n, t_out, *out_tail), out_dtype) if init is None else init

    def step(acc, a):
        return lax.dynamic_update_slice_in_dim(acc, run(a, chunk, acc), a, axis=1)

    c = 0
    while c < n_full and st * c * chunk - (kt - 1) < 0:  # head chunks need replicated frame 0
        out = step(out, c * chunk)
        c += 1
    if n_full - c == 1:
        out = step(out, c * chunk)
    elif n_full - c > 1:
        out = lax.fori_loop(c, n_full, lambda i, acc: step(acc, i * chunk), out)
    if rem:
        a = n_full * chunk
        out = lax.dynamic_update_slice_in_dim(out, run(a, rem, out), a, axis=1)
    return out


def _map_time_chunks_in_place(x: jax.Array, *, kt: int, chunk: int, chunk_fn: Callable[..., jax.Array]) -> jax.Array:
    """:func:`map_time_chunks` with ``in_place=True`` (stride 1): the output is written over ``x``."""
    t = x.shape[1]
    halo = kt - 1

    def step(carry, a, f: int):
        buf, prev = carry  # prev: the original input frames a-halo .. a-1 (frame 0 replicated below 0)
        cur = _frames(buf, a, f)
        window = jnp.concatenate([prev, cur], axis=1) if halo else cur
        y = chunk_fn(window, a - halo, a, f, buf).astype(x.dtype)
        nxt = window[:, window.shape[1] - halo :]
        return lax.dynamic_update_slice_in_dim(buf, y, a, axis=1), nxt

    carry = (x, jnp.repeat(x[:, :1], halo, axis=1))
    n_full, rem = divmod(t, chunk)
    if n_full == 1:
        carry = step(carry, 0, chunk)
    elif n_full > 1:
        carry = lax.fori_loop(0, n_full, lambda i, c: step(c, i * chunk, chunk), carry)
    if rem:
        carry = step(carry, n_full * chunk, rem)
    return carry[0]


def _frames(src: jax.Array | None, a, f: int) -> jax.Array:
    """Frames a .. a+f-1 of ``src`` (static or traced ``a``)."""
    return src[:, a : a + f] if isinstance(a, int) else lax.dynamic_slice_in_dim(src, a, f, axis=1)


# ----------------------------------------------------------------------------------------------- convolution
def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def conv2d(x: jax.Array, kernel: jax.Array, stride: tuple[int, int], padding: Pad2, dtype) -> jax.Array:
    """NHWC x HWIO 2-D convolution; channel counts are zero-padded to multiples of 8 (tensor-core friendly)."""
    cin, cout = kernel.shape[2], kernel.shape[3]
    cin_p, cout_p = (_round_up(cin, 8), _round_up(cout, 8)) if (cin % 8 or cout % 8) else (cin, cout)
    x = x.astype(dtype)
    kernel = kernel.astype(dtype)
    if cin_p != cin:
        x = jnp.concatenate([x, jnp.zeros((*x.shape[:-1], cin_p - cin), dtype)], axis=-1)
    if cin_p != cin or cout_p != cout:
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, cin_p - cin), (0, cout_p - cout)))
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=stride,
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=_precision(dtype),
    )
    return y[..., :cout] if cout_p != cout else y


def resolve_conv_impl(impl: str) -> str:
    """``"auto"`` -> ``"stack"`` on GPU (2-D NHWC cuDNN convs), ``"conv3d"`` on other backends."""
    if impl != "auto":
        return impl
    return "stack" if jax.default_backend() in ("gpu", "cuda", "rocm") else "conv3d"


def _conv_window(
    w: jax.Array, kernel: jax.Array, stride: tuple[int, int, int], padding: Pad2, f: int, impl: str, dtype
) -> jax.Array:
    """Valid-in-time conv of an activated window (N, st*(f-1)+kt, H, W, Cin) -> (N, f, Ho, Wo, Cout)."""
    kt, kh, kw, cin, cout = kernel.shape
    st, sh, sw = stride
    n = w.shape[0]
    w = w.astype(dtype)
    if impl == "conv3d":
        return lax.conv_general_dilated(
            w,
            kernel.astype(dtype),
            window_strides=stride,
            padding=((0, 0), *padding),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            precision=_precision(dtype),
        )
    taps = [w[:, k : k + st * (f - 1) + 1 : st] for k in range(kt)]  # each (N, f, H, W, Cin)
    h_, w_ = w.shape[2], w.shape[3]
    if impl == "stack" or kt == 1:
        stacked = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)
        k2 = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(kh, kw, kt * cin, cout)
        y = conv2d(stacked.reshape(n * f, h_, w_, kt * cin), k2, (sh, sw), padding, dtype)
    elif impl == "taps":
        y = None
        for k in range(kt):
            yk = conv2d(taps[k].reshape(n * f, h_, w_, cin), kernel[k], (sh, sw), padding, dtype).astype(F32)
            y = yk if y is None else y + yk
    else:
        raise ValueError(f"unknown conv impl {impl!r}")
    return y.reshape(n, f, *y.shape[1:])


def causal_conv(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    *,
    stride: tuple[int, int, int] = (1, 1, 1),
    padding: Pad2 = ((1, 1), (1, 1)),
    pre: PreFn | None = None,
    residual: Residual | None = None,
    dtype=F32,
    impl: str = "auto",
    chunk_bytes: int = 1 << 30,
    pre_hwc: tuple[int, int, int] | None = None,
    in_place: bool = False,
) -> jax.Array:
    """Causal 3-D convolution (replicate-first-frame time padding, zero spatial padding), channels-last.

    x: (N, T, H, W, Cin); kernel (kt, kh, kw, Cin, Cout); bias (Cout,). ``pre`` is applied to each window of
    input frames before padding (e.g. GroupNorm + SiLU, fused into the conv's input); if it changes the
    per-frame shape, ``pre_hwc`` gives its output (H, W, C). ``residual`` is added to the output. Returns
    (N, (T-1)//st + 1, Ho, Wo, Cout) in ``dtype``. A kt=1 kernel is a per-frame 2-D conv.

    ``in_place``: where the output has the input's shape and dtype (stride 1, no ``pre_hwc``) and the residual
    is not an identity add of the output's shape, write the output over ``x`` frame chunk by frame chunk
    (:func:`map_time_chunks`); elsewhere ignored. Same results; one tensor of ``x``'s size less when ``x`` is
    not needed afterwards (e.g. conv2 of a res block, whose input is the block's hidden activation).
    """
    kt, kh, kw, cin, cout = kernel.shape
    n, t = x.shape[:2]
    h, w, c = x.shape[2:] if pre_hwc is None else pre_hwc
    if c != cin:
        raise ValueError(f"causal_conv: input has {c} channels, kernel expects {cin}")
    impl = resolve_conv_impl(impl)
    st, sh, sw = stride
    t_out = (t - 1) // st + 1
    ho = (h + padding[0][0] + padding[0][1] - kh) // sh + 1
    wo = (w + padding[1][0] + padding[1][1] - kw) // sw + 1
    itemsize = jnp.dtype(dtype).itemsize
    per_frame = h * w * max(kt * cin, cout) * itemsize * (1 if impl == "stack" else 2)
    chunk = frames_per_chunk(t_out, per_frame, chunk_bytes)
    bias32 = bias.astype(F32)
    init = None
    if residual is not None and residual[1] is None and residual[0].shape == (n, t_out, ho, wo, cout):
        # identity shortcut: start from the residual and add in place (the output can reuse its buffer)
        init = residual[0].astype(dtype)

    in_place = (
        in_place and init is None and pre_hwc is None and tuple(x.shape) == (n, t_out, ho, wo, cout)
        and x.dtype == jnp.dtype(dtype)
    )

    if _region() is not None and stride[1:] != (1, 1):
        raise ValueError("a valid region is supported for stride-1 convolutions only (the decoder's)")

    def chunk_fn(window, s0, a, f, acc):
        if pre is not None:
            window = pre(window, s0)
        window = zero_outside_region(window)  # the zero padding of the tile the region stands for
        y = _conv_window(window, kernel, stride, padding, f, impl, dtype).astype(F32) + bias32
        if init is not None:
            y = y + _frames(acc, a, f).astype(F32)
        elif residual is not None:
            src, fn = residual
            r = _frames(src, a, f)
            y = y + (r if fn is None else fn(r)).astype(F32)
        return y.astype(dtype)

    return map_time_chunks(
        x,
        kt=kt,
        st=st,
        t_out=t_out,
        chunk=chunk,
        out_tail=(ho, wo, cout),
        out_dtype=dtype,
        chunk_fn=chunk_fn,
        init=init,
        in_place=in_place,
    )


def pointwise(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype) -> jax.Array:
    """1x1x1 conv as a matmul over channels: (..., Cin) -> (..., Cout) in ``dtype``; kernel (1,1,1,Cin,Cout)."""
    k = kernel.reshape(kernel.shape[-2], kernel.shape[-1]).astype(dtype)
    y = jnp.einsum("...c,cd->...d", x.astype(dtype), k, precision=_precision(dtype), preferred_element_type=F32)
    return (y + bias.astype(F32)).astype(dtype)


# ----------------------------------------------------------------------------------------------- upsampling
def interp2x(x: jax.Array, axis: int) -> jax.Array:
    """Linear x2 upsampling along ``axis`` with half-pixel centres (``align_corners=False``), in float32.

    Output ``2i`` = 0.75 x[i] + 0.25 x[i-1], ``2i+1`` = 0.75 x[i] + 0.25 x[i+1], indices clamped at the ends
    (so the first and last outputs copy the end samples). No gathers: shifted copies, weighted adds, and an
    interleave by stack + reshape.
    """
    x = x.astype(F32)
    n = x.shape[axis]
    first = lax.slice_in_dim(x, 0, 1, axis=axis)
    last = lax.slice_in_dim(x, n - 1, n, axis=axis)
    prev = jnp.concatenate([first, lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis) if n > 1 else x
    nxt = jnp.concatenate([lax.slice_in_dim(x, 1, n, axis=axis), last], axis=axis) if n > 1 else x
    region = _region()
    if region is not None and axis in (2, 3) and n > 1:  # clamp at the valid region's far edge instead
        inside = jnp.arange(n) + 1 < region.extent(n, axis)
        nxt = jnp.where(inside.reshape([n if i == axis else 1 for i in range(x.ndim)]), nxt, x)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def upsample_first_frame_apart(x: jax.Array, dtype, *, chunk_bytes: int = 1 << 30) -> jax.Array:
    """Spatial2xTime2x3DUpsample's interpolation: (N,T,H,W,C) -> (N, 2T-1, 2H, 2W, C) in ``dtype``.

    Every frame is upsampled bilinearly x2 in (H, W); frames 1..T-1 are also upsampled linearly x2 in time
    (frame 0 is never mixed with later frames) and follow frame 0. T == 1 gives only the spatial x2.
    The float32 math runs on chunks of output frame pairs (pair i = time outputs 2i, 2i+1 of frames 1..,
    read from frames i..i+2 of the edge-padded sequence) written in place, so no full-size float32
    intermediate exists.
    """
    n, t, h, w, c = x.shape

    def spatial(frames):
        return interp2x(interp2x(frames, 2), 3)

    first = spatial(x[:, :1]).astype(dtype)
    if t == 1:
        return first
    m = t - 1  # frames 1..T-1 -> 2m output frames
    xp = jnp.concatenate([x[:, 1:2], x[:, 1:], x[:, t - 1 : t]], axis=1)  # y[-1], y[0..m-1], y[m] clamped
    pairs = frames_per_chunk(m, 2 * 4 * h * w * c * 4 * 2, chunk_bytes)

    region = _region()
    valid = None if region is None else region.frame_extent(t)

    def pair_chunk(a, p):
        win = spatial(_frames(xp, a, p + 2))  # (N, p+2, 2H, 2W, C) float32
        centre = win[:, 1 : p + 1]
        even = 0.75 * centre + 0.25 * win[:, :p]
        nxt = win[:, 2 : p + 2]
        if valid is not None:  # pair i reads frame i + 2 as its next one: clamp at the last real frame instead
            nxt = jnp.where(((a + jnp.arange(p)) + 2 < valid).reshape(1, p, 1, 1, 1), nxt, centre)
        odd = 0.75 * centre + 0.25 * nxt
        return jnp.stack([even, odd], axis=2).reshape(n, 2 * p, 2 * h, 2 * w, c).astype(dtype)

    out = jnp.zeros((n, 2 * m + 1, 2 * h, 2 * w, c), dtype)
    out = lax.dynamic_update_slice_in_dim(out, first, 0, axis=1)
    n_full, rem = divmod(m, pairs)
    if n_full == 1:
        out = lax.dynamic_update_slice_in_dim(out, pair_chunk(0, pairs), 1, axis=1)
    elif n_full > 1:

        def body(i, acc):
            return lax.dynamic_update_slice_in_dim(acc, pair_chunk(i * pairs, pairs), 1 + 2 * i * pairs, axis=1)

        out = lax.fori_loop(0, n_full, body, out)
    if rem:
        a = n_full * pairs
        out = lax.dynamic_update_slice_in_dim(out, pair_chunk(a, rem), 1 + 2 * a, axis=1)
    return out


def _subpixel_kernels(kernel: jax.Array) -> list[list[jax.Array]]:
    """Nearest-x2 upsampling followed by a 3x3 conv (pad 1) == four 2x2 convs on the low-res input.

    Output row ``2i + a`` reads upsampled rows ``2i+a-1 .. 2i+a+1``, i.e. low-res rows (i-1, i) for a = 0 with
    kernel rows (w0, w1 + w2), and (i, i+1) for a = 1 with (w0 + w1, w2); the same along columns.
    Returns ``k[a][b]`` of shape (2, 2, Cin, Cout) (sums in float32).
    """
    k = kernel.astype(F32)
    rows = [jnp.stack([k[0], k[1] + k[2]]), jnp.stack([k[0] + k[1], k[2]])]  # each (2, 3, Cin, Cout)
    out = []
    for r in rows:
        cols = [jnp.stack([r[:, 0], r[:, 1] + r[:, 2]], axis=1), jnp.stack([r[:, 0] + r[:, 1], r[:, 2]], axis=1)]
        out.append(cols)
    return out


def nearest_upsample_conv_fn(kernel: jax.Array, bias: jax.Array, dtype) -> Callable[[jax.Array], jax.Array]:
    """The per-frame map of :func:`upsample_nearest_conv`: (N, F, h, w, Cin) -> (N, F, 2h, 2w, Cout) in dtype."""
    if kernel.shape[:3] != (1, 3, 3):
        raise ValueError(f"nearest upsample conv expects a (1,3,3) kernel, got {kernel.shape[:3]}")
    cout = kernel.shape[-1]
    ks = _subpixel_kernels(kernel[0])
    bias32 = bias.astype(F32)

    def fn(window: jax.Array) -> jax.Array:
        n, f, h, w, cin = window.shape
        xs = zero_outside_region(window.astype(dtype)).reshape(n * f, h, w, cin)
        phase = []
        for pa in range(2):
            row = []
            for pb in range(2):
                pad = ((1, 0) if pa == 0 else (0, 1), (1, 0) if pb == 0 else (0, 1))
                row.append(conv2d(xs, ks[pa][pb], (1, 1), pad, dtype))
            phase.append(jnp.stack(row, axis=3))  # (NF, h, w, 2[b], C)
        y = jnp.stack(phase, axis=2)  # (NF, h, 2[a], w, 2[b], C)
        y = y.reshape(n, f, 2 * h, 2 * w, cout).astype(F32) + bias32
        return y.astype(dtype)

    return fn


def upsample_nearest_conv(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, *, dtype=F32, chunk_bytes: int = 1 << 30
) -> jax.Array:
    """SpatialUpsample2x: nearest x2 in (H, W), then a (1,3,3) conv with zero padding 1.

    Computed as four 2x2 "sub-pixel" convs on the low-resolution input (4/9 of the FLOPs, and the upsampled
    tensor is never built) whose outputs are interleaved. x (N,T,H,W,Cin), kernel (1,3,3,Cin,Cout) ->
    (N, T, 2H, 2W, Cout) in ``dtype``.
    """
    n, t, h, w, _ = x.shape
    cout = kernel.shape[-1]
    fn = nearest_upsample_conv_fn(kernel, bias, dtype)
    chunk = frames_per_chunk(t, h * w * cout * 4 * max(jnp.dtype(dtype).itemsize, 2) * 2, chunk_bytes)
    return map_time_chunks(
        x,
        kt=1,
        st=1,
        t_out=t,
        chunk=chunk,
        out_tail=(2 * h, 2 * w, cout),
        out_dtype=dtype,
        chunk_fn=lambda window, s0, a, f, acc: fn(window),
    )


def group_stats_and_map(
    x: jax.Array,
    up_fn: Callable[[jax.Array], jax.Array],
    map_fn: Callable[[jax.Array], jax.Array] | None,
    *,
    num_groups: int,
    eps: float,
    chunk: int,
    up_hwc: tuple[int, int, int],
    map_c: int,
    out_dtype,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One pass over frame chunks of ``u = up_fn(x)`` (never materialised whole): float32 GroupNorm statistics
    of ``u`` over all frames (chunk means/M2 merged with Chan's parallel formula) and ``map_fn(u)`` written
    frame chunk by frame chunk. Returns (mean, rstd) shaped like :func:`group_norm_stats` and the mapped array
    (``None`` when ``map_fn`` is None: statistics only).
    """
    n, t = x.shape[:2]
    hh, ww, c = up_hwc
    g, cg = num_groups, c // num_groups

    spatial = _spatial_mask(hh, ww)

    def chunk_moments(u, a):
        f = u.shape[1]
        if spatial is None:
            cnt, mask = float(f * hh * ww * cg), None
        else:  # moments of the valid region only; a chunk of padded frames counts 0
            region = _region()
            frame_mask = _frame_mask(t, a, f)
            frames = f if frame_mask is None else jnp.sum(frame_mask).astype(F32)
            cnt = (region.extent(hh, 2) * region.extent(ww, 3)).astype(F32) * frames * cg
            mask = spatial if frame_mask is None else spatial & frame_mask
        m, m2 = _masked_group_moments(u, mask, jnp.maximum(cnt, 1.0), g, per_frame=False)
        return m.reshape(n, 1, 1, g, 1), m2.reshape(n, 1, 1, g, 1), cnt

    def body(a, f, carry):
        mean, m2, count, out = carry
        u = up_fn(_frames(x, a, f))
        mb, m2b, nb = chunk_moments(u, a)
        total = count + nb
        delta = mb - mean
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + jnp.square(delta) * (count * nb / total)
        if map_fn is not None:
            out = lax.dynamic_update_slice_in_dim(out, map_fn(u).astype(out_dtype), a, axis=1)
        return mean, m2, total, out

    zeros = jnp.zeros((n, 1, 1, g, 1), F32)
    out0 = jnp.zeros((n, t, hh, ww, map_c), out_dtype) if map_fn is not None else jnp.zeros((), out_dtype)
    carry = (zeros, zeros, jnp.zeros((), F32), out0)
    n_full, rem = divmod(t, chunk)
    if n_full == 1:
        carry = body(0, chunk, carry)
    elif n_full > 1:
        carry = lax.fori_loop(0, n_full, lambda i, cr: body(i * chunk, chunk, cr), carry)
    if rem:
        carry = body(n_full * chunk, rem, carry)
    mean, m2, total, out = carry
    return mean, lax.rsqrt(m2 / total + eps), (out if map_fn is not None else None)


def upsample_nearest_conv_reference(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, dtype=F32) -> jax.Array:
    """Plain reference for :func:`upsample_nearest_conv`: repeat pixels, then the (1,3,3) conv."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
    return causal_conv(up, kernel, bias, dtype=dtype, impl="conv3d")


# ----------------------------------------------------------------------------------------------- attention
def frame_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, dtype=F32, chunk_bytes: int = 1 << 30) -> jax.Array:
    """Single-head softmax attention inside each frame: (N,T,H,W,C) x3 -> (N,T,H,W,C) in ``dtype``.

    Scores q.k / sqrt(C) and the softmax are float32; no attention across frames. Frames are processed in
    chunks so the (HW x HW) float32 scores of one chunk stay under ``chunk_bytes``.
    """
    n, t, h, w, c = q.shape
    hw = h * w
    qkv = jnp.concatenate([q, k, v], axis=-1).reshape(n, t, hw, 3 * c).astype(dtype)
    scale = float(c) ** -0.5
    chunk = frames_per_chunk(t, hw * hw * 4 * 2, chunk_bytes)
    mask = _spatial_mask(h, w)
    keys = None if mask is None else mask.reshape(1, 1, 1, hw)  # keys outside the valid region take no part

    def chunk_fn(window, s0, a, f, acc):
        qq, kk, vv = window[..., :c], window[..., c : 2 * c], window[..., 2 * c :]
        s = jnp.einsum("ntqc,ntkc->ntqk", qq, kk, precision=_precision(dtype), preferred_element_type=F32) * scale
        if keys is not None:
            s = jnp.where(keys, s, -jnp.inf)
        p = jax.nn.softmax(s, axis=-1)
        o = jnp.einsum("ntqk,ntkc->ntqc", p.astype(dtype), vv, precision=_precision(dtype), preferred_element_type=F32)
        return o.astype(dtype)

    out = map_time_chunks(qkv, kt=1, st=1, t_out=t, chunk=chunk, out_tail=(hw, c), out_dtype=dtype, chunk_fn=chunk_fn)
    return out.reshape(n, t, h, w, c)


def torch_default_conv_init(key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype) -> jax.Array:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) -- PyTorch's default conv weight/bias init (for random-weight runs)."""
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, F32, -bound, bound).astype(dtype)
