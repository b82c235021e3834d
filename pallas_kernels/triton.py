"""Pallas Triton backend of tile attention: block-sparse flash attention, forward and backward.

Kept isolated in this file because the Pallas Triton backend is deprecated since jax 0.11. Runs on any CUDA GPU
and on CPU with ``interpret=True`` (the CPU-testable path).

Forward (grid: query blocks x batch x heads): each program loads its query block once and walks the key blocks of
its :class:`~pallas_kernels.layout.BlockList` (full blocks first with no masking, then partial blocks masked
element-wise), with an online softmax in fp32 and base-2 exponentials. Residuals: the output and the row
log-sum-exp in base 2 (``lse2 = m + log2(l)`` over logits scaled by ``scale * log2(e)``), shape (B, H, N_pad).

Backward: ``delta = rowsum(o * do)`` in plain JAX, then one kernel for dq (per query block, the forward list) and
one for dk, dv (per key block, the transposed list), both with the same block skipping.

Element-wise masking of partial blocks: the key frame ``k // F`` is computed on the fly and tested against the
query row's bitmask of kept key frames (:func:`~pallas_kernels.layout.row_key_bits`, O(N) int32), plus ``k < N``.

Head dims that are not powers of two (e.g. 96) are padded to the next power of two inside the kernel by masked
loads (no padded copies in HBM).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from .layout import BlockLayout, block_layout, padded_length, row_key_bits
from .tile_mask import TileMask

__all__ = ["TritonConfig", "triton_attention", "triton_forward", "triton_backward"]

LOG2E = math.log2(math.e)
MASK_VALUE = -1e30  # finite: a fully masked row-block never produces NaN (exp2(0) garbage is washed out later)


@dataclass(frozen=True)
class TritonConfig:
    """Static configuration (hashable). Block sizes must be powers of two on GPU.

    Defaults measured on an H100 (bf16, head dim 96 padded to 128 in registers, 24 heads, 28,800 tokens): forward
    64 x 64 with 4 warps ran 1.2x faster than 128 x 64 with 8 warps.
    """

    block_q: int = 64
    block_kv: int = 64
    block_q_bwd: int = 64
    block_kv_bwd: int = 64
    num_warps: int = 4
    num_stages: int = 2
    num_warps_bwd: int = 4
    num_stages_bwd: int = 2


def _dot(a, b, trans_a: bool = False, trans_b: bool = False):
    """a @ b (optionally transposed operands) with fp32 accumulation (``pl.dot`` is gone in jax 0.12)."""
    dims = (((0 if trans_a else 1,), (1 if trans_b else 0,)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _next_pow2(x: int) -> int:
    return 1 << (int(x) - 1).bit_length()


def _allowed(row_bits, k_pos, *, f: int, n: int):
    """Element-wise mask of a partial block.

    row_bits: list of W (bq,) int32 arrays (kept key frames of each query row); k_pos: (bk,) key positions.
    Returns a (bq, bk) bool array: key frame k // F kept by the row, and k < N.
    """
    kf = k_pos // f
    allowed = None
    for w, bits in enumerate(row_bits):
        sh = kf - 32 * w
        inside = (sh >= 0) & (sh < 32)
        bit = jnp.right_shift(bits[:, None], jnp.clip(sh, 0, 31)[None, :]) & 1
        a = inside[None, :] & (bit != 0)
        allowed = a if allowed is None else (allowed | a)
    return allowed & (k_pos < n)[None, :]


# --------------------------------------------------------------------------------------------- forward kernel
def _fwd_kernel(kv_idx_ref, kv_nfull_ref, kv_cnt_ref, *refs, num_words: int, scale: float, f: int, n: int,
                block_q: int, block_kv: int, head_dim: int):
    bits_refs = refs[:num_words]
    q_ref, k_ref, v_ref, o_ref, lse_ref = refs[num_words:]
    qb = pl.program_id(0)
    dp = q_ref.shape[-1]
    head_mask = (jnp.arange(dp) < head_dim)[None, :]
    q = pltriton.load(q_ref, mask=head_mask, other=0.0)
    q_start = qb * block_q
    row_bits = [r[pl.ds(q_start, block_q)] for r in bits_refs]
    c = scale * LOG2E

    def step(s, carry, masked: bool):
        acc, m_i, l_i = carry
        kb = kv_idx_ref[qb, s]
        k_start = kb * block_kv
        kv_slice = pl.ds(k_start, block_kv)
        k = pltriton.load(k_ref.at[kv_slice, :], mask=head_mask, other=0.0)
        logits = _dot(q, k, trans_b=True) * c
        if masked:
            k_pos = k_start + jnp.arange(block_kv)
            logits = jnp.where(_allowed(row_bits, k_pos, f=f, n=n), logits, MASK_VALUE)
        m_new = jnp.maximum(m_i, logits.max(axis=-1))
        alpha = jnp.exp2(m_i - m_new)
        p = jnp.exp2(logits - m_new[:, None])
        l_new = l_i * alpha + p.sum(axis=-1)
        v = pltriton.load(v_ref.at[kv_slice, :], mask=head_mask, other=0.0)
        acc = acc * alpha[:, None] + _dot(p.astype(v.dtype), v)
        return acc, m_new, l_new

    init = (jnp.zeros((block_q, dp), jnp.float32), jnp.full((block_q,), -jnp.inf, jnp.float32),
            jnp.zeros((block_q,), jnp.float32))
    n_full = kv_nfull_ref[qb]
    carry = jax.lax.fori_loop(0, n_full, functools.partial(step, masked=False), init)
    acc, m_i, l_i = jax.lax.fori_loop(n_full, kv_cnt_ref[qb], functools.partial(step, masked=True), carry)
    acc = acc / l_i[:, None]
    lse_ref[...] = m_i + jnp.log2(l_i)
    pltriton.store(o_ref, acc.astype(o_ref.dtype), mask=head_mask)


def _full_spec(shape):
    zeros = (0,) * len(shape)
    return pl.BlockSpec(tuple(shape), lambda *_: zeros)


def triton_forward(q, k, v, layout: BlockLayout, *, scale: float, cfg: TritonConfig, interpret: bool):
    """Forward on padded inputs (B, Np, H, D) -> (out (B, Np, H, D), lse2 (B, H, Np) fp32)."""
    b, np_, h, d = q.shape
    bq, bk = layout.block_q, layout.block_kv
    dp = _next_pow2(d)
    fl = layout.forward
    bits = row_key_bits(layout.mask, layout.tokens_per_frame, np_)
    bits_list = [jnp.asarray(np.ascontiguousarray(bits[:, w])) for w in range(bits.shape[1])]
    kernel = functools.partial(_fwd_kernel, num_words=len(bits_list), scale=scale, f=layout.tokens_per_frame,
                               n=layout.seq_len, block_q=bq, block_kv=bk, head_dim=d)
    in_specs = [_full_spec(fl.indices.shape), _full_spec(fl.num_full.shape), _full_spec(fl.counts.shape)]
    in_specs += [_full_spec((np_,))] * len(bits_list)
    in_specs += [
        pl.BlockSpec((None, bq, None, dp), lambda i, j, hh: (j, i, hh, 0)),
        pl.BlockSpec((None, np_, None, dp), lambda i, j, hh: (j, 0, hh, 0)),
        pl.BlockSpec((None, np_, None, dp), lambda i, j, hh: (j, 0, hh, 0)),
    ]
    out_specs = [pl.BlockSpec((None, bq, None, dp), lambda i, j, hh: (j, i, hh, 0)),
                 pl.BlockSpec((None, None, bq), lambda i, j, hh: (j, hh, i))]
    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), jax.ShapeDtypeStruct((b, h, np_), jnp.float32)]
    out, lse = pl.pallas_call(
        kernel,
        grid=(np_ // bq, b, h),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
        interpret=interpret,
        name="tile_attention_fwd",
    )(jnp.asarray(fl.indices), jnp.asarray(fl.num_full), jnp.asarray(fl.counts), *bits_list, q, k, v)
    return out, lse


# --------------------------------------------------------------------------------------------- backward kernels
def _dq_kernel(kv_idx_ref, kv_nfull_ref, kv_cnt_ref, *refs, num_words: int, scale: float, f: int, n: int,
               block_q: int, block_kv: int, head_dim: int):
    bits_refs = refs[:num_words]
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref = refs[num_words:]
    qb = pl.program_id(0)
    dp = q_ref.shape[-1]
    head_mask = (jnp.arange(dp) < head_dim)[None, :]
    q = pltriton.load(q_ref, mask=head_mask, other=0.0)
    do = pltriton.load(do_ref, mask=head_mask, other=0.0)
    lse = lse_ref[...]
    delta = delta_ref[...]
    q_start = qb * block_q
    row_bits = [r[pl.ds(q_start, block_q)] for r in bits_refs]
    c = scale * LOG2E

    def step(s, dq, masked: bool):
        kb = kv_idx_ref[qb, s]
        k_start = kb * block_kv
        kv_slice = pl.ds(k_start, block_kv)
        k = pltriton.load(k_ref.at[kv_slice, :], mask=head_mask, other=0.0)
        v = pltriton.load(v_ref.at[kv_slice, :], mask=head_mask, other=0.0)
        logits = _dot(q, k, trans_b=True) * c
        if masked:
            k_pos = k_start + jnp.arange(block_kv)
            logits = jnp.where(_allowed(row_bits, k_pos, f=f, n=n), logits, MASK_VALUE)
        p = jnp.exp2(logits - lse[:, None])
        dpv = _dot(do, v, trans_b=True)
        ds = p * (dpv - delta[:, None])
        return dq + _dot(ds.astype(k.dtype), k)

    n_full = kv_nfull_ref[qb]
    dq = jax.lax.fori_loop(0, n_full, functools.partial(step, masked=False), jnp.zeros((block_q, dp), jnp.float32))
    dq = jax.lax.fori_loop(n_full, kv_cnt_ref[qb], functools.partial(step, masked=True), dq)
    pltriton.store(dq_ref, (dq * scale).astype(dq_ref.dtype), mask=head_mask)


def _dkv_kernel(q_idx_ref, q_nfull_ref, q_cnt_ref, *refs, num_words: int, scale: float, f: int, n: int,
                block_q: int, block_kv: int, head_dim: int):
    bits_refs = refs[:num_words]
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref = refs[num_words:]
    kb = pl.program_id(0)
    dp = k_ref.shape[-1]
    head_mask = (jnp.arange(dp) < head_dim)[None, :]
    k = pltriton.load(k_ref, mask=head_mask, other=0.0)
    v = pltriton.load(v_ref, mask=head_mask, other=0.0)
    k_pos = kb * block_kv + jnp.arange(block_kv)
    c = scale * LOG2E

    def step(s, carry, masked: bool):
        dk, dv = carry
        qb = q_idx_ref[kb, s]
        q_start = qb * block_q
        q_slice = pl.ds(q_start, block_q)
        q = pltriton.load(q_ref.at[q_slice, :], mask=head_mask, other=0.0)
        do = pltriton.load(do_ref.at[q_slice, :], mask=head_mask, other=0.0)
        lse = lse_ref[q_slice]
        delta = delta_ref[q_slice]
        logits = _dot(q, k, trans_b=True) * c
        if masked:
            row_bits = [r[q_slice] for r in bits_refs]
            logits = jnp.where(_allowed(row_bits, k_pos, f=f, n=n), logits, MASK_VALUE)
        p = jnp.exp2(logits - lse[:, None])
        dv = dv + _dot(p.astype(do.dtype), do, trans_a=True)
        dpv = _dot(do, v, trans_b=True)
        ds = p * (dpv - delta[:, None])
        dk = dk + _dot(ds.astype(q.dtype), q, trans_a=True)
        return dk, dv

    zeros = jnp.zeros((block_kv, dp), jnp.float32)
    n_full = q_nfull_ref[kb]
    carry = jax.lax.fori_loop(0, n_full, functools.partial(step, masked=False), (zeros, zeros))
    dk, dv = jax.lax.fori_loop(n_full, q_cnt_ref[kb], functools.partial(step, masked=True), carry)
    pltriton.store(dk_ref, (dk * scale).astype(dk_ref.dtype), mask=head_mask)
    pltriton.store(dv_ref, dv.astype(dv_ref.dtype), mask=head_mask)


def triton_backward(q, k, v, out, lse, do, layout: BlockLayout, *, scale: float, cfg: TritonConfig,
                    interpret: bool):
    """Backward on padded inputs. ``lse`` must be the base-2 log-sum-exp of the forward (B, H, Np) fp32; ``layout``
    is the backward layout (block sizes block_q_bwd x block_kv_bwd). Returns (dq, dk, dv) like q, k, v."""
    b, np_, h, d = q.shape
    bq, bk = layout.block_q, layout.block_kv
    dp = _next_pow2(d)
    delta = jnp.einsum("bnhd,bnhd->bhn", out.astype(jnp.float32), do.astype(jnp.float32))
    bits = row_key_bits(layout.mask, layout.tokens_per_frame, np_)
    bits_list = [jnp.asarray(np.ascontiguousarray(bits[:, w])) for w in range(bits.shape[1])]
    common = dict(num_words=len(bits_list), scale=scale, f=layout.tokens_per_frame, n=layout.seq_len,
                  block_q=bq, block_kv=bk, head_dim=d)
    params = pltriton.CompilerParams(num_warps=cfg.num_warps_bwd, num_stages=cfg.num_stages_bwd)
    full_seq = pl.BlockSpec((None, np_, None, dp), lambda i, j, hh: (j, 0, hh, 0))
    full_row = pl.BlockSpec((None, None, np_), lambda i, j, hh: (j, hh, 0))
    bits_specs = [_full_spec((np_,))] * len(bits_list)

    fl = layout.forward
    q_blk = pl.BlockSpec((None, bq, None, dp), lambda i, j, hh: (j, i, hh, 0))
    row_blk = pl.BlockSpec((None, None, bq), lambda i, j, hh: (j, hh, i))
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, **common),
        grid=(np_ // bq, b, h),
        in_specs=[_full_spec(fl.indices.shape), _full_spec(fl.num_full.shape), _full_spec(fl.counts.shape),
                  *bits_specs, q_blk, full_seq, full_seq, q_blk, row_blk, row_blk],
        out_specs=q_blk,
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        compiler_params=params,
        interpret=interpret,
        name="tile_attention_dq",
    )(jnp.asarray(fl.indices), jnp.asarray(fl.num_full), jnp.asarray(fl.counts), *bits_list,
      q, k, v, do, lse, delta)

    tl = layout.transposed
    kv_blk = pl.BlockSpec((None, bk, None, dp), lambda i, j, hh: (j, i, hh, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, **common),
        grid=(np_ // bk, b, h),
        in_specs=[_full_spec(tl.indices.shape), _full_spec(tl.num_full.shape), _full_spec(tl.counts.shape),
                  *bits_specs, full_seq, kv_blk, kv_blk, full_seq, full_row, full_row],
        out_specs=[kv_blk, kv_blk],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        compiler_params=params,
        interpret=interpret,
        name="tile_attention_dkv",
    )(jnp.asarray(tl.indices), jnp.asarray(tl.num_full), jnp.asarray(tl.counts), *bits_list,
      q, k, v, do, lse, delta)
    return dq, dk, dv


# --------------------------------------------------------------------------------------------- custom VJP
@dataclass(frozen=True)
class _Static:
    mask: TileMask
    tokens_per_frame: int
    padded_len: int
    scale: float
    cfg: TritonConfig
    interpret: bool

    def fwd_layout(self) -> BlockLayout:
        return block_layout(self.mask, self.tokens_per_frame, self.cfg.block_q, self.cfg.block_kv,
                            self.padded_len)

    def bwd_layout(self) -> BlockLayout:
        return block_layout(self.mask, self.tokens_per_frame, self.cfg.block_q_bwd, self.cfg.block_kv_bwd,
                            self.padded_len)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _attention_padded(q, k, v, st: _Static):
    out, _ = triton_forward(q, k, v, st.fwd_layout(), scale=st.scale, cfg=st.cfg, interpret=st.interpret)
    return out


def _attention_padded_fwd(q, k, v, st: _Static):
    out, lse = triton_forward(q, k, v, st.fwd_layout(), scale=st.scale, cfg=st.cfg, interpret=st.interpret)
    return out, (q, k, v, out, lse)


def _attention_padded_bwd(st: _Static, res, do):
    q, k, v, out, lse = res
    return triton_backward(q, k, v, out, lse, do, st.bwd_layout(), scale=st.scale, cfg=st.cfg,
                           interpret=st.interpret)


_attention_padded.defvjp(_attention_padded_fwd, _attention_padded_bwd)


def triton_attention(q, k, v, mask: TileMask, *, tokens_per_frame: int, scale: float | None = None,
                     interpret: bool = False, config: TritonConfig | None = None) -> jax.Array:
    """Tile attention through Pallas Triton kernels; differentiable (custom VJP). q, k, v: (B, N, H, D)."""
    cfg = TritonConfig() if config is None else config
    b, n, h, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    np_ = padded_length(n, cfg.block_q, cfg.block_kv, cfg.block_q_bwd, cfg.block_kv_bwd)
    st = _Static(mask, int(tokens_per_frame), np_, scale, cfg, bool(interpret))
    if np_ != n:
        pad = ((0, 0), (0, np_ - n), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    out = _attention_padded(q, k, v, st)
    return out[:, :n] if np_ != n else out
