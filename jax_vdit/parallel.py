"""Sequence parallelism for OpenSoraT2V on a JAX device mesh (Ulysses all-to-all inside ``jax.shard_map``).

The engine is JAX's own: a :class:`jax.sharding.Mesh` with named axes, ``NamedSharding`` placement, sharding
constraints, and XLA collectives (NCCL on GPU, ICI on TPU) inside ``jax.shard_map``. Multi-host works the same way
after ``jax.distributed.initialize()``: :func:`make_mesh` spans ``jax.devices()`` (all hosts).

Layout
------
* Mesh axes ``"data"`` (the batch: the CFG pair [negative; positive] in sampling, the batch in training) and
  ``"seq"`` (tokens). Build one with :func:`make_mesh`.
* One rule table, :class:`ShardingRules`, maps logical axes (``batch``, ``tokens``, ``heads``, ``embed``, ``mlp``)
  to mesh axes. By default parameters are replicated, the batch is split over ``data`` and tokens over ``seq``.
* Between attention layers activations are (B, N, D) split over tokens; every token-wise op (projections, RoPE with
  the *global* position tables, LayerNorm, MLP) runs locally on its token shard under GSPMD.
* Self-attention (:func:`ulysses_attention`, chosen by ``AttentionConfig.sequence_axis``): inside ``jax.shard_map``,
  an all-to-all turns the token shard (B, N/P, H, D) into a head shard (B, N, H/P, D); each device runs
  full-sequence attention for its heads (dense cuDNN/XLA, or ``pallas_kernels.tile_attention`` with the layer's
  frame mask, which is over the full sequence and so applies unchanged); a second all-to-all returns to tokens.
  Heads must be divisible by the ``seq`` axis size (24 heads: 1, 2, 3, 4, 6, 8, 12, 24 devices).
* Text cross-attention (:func:`local_query_attention`) stays local: queries keep their token shard, the (short)
  text keys/values are replicated over ``seq``. No communication.

Autodiff goes through ``shard_map`` and ``all_to_all`` (whose transpose is the reverse all-to-all); parameter
gradients are reduced over both mesh axes by XLA, so the training step is the single-device step.

Entry points: ``sampling.sample(..., mesh=mesh)``, ``training.train(..., mesh=mesh)`` /
``training.make_train_step(..., mesh=mesh)``; or by hand: ``AttentionConfig(sequence_axis="seq",
batch_axis="data")`` (see ``jax_vdit.model.attention.sequence_parallel``) with the call made under
``jax.set_mesh(mesh)``. This module is a leaf: it imports nothing from the model; the model asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
SEQ_AXIS = "seq"
LOGICAL_AXES = ("batch", "tokens", "heads", "embed", "mlp")

__all__ = [
    "DATA_AXIS", "DEFAULT_RULES", "LOGICAL_AXES", "SEQ_AXIS", "ShardingRules", "as_auto_mesh", "constrain_batch",
    "context_mesh", "local_query_attention", "make_mesh", "param_logical_axes", "place",
    "replicate", "replicate_tree", "shard_batch", "shard_local_batch", "shard_model", "shard_tree", "tree_shardings",
    "ulysses_attention",
]


# ------------------------------------------------------------------------------------------------------------
# mesh


def make_mesh(seq: int | None = None, data: int = 1, *, devices=None) -> Mesh:
    """A ``("data", "seq")`` mesh of ``data * seq`` devices (all of ``jax.devices()``, every host, by default).

    ``seq`` defaults to ``len(devices) // data``. The token axis is the minor (fastest-varying) one, so with
    ``jax.make_mesh``'s device order its all-to-alls stay inside a host (NVLink) when ``seq`` <= GPUs per host.
    Axes are ``AxisType.Auto``: the model is written for GSPMD propagation plus explicit ``shard_map`` regions.
    """
    devices = list(jax.devices() if devices is None else devices)
    if data < 1:
        raise ValueError(f"data axis size must be >= 1, got {data}")
    if seq is None:
        if len(devices) % data:
            raise ValueError(f"{len(devices)} devices cannot be split into data={data} groups")
        seq = len(devices) // data
    if seq < 1:
        raise ValueError(f"seq axis size must be >= 1, got {seq}")
    if data * seq > len(devices):
        raise ValueError(f"a mesh of data={data} x seq={seq} needs {data * seq} devices, only {len(devices)} exist")
    return jax.make_mesh((data, seq), (DATA_AXIS, SEQ_AXIS), axis_types=(AxisType.Auto, AxisType.Auto),
                         devices=devices[: data * seq])


def as_auto_mesh(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis ``AxisType.Auto`` (``jax.make_mesh`` defaults to Explicit axes)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def context_mesh():
    """The mesh set by ``jax.set_mesh`` (an ``AbstractMesh`` inside ``jit``), or None when there is none."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


