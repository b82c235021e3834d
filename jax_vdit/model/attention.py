"""The one attention interface of the model, with swappable backends chosen by :class:`AttentionConfig`.

Self-attention of layer ``i`` is dense when ``config.layer_mask(i)`` is ``None`` and tile-sparse otherwise
(a frame-level :class:`pallas_kernels.TileMask`, run by ``pallas_kernels.tile_attention``). Dense backends:

* ``"reference"``: plain JAX, fp32 scores and softmax (the oracle; materialises N x N scores);
* ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")``;
* ``"cudnn"``: ``jax.nn.dot_product_attention(implementation="cudnn")`` (GPU, bf16/fp16 only);
* ``"einsum"``: plain JAX shaped for XLA:CPU (``pallas_kernels.cpu.chunked_attention``: chunks of (batch x head)
  pairs, normalisation after the value product); 3-4x faster than ``"xla"`` on a CPU at the toy teacher's shape;
* ``"auto"``: cuDNN on a CUDA GPU for bf16/fp16 inputs, einsum on CPU, else XLA.

Sequence parallelism (``AttentionConfig.sequence_axis``): self-attention runs Ulysses-style inside ``jax.shard_map``
(all-to-all tokens -> heads, full-sequence attention per head group, all-to-all back) and text cross-attention runs
locally on each token shard; see :mod:`jax_vdit.parallel`. It needs a mesh in context (``jax.set_mesh``).

q, k, v are ``(batch, tokens, heads, head_dim)`` as in ``jax.nn.dot_product_attention``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp

from jax_vdit import parallel

DENSE_BACKENDS = ("auto", "reference", "xla", "cudnn", "einsum")


@dataclass(frozen=True)
class AttentionConfig:
    """How self-attention runs, per layer. Hashable: pass it as a static argument to ``jit``.

    ``masks``: one entry per layer, ``None`` for dense or a ``pallas_kernels.TileMask`` for that layer; ``None``
    for the whole field means every layer is dense. ``tile_backend`` is a ``pallas_kernels.tile_attention``
    backend name. ``interpret`` runs Pallas kernels in interpret mode (CPU tests).

    ``sequence_axis``: name of the mesh axis the tokens are split over (e.g. ``"seq"``): self-attention becomes
    Ulysses sequence-parallel and cross-attention stays local per token shard; ``None`` (default): no sequence
    parallelism. ``batch_axis``: the mesh axis the batch is split over inside those attention regions (e.g.
    ``"data"``; ignored when the batch is not divisible by its size). Both need the call to run under
    ``jax.set_mesh(mesh)``; :func:`sequence_parallel` (config, mesh) fills them from the rule table.

    ``scan_layers`` (default True): the transformer runs each maximal run of consecutive layers that share one
    tile mask as one ``jax.lax.scan`` over the layers' stacked weights, so XLA compiles one block per run instead
    of one per layer (the same function; fp32 results agree with the unrolled loop to float rounding). False:
    the plain Python loop over the blocks (one compiled block per layer), kept for comparison.

    ``mixed_masks`` says how a scanned forward treats a schedule whose masks change from layer to layer (a searched
    schedule such as 6:3 7:2 6:3 5:4 ...), where runs of equal masks are short: ``"runs"`` (default) scans each
    run, so such a schedule compiles about one block per layer; ``"switch"`` scans all layers once and picks the
    layer's mask with ``jax.lax.switch`` over the distinct masks (one block program per distinct mask, whatever
    the depth; the layer's branch index is data).

    ``scan_unroll`` (default 1): layers per iteration of those scans (``jax.lax.scan``'s ``unroll``): 2 puts two
    blocks in the loop body, which lets XLA overlap and fuse across a layer boundary at the cost of one more block
    to compile; the result is the same function.
    """

    dense_backend: str = "auto"
    tile_backend: str = "auto"
    masks: tuple | None = None
    interpret: bool = False
    sequence_axis: str | None = None
    batch_axis: str | None = None
    scan_layers: bool = True
    mixed_masks: str = "runs"
    scan_unroll: int = 1

    def __post_init__(self) -> None:
        if self.dense_backend not in DENSE_BACKENDS:
            raise ValueError(f"dense_backend must be one of {DENSE_BACKENDS}, got {self.dense_backend!r}")
        if self.masks is not None and not isinstance(self.masks, tuple):
            object.__setattr__(self, "masks", tuple(self.masks))
        for name in ("sequence_axis", "batch_axis"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a mesh axis name (str) or None, got {value!r}")
        if not isinstance(self.scan_layers, bool):
            raise ValueError(f"scan_layers must be a bool, got {self.scan_layers!r}")
        if self.mixed_masks not in ("runs", "switch"):
            raise ValueError(f"mixed_masks must be 'runs' or 'switch', got {self.mixed_masks!r}")
        if isinstance(self.scan_unroll, bool) or not isinstance(self.scan_unroll, int) or self.scan_unroll < 1:
            raise ValueError(f"scan_unroll must be an int >= 1, got {self.scan_unroll!r}")
        if self.sequence_axis is not None and self.sequence_axis == self.batch_axis:
            raise ValueError(f"sequence_axis and batch_axis must be different mesh axes, both are {self.batch_axis!r}")

    def layer_mask(self, layer: int):
        """The tile mask of ``layer`` (``None`` = dense)."""
        if self.masks is None:
            return None
        if layer >= len(self.masks):
            raise ValueError(f"mask schedule has {len(self.masks)} entries but layer {layer} was asked for")
        return self.masks[layer]

    def check_num_layers(self, num_layers: int) -> None:
        if self.masks is not None and len(self.masks) != num_layers:
            raise ValueError(f"mask schedule has {len(self.masks)} entries, the model has {num_layers} layers")

    def layer_runs(self, num_layers: int) -> tuple[tuple[int, int], ...]:
        """Maximal runs ``(start, stop)`` of consecutive layers with equal tile masks (``None`` = dense).

        E.g. masks ``[None, A, A, None]`` -> ``((0, 1), (1, 3), (3, 4))``; all-dense -> ``((0, num_layers),)``.
        """
        self.check_num_layers(num_layers)
        runs: list[list[int]] = []
        for i in range(num_layers):
            if runs and self.layer_mask(i) == self.layer_mask(runs[-1][0]):
                runs[-1][1] = i + 1
            else:
                runs.append([i, i + 1])
        return tuple((a, b) for a, b in runs)


    def distinct_masks(self, num_layers: int) -> tuple[tuple, tuple[int, ...]]:
        """(the distinct masks in order of first use, each layer's index into them); ``None`` = dense.

        E.g. masks ``[A, B, A, None]`` -> ``((A, B, None), (0, 1, 0, 2))``.
        """
        self.check_num_layers(num_layers)
        distinct: list = []
        index = []
        for i in range(num_layers):
            mask = self.layer_mask(i)
            if mask not in distinct:
                distinct.append(mask)
            index.append(distinct.index(mask))
        return tuple(distinct), tuple(index)


DENSE = AttentionConfig()


def _on_cuda_gpu() -> bool:
    return jax.default_backend() == "gpu"


def resolve_dense_backend(name: str, dtype) -> str:
    """Map ``"auto"`` to a concrete dense backend for the current platform and dtype."""
    if name != "auto":
        return name
    if _on_cuda_gpu() and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
        return "cudnn"
    if jax.default_backend() == "cpu":
        return "einsum"
    return "xla"


def reference_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None, scale: float | None = None
) -> jax.Array:
    """Softmax attention in plain JAX with fp32 scores.

    q: (B, Nq, H, D); k, v: (B, Nk, H, D); key_mask: optional bool (B, Nk), True = attend.
    Returns (B, Nq, H, D) in q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * scale
    if key_mask is not None:
        scores = jnp.where(key_mask[:, None, None, :], scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return out.astype(q.dtype)


def dense_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, backend: str = "auto", key_mask: jax.Array | None = None
) -> jax.Array:
    """Dense attention through the chosen backend; ``key_mask`` (B, Nk) bool masks keys."""
    backend = resolve_dense_backend(backend, q.dtype)
    if backend == "reference":
        return reference_attention(q, k, v, key_mask)
    if backend == "einsum":
        from pallas_kernels.cpu import chunked_attention

        return chunked_attention(q, k, v, key_mask=key_mask)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if backend == "cudnn":
        # a general key mask goes to cuDNN as an additive bias (exp(-30000) == 0 in every float type); cuDNN
        # wants the bias's two sequence dims in full: (B, 1, Nq, Nk)
        bias = None
        if key_mask is not None:
            bias = jnp.where(mask, 0.0, -30000.0).astype(q.dtype)
            bias = jnp.broadcast_to(bias, (q.shape[0], 1, q.shape[1], k.shape[1]))
        return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="cudnn")
    if backend == "xla":
        return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")
    raise ValueError(f"unknown dense attention backend {backend!r}")


def self_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    tile_mask,
    tokens_per_frame: int,
    config: AttentionConfig,
) -> jax.Array:
    """Video self-attention: dense if ``tile_mask`` is None, else tile-sparse over frames.

    q, k, v: (B, N, H, D) with N = frames x tokens_per_frame, tokens frame-major. With ``config.sequence_axis``
    the arrays are global views split over tokens and attention runs Ulysses-style (``jax_vdit.parallel``); the
    tile mask is over the full sequence and applies unchanged.
    """

    def attend(q, k, v):
        if tile_mask is None:
            return dense_attention(q, k, v, backend=config.dense_backend)
        import pallas_kernels

        return pallas_kernels.tile_attention(
            q, k, v, tile_mask, tokens_per_frame=tokens_per_frame, backend=config.tile_backend,
            interpret=config.interpret,
        )

    if config.sequence_axis is None:
        return attend(q, k, v)
    return parallel.ulysses_attention(attend, q, k, v, sequence_axis=config.sequence_axis, batch_axis=config.batch_axis)


