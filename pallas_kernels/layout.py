"""Block layout of a tile mask: which key blocks each query block visits, and which of them need masking.

Tokens are frame-major: token ``p`` belongs to frame ``p // F`` (F = tokens per frame). Sequences are padded to
``padded_len`` (a multiple of both block sizes); the element-wise rule every kernel implements is

    allowed(q, k) = (k < N) and M[min(q // F, T - 1), k // F]

so padded query rows behave like rows of the last frame (their outputs are discarded) and padded keys are never
attended to. A (query block, key block) pair is *empty* (skipped), *full* (every element allowed: no masking in the
kernel) or *partial* (masked element-wise in the kernel from frame indices computed on the fly).

Everything here is NumPy, computed once per (mask, F, N, block sizes) outside jit and cached with
``functools.lru_cache``; no N x N array is ever built (block classification uses 2-D prefix sums over the T x T
tile matrix). :func:`dense_token_mask` builds the N x N mask for tests on small shapes only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .tile_mask import TileMask

__all__ = ["BlockLayout", "BlockList", "block_layout", "dense_token_mask", "padded_length", "row_key_bits"]

EMPTY, FULL, PARTIAL = 0, 1, 2


def padded_length(n: int, *block_sizes: int) -> int:
    """Smallest multiple of every block size that is >= n."""
    m = int(np.lcm.reduce(np.array(block_sizes, dtype=np.int64)))
    return -(-n // m) * m


@dataclass(frozen=True, eq=False)
class BlockList:
    """For each *row* block (query block in the forward, key block in the transposed layout), the column blocks
    to visit: full blocks first, then partial blocks, each group in ascending order.

    Attributes (read-only NumPy arrays, int32):
      indices: (num_rows, width) column-block indices; entries past ``counts`` repeat the first index.
      num_full: (num_rows,) how many leading entries are full blocks.
      counts: (num_rows,) total entries to visit (full + partial).
      partial: (num_rows, width) 1 where the entry is a partial block (masked in the kernel), else 0.
    """

    indices: np.ndarray
    num_full: np.ndarray
    counts: np.ndarray
    partial: np.ndarray

    @property
    def width(self) -> int:
        return int(self.indices.shape[1])

    @property
    def num_rows(self) -> int:
        return int(self.indices.shape[0])

    @property
    def num_visits(self) -> int:
        return int(self.counts.sum())

    def visited(self, row: int) -> list[tuple[int, bool]]:
        """[(column block, is_partial), ...] for one row block, in visiting order."""
        c = int(self.counts[row])
        return [(int(self.indices[row, s]), bool(self.partial[row, s])) for s in range(c)]


@dataclass(frozen=True, eq=False)
class BlockLayout:
    """Block structure of one (tile mask, tokens per frame, length, block sizes) combination.

    Attributes:
      mask, tokens_per_frame, seq_len (N = T * F), padded_len, block_q, block_kv: the inputs.
      status: (num_q_blocks, num_kv_blocks) int8, EMPTY=0 / FULL=1 / PARTIAL=2 (block-level only; small).
      forward: per query block, the key blocks to visit (for the forward pass and dq).
      transposed: per key block, the query blocks to visit (for dk, dv).
    """

    mask: TileMask
    tokens_per_frame: int
    seq_len: int
    padded_len: int
    block_q: int
    block_kv: int
    status: np.ndarray
    forward: BlockList
    transposed: BlockList

    @property
    def num_q_blocks(self) -> int:
        return self.padded_len // self.block_q

    @property
    def num_kv_blocks(self) -> int:
        return self.padded_len // self.block_kv

    @property
    def block_density(self) -> float:
        """Fraction of block pairs visited (>= the tile density because of boundary blocks)."""
        return float((self.status != EMPTY).mean())

    @property
    def partial_fraction(self) -> float:
        visited = (self.status != EMPTY).sum()
        return float((self.status == PARTIAL).sum() / max(visited, 1))

    def summary(self) -> str:
        s = self.status
        return (f"BlockLayout {self.mask.label()} F={self.tokens_per_frame} N={self.seq_len} (padded "
                f"{self.padded_len}) blocks {self.block_q}x{self.block_kv}: {s.shape[0]}x{s.shape[1]} pairs, "
                f"{int((s == FULL).sum())} full, {int((s == PARTIAL).sum())} partial, "
                f"{int((s == EMPTY).sum())} empty; block density {self.block_density:.3f} "
                f"(tile density {self.mask.density:.3f})")


def _frame_ranges(padded_len: int, block: int, f: int, t: int, clamp: bool) -> tuple[np.ndarray, ...]:
    """First and last frame of every block, and whether it holds padded positions (pos >= T*F)."""
    starts = np.arange(0, padded_len, block, dtype=np.int64)
    ends = starts + block - 1  # inclusive
    first = starts // f
    last = ends // f
    has_pad = ends >= t * f
    if clamp:  # query rows: padded rows act as the last frame
        first = np.minimum(first, t - 1)
        last = np.minimum(last, t - 1)
    else:  # key columns: the padding is not a frame; clip the range to real frames
        last = np.minimum(last, t - 1)
    return first, last, has_pad


def _classify(mask: TileMask, f: int, padded_len: int, block_q: int, block_kv: int) -> np.ndarray:
    t = mask.num_frames
    m = mask.matrix.astype(np.int64)
    prefix = np.zeros((t + 1, t + 1), dtype=np.int64)
    prefix[1:, 1:] = m.cumsum(0).cumsum(1)
    qa, qb, _ = _frame_ranges(padded_len, block_q, f, t, clamp=True)
    ka, kb, kpad = _frame_ranges(padded_len, block_kv, f, t, clamp=False)
    kvalid = ka < t  # a key block made only of padding has no valid key
    ka_c = np.minimum(ka, t - 1)
    a, b = qa[:, None], qb[:, None] + 1
    c, d = ka_c[None, :], kb[None, :] + 1
    kept = prefix[b, d] - prefix[a, d] - prefix[b, c] + prefix[a, c]
    area = (b - a) * (d - c)
    kept = np.where(kvalid[None, :], kept, 0)
    status = np.full(kept.shape, EMPTY, dtype=np.int8)
    status[kept > 0] = PARTIAL
    status[(kept == area) & ~kpad[None, :] & kvalid[None, :]] = FULL
    return status


def _block_list(status: np.ndarray) -> BlockList:
    rows, cols = status.shape
    # order: full (key 0), partial (key 1), empty (key 2); stable, so ascending column order within a group
    key = np.where(status == FULL, 0, np.where(status == PARTIAL, 1, 2)).astype(np.int64)
    order = np.argsort(key * cols + np.arange(cols)[None, :], axis=1, kind="stable")
    num_full = (status == FULL).sum(1).astype(np.int32)
    counts = (status != EMPTY).sum(1).astype(np.int32)
    width = max(int(counts.max()), 1)
    idx = order[:, :width].astype(np.int32)
    steps = np.arange(width)[None, :]
    valid = steps < counts[:, None]
    idx = np.where(valid, idx, idx[:, :1])
    partial = (valid & (steps >= num_full[:, None])).astype(np.int32)
    for arr in (idx, num_full, counts, partial):
        arr.setflags(write=False)
    return BlockList(indices=idx, num_full=num_full, counts=counts, partial=partial)


def block_layout(mask: TileMask, tokens_per_frame: int, block_q: int, block_kv: int,
                 padded_len: int | None = None) -> BlockLayout:
    """Compute (and cache) the block layout of ``mask`` for sequences of T * ``tokens_per_frame`` tokens.

    ``padded_len`` defaults to the smallest common multiple of the block sizes >= N.
    """
    if not isinstance(mask, TileMask):
        raise ValueError(f"mask must be a TileMask, got {type(mask).__name__}")
    return _block_layout(mask, int(tokens_per_frame), int(block_q), int(block_kv),
                         None if padded_len is None else int(padded_len))


@functools.lru_cache(maxsize=256)
def _block_layout(mask: TileMask, tokens_per_frame: int, block_q: int, block_kv: int,
                  padded_len: int | None) -> BlockLayout:
    f = int(tokens_per_frame)
    if f < 1:
        raise ValueError(f"tokens_per_frame must be >= 1, got {tokens_per_frame}")
    if block_q < 1 or block_kv < 1:
        raise ValueError(f"block sizes must be >= 1, got {block_q}, {block_kv}")
    n = mask.num_frames * f
    pl_ = padded_length(n, block_q, block_kv) if padded_len is None else int(padded_len)
    if pl_ < n or pl_ % block_q or pl_ % block_kv:
        raise ValueError(f"padded_len={pl_} must be >= N={n} and a multiple of {block_q} and {block_kv}")
    status = _classify(mask, f, pl_, block_q, block_kv)
    status.setflags(write=False)
    return BlockLayout(mask=mask, tokens_per_frame=f, seq_len=n, padded_len=pl_, block_q=block_q,
                       block_kv=block_kv, status=status, forward=_block_list(status),
                       transposed=_block_list(np.ascontiguousarray(status.T)))


@functools.lru_cache(maxsize=64)
def row_key_bits(mask: TileMask, tokens_per_frame: int, padded_len: int) -> np.ndarray:
    """Per query token, the bitmask of its kept key frames: (padded_len, W) int32 with W = ceil(T / 32).

    Bit ``j % 32`` of word ``j // 32`` is set when the token's frame keeps key frame j. Padded rows copy the last
    frame. O(N) memory; used by kernels that mask partial blocks element-wise (key frame = k // F on the fly).
    """
    t = mask.num_frames
    words = -(-t // 32)
    m = mask.matrix
    per_frame = np.zeros((t, words), dtype=np.uint32)
    for j in range(t):
        per_frame[:, j // 32] |= m[:, j].astype(np.uint32) << np.uint32(j % 32)
    frames = np.minimum(np.arange(padded_len) // tokens_per_frame, t - 1)
    out = per_frame[frames].view(np.int32)
    out.setflags(write=False)
    return out


def dense_token_mask(mask: TileMask, tokens_per_frame: int, padded_len: int | None = None) -> np.ndarray:
    """The N x N (or padded_len x padded_len) token mask implied by ``allowed(q, k)``: tests and tiny shapes only."""
    t = mask.num_frames
    n = t * tokens_per_frame
    p = n if padded_len is None else padded_len
    pos = np.arange(p)
    qf = np.minimum(pos // tokens_per_frame, t - 1)
    kf = pos // tokens_per_frame
    m = mask.matrix
    out = m[qf[:, None], np.minimum(kf, t - 1)[None, :]]
    out &= (pos < n)[None, :]
    return out