# ------------------------------------------------------------------------------------------------------------
# rules: logical axes -> mesh axes


@dataclass(frozen=True)
class ShardingRules:
    """The one table mapping logical axes to mesh axes (``None`` = replicated). Hashable.

    Logical axes: ``batch`` (samples; the CFG pair), ``tokens`` (video tokens), ``heads`` (the D = heads x head_dim
    output side of q/k/v projections, input side of ``to_out``), ``embed`` (the model width D), ``mlp`` (the 4D
    hidden width of the MLP). ``batch`` and ``tokens`` place activations and select the attention's mesh axes;
    ``heads``/``embed``/``mlp`` place parameters (replicated by default, as Ulysses expects; mapping e.g. ``mlp`` to
    ``"seq"`` stores MLP weights split, and XLA gathers them where used). A dimension not divisible by its mesh
    axis size is replicated.
    """

    rules: tuple[tuple[str, str | None], ...] = (
        ("batch", DATA_AXIS), ("tokens", SEQ_AXIS), ("heads", None), ("embed", None), ("mlp", None))
    # parameter path (names, e.g. ("blocks", "0", "attn1", "to_q", "kernel")) -> logical axes, as annotated where
    # the parameters are defined (Param metadata ``logical_axes``; :meth:`for_model`). Empty: the name-matching
    # fallback :func:`param_logical_axes`.
    param_axes: tuple[tuple[tuple[str, ...], tuple[str | None, ...]], ...] = ()

    def __post_init__(self) -> None:
        rules = tuple((str(k), None if v is None else str(v)) for k, v in self.rules)
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "param_axes", tuple((tuple(str(n) for n in path), tuple(axes))
                                                     for path, axes in self.param_axes))
        for path, axes in self.param_axes:
            bad = [a for a in axes if a is not None and a not in LOGICAL_AXES]
            if bad:
                raise ValueError(f"parameter {'/'.join(path)} is annotated with unknown logical axes {bad}")
        names = [k for k, _ in rules]
        unknown = sorted(set(names) - set(LOGICAL_AXES))
        if unknown:
            raise ValueError(f"unknown logical axes {unknown} in sharding rules; known: {LOGICAL_AXES}")
        if len(set(names)) != len(names):
            raise ValueError(f"sharding rules name a logical axis twice: {names}")

    def axis(self, logical: str | None) -> str | None:
        """The mesh axis of a logical axis (None: replicated, also for logical axes the table does not list)."""
        if logical is None:
            return None
        if logical not in LOGICAL_AXES:
            raise ValueError(f"unknown logical axis {logical!r}; known: {LOGICAL_AXES}")
        return dict(self.rules).get(logical)

    def with_rules(self, **changes: str | None) -> ShardingRules:
        """A copy with some logical axes remapped, e.g. ``DEFAULT_RULES.with_rules(mlp="seq")``."""
        table = dict(self.rules)
        table.update(changes)
        return ShardingRules(tuple(table.items()), self.param_axes)

    def fsdp(self) -> ShardingRules:
        """A copy that also shards parameters over the ``data`` axis (FSDP / ZeRO-3): the ``embed`` dimension of
        every annotated weight is split over ``"data"``, so parameters, gradients, AdamW moments and EMAs are
        stored 1/data per device; XLA all-gathers a weight where it is used and reduce-scatters its gradient."""
        return self.with_rules(embed=DATA_AXIS)

    def for_model(self, model: Any) -> ShardingRules:
        """A copy carrying the logical axes annotated on ``model``'s parameters (Param metadata ``logical_axes``,
        set where the layers are defined, e.g. ``jax_vdit.model.block``). Trees that mirror the parameters
        (``nnx`` state, pure parameter dicts, optimiser moments, EMAs, a frozen teacher copy) are matched by the
        longest parameter path that ends their own path; other leaves are replicated."""
        from flax import nnx

        table = []
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            axes = var.get_metadata().get("logical_axes")
            if axes is not None:
                table.append((tuple(str(p) for p in path), tuple(axes)))
        return ShardingRules(self.rules, tuple(table))

    def leaf_axes(self, names: tuple[str, ...], ndim: int) -> tuple[str | None, ...]:
        """Logical axes of a parameter-like leaf from its path names: the annotation of the longest parameter
        path that is a suffix of ``names`` (leading extra dims, e.g. a stacked layer axis, are unnamed), else
        :func:`param_logical_axes` when the table is empty, else replicated."""
        if not self.param_axes:
            return param_logical_axes(names, ndim)
        table = self._table()
        for k in range(len(names), 0, -1):
            axes = table.get(names[-k:])
            if axes is not None and len(axes) <= ndim:
                return (None,) * (ndim - len(axes)) + axes
        return (None,) * ndim

    def _table(self) -> dict:
        table = self.__dict__.get("_param_table")
        if table is None:
            table = dict(self.param_axes)
            object.__setattr__(self, "_param_table", table)
        return table

    def spec(self, logical_axes, shape=None, mesh=None) -> P:
        """PartitionSpec of an array with these logical axes; with ``shape`` and ``mesh``, dims that are not
        divisible (or axes absent from the mesh, or a mesh axis already used) become replicated."""
        out, used = [], set()
        for i, name in enumerate(logical_axes):
            axis = self.axis(name)
            if axis is not None and mesh is not None:
                size = dict(mesh.shape).get(axis)
                if size is None or axis in used or (shape is not None and shape[i] % size):
                    axis = None
            if axis is not None:
                used.add(axis)
            out.append(axis)
        return P(*out)