def cross_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, *, key_mask: jax.Array | None, config: AttentionConfig
) -> jax.Array:
    """Text cross-attention: dense, keys masked by ``key_mask`` (B, L) bool.

    q: (B, N, H, D) video queries; k, v: (B, L, H, D) text. With ``config.sequence_axis`` each device attends from
    its own token shard to the full (replicated) text, with no communication.
    """

    def attend(q, k, v, key_mask):
        return dense_attention(q, k, v, backend=config.dense_backend, key_mask=key_mask)

    if config.sequence_axis is None:
        return attend(q, k, v, key_mask)
    return parallel.local_query_attention(attend, q, k, v, key_mask, sequence_axis=config.sequence_axis,
                                 batch_axis=config.batch_axis)


def attention_from_spec(spec: str | None, num_layers: int, num_frames: int, *, tile_backend: str = "auto",
                        dense_backend: str = "auto") -> AttentionConfig:
    """``None``/"dense" -> dense; "k:m" (e.g. "1:7") -> that mask on every layer; a path -> a mask schedule JSON."""
    if spec is None or spec == "dense":
        return AttentionConfig(dense_backend=dense_backend, tile_backend=tile_backend)
    import pallas_kernels

    if Path(spec).suffix == ".json" or Path(spec).is_file():
        schedule = pallas_kernels.MaskSchedule.load(spec)
        masks = tuple(schedule)
        if len(masks) != num_layers:
            raise ValueError(f"mask schedule {spec} has {len(masks)} layers, the model has {num_layers}")
        for i, m in enumerate(masks):
            if m is not None and m.num_frames != num_frames:
                raise ValueError(f"mask schedule layer {i} is for {m.num_frames} latent frames, video has {num_frames}")
    else:
        mask = pallas_kernels.TileMask.from_string(spec, num_frames)
        masks = (mask,) * num_layers
    return AttentionConfig(dense_backend=dense_backend, tile_backend=tile_backend, masks=masks)


def sequence_parallel(attention: AttentionConfig, mesh: jax.sharding.Mesh,
                      rules: parallel.ShardingRules = parallel.DEFAULT_RULES) -> AttentionConfig:
    """``attention`` (an ``AttentionConfig``) with ``sequence_axis``/``batch_axis`` taken from ``rules``, checked
    against ``mesh``. Fields the caller already set are kept."""
    seq, batch = rules.axis("tokens"), rules.axis("batch")
    names = tuple(mesh.axis_names)
    seq = attention.sequence_axis or (seq if seq in names else None)
    batch = attention.batch_axis or (batch if batch in names else None)
    for field_name, axis in (("sequence_axis", seq), ("batch_axis", batch)):
        if axis is not None and axis not in names:
            raise ValueError(f"AttentionConfig.{field_name}={axis!r} is not an axis of the mesh {names}")
    if seq is not None and seq == batch:
        raise ValueError(f"sequence_axis and batch_axis must differ, both are {seq!r}")
    return dataclasses.replace(attention, sequence_axis=seq, batch_axis=batch)
