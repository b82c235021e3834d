"""Stage 2: layer-wise tile-mask search.

For every layer, run the dense model on calibration inputs, take that layer's q, k, v and compare the dense
attention output with the output under each candidate mask: relative error ||A_mask - A_dense|| / ||A_dense||
(averaged over the calibration set). Each layer gets the sparsest candidate whose error stays below the
threshold r (dense if none does). The next layer always sees the dense activations, so errors are per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_vdit.model.attention import DENSE, dense_attention


@dataclass(frozen=True)
class LayerMaskReport:
    """The choice for one layer: the mask (None = dense), its density and its measured error."""

    layer: int
    mask: object
    density: float
    error: float


def candidate_masks(num_frames: int, include_windows: bool = False) -> list:
    """k:m masks for k = 1 .. T-1 (sparsest first), optionally temporal windows; the full mask is implied."""
    import pallas_kernels

    cands = [pallas_kernels.TileMask.k_m(k, num_frames) for k in range(1, num_frames)]
    if include_windows:
        cands += [pallas_kernels.TileMask.window(w, num_frames, num_global=1) for w in range(1, num_frames - 1)]
    # unique by matrix, sparsest first; a candidate equal to the full mask saves nothing (dense is the fallback)
    unique = {m.bits: m for m in cands if not m.is_full}
    return sorted(unique.values(), key=lambda m: m.density)


def _errors_fn(graphdef, candidates: tuple, tile_backend: str, interpret: bool):
    """One program: embed, then a ``jax.lax.scan`` over the stacked block weights whose body measures one layer's
    candidate errors and runs the layer densely. Every layer shares the body, so the program holds one block and
    one kernel per candidate whatever the depth (unrolled, 32 layers x 7 candidates did not compile in minutes)."""
    import pallas_kernels

    from jax_vdit.model.transformer import _block_step

    def fn(state, latents, timestep, text, text_mask):
        model = nnx.merge(graphdef, state)
        ctx = model.prepare(latents, timestep, text, text_mask)
        block_graph, stacked = model.stacked_block_states(0, model.cfg.num_layers)
        run_dense = _block_step(None, ctx.tokens_per_frame, DENSE)

        def layer(x, block_state):
            block = nnx.merge(block_graph, block_state)
            shift, scale = block.modulation(ctx.t6)[:2]
            q, k, v = block.self_attention_inputs(x, shift, scale, ctx.rope_cos, ctx.rope_sin)
            dense = dense_attention(q, k, v, backend=DENSE.dense_backend).astype(jnp.float32)
            norm = jnp.sqrt(jnp.sum(jnp.square(dense)))
            errs = []
            for cand in candidates:
                out = pallas_kernels.tile_attention(q, k, v, cand, tokens_per_frame=ctx.tokens_per_frame,
                                                    backend=tile_backend, interpret=interpret)
                errs.append(jnp.sqrt(jnp.sum(jnp.square(out.astype(jnp.float32) - dense))) / norm)
            x_next = run_dense(block, x, ctx.text, ctx.text_mask, ctx.t6, ctx.rope_cos, ctx.rope_sin)
            return x_next, jnp.stack(errs)

        _, rows = jax.lax.scan(layer, ctx.x, stacked)
        return rows  # (layers, candidates)

    return jax.jit(fn)


def layer_errors(
    model,
    calibration: Sequence[dict],
    candidates: Sequence,
    *,
    tile_backend: str = "auto",
    interpret: bool = False,
) -> np.ndarray:
    """Mean relative attention-output error (layers, candidates) over calibration batches.

    Each batch: ``latents`` (B,C,T,H,W) noisy inputs, ``timestep`` (B,), ``text`` (B,L,C), ``text_mask`` (B,L).
    """
    graphdef, state = nnx.split(model)
    fn = _errors_fn(graphdef, tuple(candidates), tile_backend, interpret)
    total = None
    for batch in calibration:
        errs = np.asarray(fn(state, batch["latents"], batch["timestep"], batch["text"], batch["text_mask"]))
        total = errs if total is None else total + errs
    return total / len(calibration)


def choose_masks(errors: np.ndarray, candidates: Sequence, threshold: float) -> list[LayerMaskReport]:
    """Per layer, the sparsest candidate with error <= threshold (candidates must be sorted sparsest first)."""
    reports = []
    for layer, row in enumerate(errors):
        choice = next((j for j, e in enumerate(row) if e <= threshold), None)
        if choice is None:
            reports.append(LayerMaskReport(layer, None, 1.0, 0.0))
        else:
            m = candidates[choice]
            reports.append(LayerMaskReport(layer, m, m.density, float(row[choice])))
    return reports


def search_masks(model, calibration: Sequence[dict], threshold: float, *, num_frames: int,
                 tile_backend: str = "auto", interpret: bool = False, include_windows: bool = False):
    """Run the search: returns (``pallas_kernels.MaskSchedule``, per-layer reports, the error matrix)."""
    by_threshold, errors = search_masks_over_thresholds(
        model, calibration, [threshold], num_frames=num_frames, tile_backend=tile_backend, interpret=interpret,
        include_windows=include_windows)
    schedule, reports = by_threshold[threshold]
    return schedule, reports, errors


def search_masks_over_thresholds(model, calibration: Sequence[dict], thresholds: Sequence[float], *,
                                 num_frames: int, tile_backend: str = "auto", interpret: bool = False,
                                 include_windows: bool = False):
    """:func:`search_masks` for several thresholds r from one measurement of the error matrix (the expensive
    part): returns ({r: (schedule, reports)}, errors)."""
    import pallas_kernels

    bad = [r for r in thresholds if r < 0]
    if bad:
        raise ValueError(f"threshold r must be >= 0, got {bad}")
    candidates = candidate_masks(num_frames, include_windows)
    errors = layer_errors(model, calibration, candidates, tile_backend=tile_backend, interpret=interpret)
    out = {}
    for r in thresholds:
        reports = choose_masks(errors, candidates, r)
        out[r] = (pallas_kernels.MaskSchedule(tuple(rep.mask for rep in reports)), reports)
    return out, errors