DEFAULT_RULES = ShardingRules()

_QKV = ("to_q", "to_k", "to_v")


def param_logical_axes(names: tuple[str, ...], ndim: int) -> tuple[str | None, ...]:
    """Logical axes of a model parameter (or an optimiser/EMA leaf mirroring one) from its path names.

    ``names``: the string keys of the pytree path, e.g. ``("blocks", "3", "attn1", "to_q", "kernel")``.
    Attention and MLP weights of the blocks get ``heads``/``mlp``/``embed`` axes; everything else (embeddings,
    adaLN, caption projection, final layer, scalars) is unnamed and so replicated.
    """
    if len(names) >= 2 and names[-1] in ("kernel", "bias"):
        leaf, parent = names[-1], names[-2]
        grand = names[-3] if len(names) >= 3 else ""
        table = None
        if parent in _QKV and grand in ("attn1", "attn2"):
            table = {"kernel": ("embed", "heads"), "bias": ("heads",)}
        elif parent == "to_out" and grand in ("attn1", "attn2"):
            table = {"kernel": ("heads", "embed"), "bias": ("embed",)}
        elif parent == "proj_in" and grand == "ff":
            table = {"kernel": ("embed", "mlp"), "bias": ("mlp",)}
        elif parent == "proj_out" and grand == "ff":
            table = {"kernel": ("mlp", "embed"), "bias": ("embed",)}
        if table is not None and len(table[leaf]) == ndim:
            return table[leaf]
    return (None,) * ndim


def _path_names(path) -> tuple[str, ...]:
    names = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            names.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            if entry.name != "value":
                names.append(entry.name)
        elif isinstance(entry, jax.tree_util.SequenceKey):
            names.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.FlattenedIndexKey):
            names.append(str(entry.key))
    return tuple(names)


