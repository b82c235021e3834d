"""OpenSoraT2V (Open-Sora-Plan v1.2 text-to-video DiT) in Flax NNX.

Call: ``model(latents (B,C,T,H,W), timestep (B,), text (B,1,L,Ct) or (B,L,Ct), text_mask (B,1,L) or (B,L))``
-> epsilon prediction (B, C_out, T, H, W) in the compute dtype. Self-attention goes through
:mod:`jax_vdit.model.attention`, chosen per call by an :class:`AttentionConfig` (dense or per-layer tile masks).

The blocks are kept as a list (one parameter subtree per layer: checkpoints, key maps and sharding rules see
``blocks.<i>``). With ``AttentionConfig.scan_layers`` (the default) the forward stacks the weights of each run of
consecutive layers sharing one tile mask and runs that run as one ``jax.lax.scan``, so a 32-layer forward compiles
one block body per run instead of 32 (:meth:`OpenSoraT2V.run_blocks`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_vdit.abstract_init import abstract, abstract_cached
from jax_vdit.config import ModelConfig
from jax_vdit.model.attention import DENSE, AttentionConfig
from jax_vdit.model.block import TransformerBlock, layer_norm, modulate
from jax_vdit.model.embeddings import AdaLNSingle, CaptionProjection, linear, patchify, unpatchify
from jax_vdit.model.rope import rope_angles, rope_tables


class InputShapeError(ValueError):
    """A forward input has the wrong rank, channel count or spatial size."""


@functools.lru_cache(maxsize=32)
def _cached_rope_angles(grid, head_dim, scales, theta) -> np.ndarray:
    return rope_angles(grid, head_dim, scales, theta)


def _block_step(tile_mask, tokens_per_frame: int, attention: AttentionConfig):
    """One block as a function of arrays only (static settings closed over), so it can be rematerialised."""

    def step(block: TransformerBlock, x, text, text_mask, t6, cos, sin):
        return block(x, text, text_mask, t6, cos, sin, tile_mask=tile_mask, tokens_per_frame=tokens_per_frame,
                     attention=attention)

    return step


@dataclass(frozen=True)
class ForwardContext:
    """What the blocks and the final layer share during one forward pass.

    x: (B, N, D) embedded tokens; text: (B, L, D) projected captions; text_mask: (B, L) bool or None;
    t6: (B, 6D) block modulation; embedded_t: (B, D); rope_cos/rope_sin: (N, head_dim); grid: (T', H', W').
    """

    x: jax.Array
    text: jax.Array
    text_mask: jax.Array | None
    t6: jax.Array
    embedded_t: jax.Array
    rope_cos: jax.Array
    rope_sin: jax.Array
    grid: tuple[int, int, int]

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[1] * self.grid[2]


class OpenSoraT2V(nnx.Module):
    """The v1.2 transformer: patch embed, adaLN-single, caption projection, blocks, final layer, unpatchify."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.inner_dim
        dtype, pdtype = cfg.compute_jnp_dtype, cfg.param_jnp_dtype
        self.patch_embed = linear(rngs, cfg.patch_dim, d, dtype, pdtype)
        self.adaln_single = AdaLNSingle(d, dtype, pdtype, rngs)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d, dtype, pdtype, rngs)
        self.blocks = nnx.List([TransformerBlock(cfg, rngs) for _ in range(cfg.num_layers)])
        self.scale_shift_table = nnx.Param(
            (jax.random.normal(rngs.params(), (2, d), jnp.float32) / d**0.5).astype(pdtype)
        )
        self.proj_out = nnx.Linear(
            d, cfg.out_patch_dim, dtype=dtype, param_dtype=pdtype, rngs=rngs,
            kernel_init=nnx.initializers.zeros_init(), bias_init=nnx.initializers.zeros_init(),
        )

    # -- input checks ----------------------------------------------------------------------------------------
    def _check_inputs(self, latents, timestep, text, text_mask):
        cfg = self.cfg
        if latents.ndim != 5:
            raise InputShapeError(f"latents must be (B, C, T, H, W), got shape {latents.shape}")
        b, c, t, h, w = latents.shape
        if c != cfg.in_channels:
            raise InputShapeError(f"latents have {c} channels, the model expects in_channels={cfg.in_channels}")
        if h % cfg.patch_size or w % cfg.patch_size:
            raise InputShapeError(
                f"latent height/width ({h}, {w}) must be divisible by patch_size={cfg.patch_size}"
            )
        timestep = jnp.asarray(timestep)
        if timestep.ndim == 0:
            timestep = jnp.broadcast_to(timestep, (b,))
        if timestep.shape != (b,):
            raise InputShapeError(f"timestep must be a scalar or shape ({b},), got {timestep.shape}")
        if text.ndim == 4:
            if text.shape[1] != 1:
                raise InputShapeError(f"text embeddings (B,1,L,C) must have size 1 on axis 1, got {text.shape}")
            text = text[:, 0]
        if text.ndim != 3 or text.shape[0] != b or text.shape[-1] != cfg.caption_channels:
            raise InputShapeError(
                f"text embeddings must be (B={b}, L, {cfg.caption_channels}) or (B, 1, L, "
                f"{cfg.caption_channels}), got {text.shape}"
            )
        if text_mask is not None:
            if text_mask.ndim == 3:
                text_mask = text_mask[:, 0]
            if text_mask.shape != text.shape[:2]:
                raise InputShapeError(f"text mask must be (B, L) = {text.shape[:2]} or (B, 1, L), got {text_mask.shape}")
            text_mask = text_mask.astype(bool)
        return timestep, text, text_mask

    # -- forward ---------------------------------------------------------------------------------------------
    def prepare(self, latents: jax.Array, timestep: jax.Array, text: jax.Array,
                text_mask: jax.Array | None = None) -> ForwardContext:
        """Embed the inputs: tokens (B, N, D) and everything the blocks and the final layer need."""
        cfg = self.cfg
        dtype = cfg.compute_jnp_dtype
        timestep, text, text_mask = self._check_inputs(latents, timestep, text, text_mask)
        _, _, t, h, w = latents.shape
        grid = (t, h // cfg.patch_size, w // cfg.patch_size)
        x = self.patch_embed(patchify(latents.astype(dtype), cfg.patch_size))
        t6, embedded_t = self.adaln_single(timestep)
        c = self.caption_projection(text.astype(dtype))
        scales = (cfg.interpolation_scale_t, cfg.interpolation_scale_h, cfg.interpolation_scale_w)
        angles = _cached_rope_angles(grid, cfg.attention_head_dim, scales, cfg.rope_theta)
        cos, sin = rope_tables(angles, dtype, cfg.rope_round_angles)
        return ForwardContext(x, c, text_mask, t6, embedded_t, cos, sin, grid)

    def run_block(self, i: int, ctx: ForwardContext, x: jax.Array, attention: AttentionConfig) -> jax.Array:
        """Block ``i`` on tokens ``x`` (B, N, D), with the layer's attention from ``attention``."""
        step = _block_step(attention.layer_mask(i), ctx.tokens_per_frame, attention)
        if self.cfg.remat:
            step = nnx.remat(step)
        return step(self.blocks[i], x, ctx.text, ctx.text_mask, ctx.t6, ctx.rope_cos, ctx.rope_sin)

    def run_blocks(self, start: int, stop: int, ctx: ForwardContext, x: jax.Array,
                   attention: AttentionConfig, stacked: Any = None) -> jax.Array:
        """Blocks ``start .. stop - 1``, which must share one tile mask, as one ``jax.lax.scan`` over their stacked
        weights (a run of one layer is called directly). x: (B, N, D) -> (B, N, D).

        The weights of the run are stacked along a new leading axis (a copy of the run's weights inside the traced
        program), unless ``stacked`` gives them already stacked (:meth:`stack_block_runs`); the scan body merges one
        layer's weights into the block's graph and calls the block, under ``jax.checkpoint`` per block when
        ``cfg.remat``.
        """
        if not 0 <= start < stop <= self.cfg.num_layers:
            raise ValueError(f"layer run [{start}, {stop}) is not inside [0, {self.cfg.num_layers})")
        tile_mask = attention.layer_mask(start)
        if any(attention.layer_mask(i) != tile_mask for i in range(start + 1, stop)):
            raise ValueError(f"layers {start}..{stop - 1} do not share one tile mask; scan only runs of equal masks")
        if stop - start == 1:
            return self.run_block(start, ctx, x, attention)
        graphdef, stacked = self._run_states(start, stop, stacked)
        step = _block_step(tile_mask, ctx.tokens_per_frame, attention)

        def body(x, state):
            return step(nnx.merge(graphdef, state), x, ctx.text, ctx.text_mask, ctx.t6, ctx.rope_cos, ctx.rope_sin)

        if self.cfg.remat:
            body = jax.checkpoint(body)
        x, _ = jax.lax.scan(lambda x, state: (body(x, state), None), x, stacked,
                            unroll=min(attention.scan_unroll, stop - start))
        return x

    def stack_block_runs(self, attention: AttentionConfig) -> dict[tuple[int, int], Any]:
        """The stacked weights of every scan that ``attention`` runs, ``{(start, stop): state}`` (``(0,
        num_layers)`` for the switched scan; empty when the blocks are not scanned), for ``__call__(...,
        stacked_runs=...)``. A program that runs the forward many times (the sampler's step loop) stacks the weights
        once with this, instead of copying every block's weights again in every forward."""
        n = self.cfg.num_layers
        if not attention.scan_layers:
            return {}
        if self._switched(attention):
            return {(0, n): self.stacked_block_states(0, n)[1]}
        return {(a, b): self.stacked_block_states(a, b)[1] for a, b in attention.layer_runs(n) if b - a > 1}

    def _switched(self, attention: AttentionConfig) -> bool:
        """Whether ``attention`` runs all blocks as one scan that switches masks (:meth:`run_blocks_switched`)."""
        return attention.scan_layers and attention.mixed_masks == "switch" and self.cfg.num_layers > 1

    def _run_states(self, start: int, stop: int, stacked: Any):
        """(graph def, stacked weights) of blocks ``start .. stop - 1``: ``stacked`` when given, else stacked here."""
        if stacked is None:
            return self.stacked_block_states(start, stop)
        return nnx.split(self.blocks[start])[0], stacked

    def stacked_block_states(self, start: int, stop: int):
        """(graph def, the weights of blocks ``start .. stop - 1`` stacked along a new leading axis)."""
        graphdef, first = nnx.split(self.blocks[start])
        states = [first]
        for i in range(start + 1, stop):
            gd, st = nnx.split(self.blocks[i])
            if gd != graphdef:
                raise ValueError(f"block {i} has another structure than block {start}; it cannot be scanned with it")
            states.append(st)
        return graphdef, jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    def run_blocks_switched(self, ctx: ForwardContext, x: jax.Array, attention: AttentionConfig,
                            stacked: Any = None) -> jax.Array:
        """All blocks as one ``jax.lax.scan`` over their stacked weights (``stacked``, or stacked here) and each
        layer's mask index; the body picks the layer's tile mask with ``jax.lax.switch`` over the distinct masks of
        the schedule, so the program holds one block per distinct mask, whatever the depth.
        x: (B, N, D) -> (B, N, D)."""
        distinct, index = attention.distinct_masks(self.cfg.num_layers)
        graphdef, stacked = self._run_states(0, self.cfg.num_layers, stacked)
        steps = [_block_step(mask, ctx.tokens_per_frame, attention) for mask in distinct]

        def branch(step):
            def run(x, state):
                return step(nnx.merge(graphdef, state), x, ctx.text, ctx.text_mask, ctx.t6, ctx.rope_cos, ctx.rope_sin)

            return run

        branches = [branch(step) for step in steps]

        def body(x, state, k):
            return jax.lax.switch(k, branches, x, state) if len(branches) > 1 else branches[0](x, state)

        if self.cfg.remat:
            body = jax.checkpoint(body)
        which = jnp.asarray(index, jnp.int32)
        x, _ = jax.lax.scan(lambda x, inputs: (body(x, *inputs), None), x, (stacked, which),
                            unroll=min(attention.scan_unroll, self.cfg.num_layers))
        return x

    def finish(self, ctx: ForwardContext, x: jax.Array) -> jax.Array:
        """Final modulated LayerNorm, projection and unpatchify: (B, N, D) -> (B, C_out, T, H, W)."""
        cfg = self.cfg
        dtype = cfg.compute_jnp_dtype
        shift, scale = (self.scale_shift_table[...].astype(dtype)[None] + ctx.embedded_t[:, None, :]).swapaxes(0, 1)
        x = self.proj_out(modulate(layer_norm(x, cfg.norm_eps), shift, scale))
        return unpatchify(x, ctx.grid, cfg.patch_size, cfg.out_channels)

    def __call__(
        self,
        latents: jax.Array,
        timestep: jax.Array,
        text: jax.Array,
        text_mask: jax.Array | None = None,
        *,
        attention: AttentionConfig = DENSE,
        stacked_runs: dict[tuple[int, int], Any] | None = None,
    ) -> jax.Array:
        """The noise prediction (B, C_out, T, H, W). ``stacked_runs``: the blocks' weights already stacked for
        ``attention``'s scans (:meth:`stack_block_runs` of this model), or None to stack them here."""
        attention.check_num_layers(self.cfg.num_layers)
        ctx = self.prepare(latents, timestep, text, text_mask)
        x = ctx.x
        runs = stacked_runs or {}
        if self._switched(attention):
            x = self.run_blocks_switched(ctx, x, attention, runs.get((0, self.cfg.num_layers)))
        elif attention.scan_layers:
            for start, stop in attention.layer_runs(self.cfg.num_layers):
                x = self.run_blocks(start, stop, ctx, x, attention, runs.get((start, stop)))
        else:
            for i in range(self.cfg.num_layers):
                x = self.run_block(i, ctx, x, attention)
        return self.finish(ctx, x)


def init_model(cfg: ModelConfig, seed: int = 0) -> OpenSoraT2V:
    """A model with random weights (DiT-style init)."""
    return OpenSoraT2V(cfg, rngs=nnx.Rngs(seed))


def random_model(cfg: ModelConfig, seed: int = 0, scale: float = 0.02) -> OpenSoraT2V:
    """A model with i.i.d. N(0, scale^2) weights, made tensor by tensor on the default device.

    For speed measurements at full size: one small jitted generator per distinct shape (a dozen for the
    release), instead of one program that initialises 2.77B parameters at once (whose XLA compile is slow).
    """
    graphdef, abstract = nnx.split(abstract_model(cfg))
    flat = nnx.to_flat_state(abstract)
    key = jax.random.key(seed)
    scale = jnp.float32(scale)
    leaves = [(path, var.replace(_scaled_normal(jax.random.fold_in(key, i), scale, shape=tuple(var.shape),
                                                dtype=jnp.dtype(var.dtype))))
              for i, (path, var) in enumerate(flat)]
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


@functools.partial(jax.jit, static_argnames=("shape", "dtype"))
def _scaled_normal(key: jax.Array, scale: jax.Array, *, shape: tuple[int, ...], dtype) -> jax.Array:
    """N(0, scale^2) samples of ``shape`` drawn in fp32, cast to ``dtype``; one program per (shape, dtype), kept
    across ``random_model`` calls of the process."""
    return (jax.random.normal(key, shape, jnp.float32) * scale).astype(dtype)


def abstract_model(cfg: ModelConfig) -> OpenSoraT2V:
    """The model with ShapeDtypeStruct leaves: no memory allocated (for key/shape checks and loading). Traced
    with :class:`jax_vdit.abstract_init.ShapeOnlyRngs`, so its cost grows with the model's size, not its square;
    built once per config and then unpickled (:func:`jax_vdit.abstract_init.abstract_cached`)."""
    return abstract_cached(("OpenSoraT2V", repr(cfg)), lambda rngs: OpenSoraT2V(cfg, rngs=rngs))