def tree_shardings(tree: Any, mesh: Mesh, rules: ShardingRules = DEFAULT_RULES) -> Any:
    """``NamedSharding`` for every array leaf of a parameter-like tree (model state, train state, EMAs)."""

    def one(path, leaf):
        shape = np.shape(leaf)
        axes = rules.leaf_axes(_path_names(path), len(shape))
        return NamedSharding(mesh, rules.spec(axes, shape, mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def place(x: Any, sharding: NamedSharding) -> jax.Array:
    """Put a host or device array onto ``sharding``; every process must pass the same global value (multi-host)."""
    if sharding.is_fully_addressable:
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = place(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate_tree(tree: Any, mesh: Mesh) -> Any:
    """Place every array leaf of ``tree`` (None leaves stay None) replicated on ``mesh``."""
    return jax.tree.map(lambda x: place(x, NamedSharding(mesh, P())), tree)


def shard_tree(tree: Any, mesh: Mesh, rules: ShardingRules = DEFAULT_RULES) -> Any:
    """Place a parameter-like tree on ``mesh`` by ``rules`` (replicated by default)."""
    return jax.tree.map(place, tree, tree_shardings(tree, mesh, rules))


def shard_model(model, mesh: Mesh | None, rules: ShardingRules = DEFAULT_RULES):
    """Move an ``nnx.Module``'s state onto ``mesh`` by ``rules`` in place (``mesh=None``: back to the default
    device), so that repeated ``sample(..., mesh=mesh)`` calls do not copy the weights again. Returns ``model``."""
    from flax import nnx

    state = nnx.state(model)
    placed = jax.device_put(state, jax.devices()[0]) if mesh is None else shard_tree(state, mesh, rules)
    nnx.update(model, placed)
    return model


def shard_batch(batch: Mapping[str, Any], mesh: Mesh, rules: ShardingRules = DEFAULT_RULES) -> dict[str, jax.Array]:
    """Place a batch (every entry's leading axis is the batch) with the batch split over the ``batch`` rule's axis
    (replicated where the batch size is not divisible by that axis)."""
    out = {}
    for name, value in batch.items():
        shape = np.shape(value)
        spec = rules.spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh) if shape else P()
        out[name] = place(value, NamedSharding(mesh, spec))
    return out


def shard_local_batch(batch: Mapping[str, Any], mesh: Mesh, rules: ShardingRules = DEFAULT_RULES
                      ) -> dict[str, jax.Array]:
    """Place a batch of which every process holds only its own rows (e.g. ``jax_vdit.data.ShardLoader`` with
    ``process_count > 1``): the global batch is the processes' rows concatenated in process order, split over the
    ``batch`` rule's axis. With one process this is :func:`shard_batch`."""
    if jax.process_count() == 1:
        return shard_batch(batch, mesh, rules)
    out = {}
    for name, value in batch.items():
        local = np.asarray(value)
        shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
        spec = rules.spec(("batch",) + (None,) * (local.ndim - 1), shape, mesh)
        if spec[0] is None:
            raise ValueError(f"batch entry {name!r}: the global batch {shape[0]} cannot be split over the "
                             f"{rules.axis('batch')!r} mesh axis, so processes cannot each hold their own rows")
        out[name] = jax.make_array_from_process_local_data(NamedSharding(mesh, spec), local, shape)
    return out


# ------------------------------------------------------------------------------------------------------------
# constraints inside jit (no-ops without a mesh in context)


def _auto_context_mesh():
    """The context mesh if all its axes are ``Auto`` (sharding constraints apply), else None."""
    mesh = context_mesh()
    return mesh if mesh is not None and mesh.are_all_axes_auto else None


def constrain_batch(x: jax.Array | None, batch_axis: str | None) -> jax.Array | None:
    """Split ``x``'s leading (batch) axis over ``batch_axis`` of the context mesh, if divisible (a no-op without
    a mesh, or on a mesh with Explicit axes, where shardings are carried by the types instead)."""
    mesh = _auto_context_mesh()
    if x is None or batch_axis is None or mesh is None or batch_axis not in mesh.axis_names:
        return x
    if x.shape[0] % dict(mesh.shape)[batch_axis]:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(batch_axis)))


def replicate(x: jax.Array) -> jax.Array:
    """Replicate ``x`` over the context mesh (so every host can read it); a no-op without an Auto-axes mesh."""
    mesh = _auto_context_mesh()
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P()))


# ------------------------------------------------------------------------------------------------------------
# attention inside shard_map


def _mesh_for(sequence_axis: str, batch_axis: str | None, what: str):
    mesh = context_mesh()
    if mesh is None:
        raise ValueError(
            f"{what}: AttentionConfig.sequence_axis={sequence_axis!r} needs a device mesh in context; call under "
            "`with jax.set_mesh(mesh):` or pass mesh= to sampling.sample / training.train")
    names = tuple(mesh.axis_names)
    for field_name, axis in (("sequence_axis", sequence_axis), ("batch_axis", batch_axis)):
        if axis is not None and axis not in names:
            raise ValueError(f"{what}: AttentionConfig.{field_name}={axis!r} is not an axis of the mesh {names}")
    return mesh


def _batch_spec(mesh, batch_axis: str | None, batch: int) -> str | None:
    if batch_axis is None or batch % dict(mesh.shape)[batch_axis]:
        return None
    return batch_axis


def ulysses_attention(attend: Callable[[jax.Array, jax.Array, jax.Array], jax.Array], q: jax.Array, k: jax.Array,
                      v: jax.Array, *, sequence_axis: str, batch_axis: str | None = None) -> jax.Array:
    """Ulysses sequence-parallel self-attention over mesh axis ``sequence_axis`` of the context mesh.

    q, k, v: global (B, N, H, D) arrays, split over tokens (N) across ``sequence_axis`` and over the batch across
    ``batch_axis`` (if B is divisible by its size). ``attend``: full-sequence attention ``(B', N, H', D) x 3 ->
    (B', N, H', D)`` (dense or tile-sparse; it sees every token, so frame masks apply unchanged). Returns (B, N, H,
    D) split like q. Raises ValueError if H or N is not divisible by the axis size.
    """
    mesh = _mesh_for(sequence_axis, batch_axis, "sequence-parallel self-attention")
    size = dict(mesh.shape)[sequence_axis]
    b, n, h, _ = q.shape
    if h % size:
        raise ValueError(
            f"Ulysses sequence parallelism splits the {h} attention heads over the {size} devices of mesh axis "
            f"{sequence_axis!r}, but {h} is not divisible by {size}; use a {sequence_axis!r} axis size that divides "
            f"{h} (ring attention is not implemented)")
    if n % size:
        raise ValueError(
            f"sequence-parallel self-attention: the {n} tokens are not divisible by the {size} devices of mesh axis "
            f"{sequence_axis!r}")
    spec = P(_batch_spec(mesh, batch_axis, b), sequence_axis, None, None)

    def per_device(q, k, v):
        if size > 1:  # tokens -> heads: (b, N/P, H, D) -> (b, N, H/P, D), tokens concatenated in mesh order
            q, k, v = (jax.lax.all_to_all(x, sequence_axis, 2, 1, tiled=True) for x in (q, k, v))
        out = attend(q, k, v)
        if size > 1:  # heads -> tokens
            out = jax.lax.all_to_all(out, sequence_axis, 1, 2, tiled=True)
        return out

    # check_vma=False: Pallas kernels (tile_attention) declare outputs without varying-mesh-axis types
    return jax.shard_map(per_device, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False)(q, k, v)


def local_query_attention(attend: Callable[..., jax.Array], q: jax.Array, k: jax.Array, v: jax.Array,
                          key_mask: jax.Array | None, *, sequence_axis: str,
                          batch_axis: str | None = None) -> jax.Array:
    """Cross-attention with token-split queries and replicated (text) keys: local, no communication.

    q: (B, N, H, D) split over ``sequence_axis`` on N; k, v: (B, L, H, D); key_mask: (B, L) bool or None.
    ``attend(q, k, v, key_mask)`` is any dense attention. Returns (B, N, H, D) split like q.
    """
    mesh = _mesh_for(sequence_axis, batch_axis, "sequence-parallel cross-attention")
    size = dict(mesh.shape)[sequence_axis]
    b, n = q.shape[:2]
    if n % size:
        raise ValueError(
            f"sequence-parallel cross-attention: the {n} query tokens are not divisible by the {size} devices of "
            f"mesh axis {sequence_axis!r}")
    bs = _batch_spec(mesh, batch_axis, b)
    q_spec, kv_spec = P(bs, sequence_axis, None, None), P(bs, None, None, None)
    if key_mask is None:
        return jax.shard_map(lambda q, k, v: attend(q, k, v, None), mesh=mesh, check_vma=False,
                             in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec)(q, k, v)
    return jax.shard_map(attend, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, P(bs, None)), out_specs=q_spec,
                         check_vma=False)(q, k, v, key_mask)


def tokens_per_device(num_tokens: int, mesh: Mesh, rules: ShardingRules = DEFAULT_RULES) -> int:
    """N / (size of the token axis): the activation rows each device holds between attention layers."""
    axis = rules.axis("tokens")
    return num_tokens // (dict(mesh.shape).get(axis, 1) if axis else 1)
