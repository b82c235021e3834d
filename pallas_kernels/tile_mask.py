"""Frame-level tile masks for Attention Tile (Efficient-vDiT), and per-layer mask schedules.

A *tile* is the block of the attention map between one query frame and one key frame. A :class:`TileMask` is a
T x T boolean matrix over latent frames: ``matrix[i, j]`` is True when query frame ``i`` attends to key frame ``j``.
It is immutable and hashable (the matrix is held as ``bytes``), so it can be a static argument of ``jax.jit`` and a
key of ``functools.lru_cache``.

Families:

* ``TileMask.full(T)``: dense attention.
* ``TileMask.k_m(k, T)`` / ``TileMask.from_string("k:m")``: the paper's "k:m" masks (T = k + m). Every frame attends
  to itself and to the k global frames (the first k latent frames); the global frames attend to every frame.
  Kept tiles = 2kT - k^2 + T - k.
* ``TileMask.window(w, T, num_global=g)`` / ``from_string("window:w[:g]")``: frames within +-w of each other, plus g
  global frames (full rows and columns), an extension beyond the paper.
* ``TileMask.from_array(matrix)``: any user-given T x T boolean matrix.

Every query frame must keep at least one key frame; construction fails with a ``ValueError`` otherwise.

A :class:`MaskSchedule` holds one ``TileMask`` (or ``None`` = dense) per layer, with JSON load/save.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TileMask", "MaskSchedule", "as_tile_mask", "kept_tiles_k_m"]


def kept_tiles_k_m(k: int, num_frames: int) -> int:
    """Analytic number of kept tiles of the k:m mask with T = ``num_frames``: 2kT - k^2 + T - k."""
    t = num_frames
    return 2 * k * t - k * k + t - k


@dataclass(frozen=True)
class TileMask:
    """A T x T boolean tile mask over latent frames (rows: query frames, columns: key frames).

    Attributes:
      num_frames: T, the number of latent frames.
      bits: the matrix, row-major, one byte (0 or 1) per tile; T * T bytes.
      name: a label for printing and JSON (e.g. ``"1:7"``); not part of equality or the hash.
    """

    num_frames: int
    bits: bytes
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        t = self.num_frames
        if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 1:
            raise ValueError(f"num_frames must be a positive int, got {t!r}")
        if not isinstance(self.bits, (bytes, bytearray)):
            raise ValueError(f"bits must be bytes, got {type(self.bits).__name__}")
        if len(self.bits) != t * t:
            raise ValueError(f"bits must hold T*T = {t * t} bytes for T = {t}, got {len(self.bits)}")
        if any(b not in (0, 1) for b in self.bits):
            raise ValueError("bits must contain only 0 and 1 bytes")
        object.__setattr__(self, "num_frames", int(t))
        object.__setattr__(self, "bits", bytes(self.bits))
        empty = [i for i in range(t) if not any(self.bits[i * t:(i + 1) * t])]
        if empty:
            raise ValueError(
                f"tile mask has empty rows: query frame(s) {empty} keep no key frame; every query frame must "
                "attend to at least one key frame"
            )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_array(cls, matrix: Any, name: str = "") -> TileMask:
        """Build from a T x T boolean matrix (NumPy array, nested lists of bools, or a concrete jax array).

        Raises ValueError if the matrix is not 2-D, not square, not boolean, or has a row with no kept key frame.
        """
        try:
            arr = np.asarray(matrix)
        except Exception as e:  # e.g. a tracer inside jit
            raise ValueError(
                "tile_mask must be a concrete (static) T x T boolean matrix, not a traced value; build a TileMask "
                "outside jit and pass it as a static argument"
            ) from e
        if arr.ndim != 2:
            raise ValueError(f"tile mask must be a 2-D T x T matrix, got shape {arr.shape}")
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"tile mask must be square (T x T), got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError("tile mask must have at least one frame (got a 0 x 0 matrix)")
        if arr.dtype != np.bool_:
            raise ValueError(f"tile mask must be boolean, got dtype {arr.dtype}")
        return cls(int(arr.shape[0]), arr.astype(np.uint8).tobytes(), name=name)

    @classmethod
    def full(cls, num_frames: int) -> TileMask:
        """Dense attention over ``num_frames`` frames."""
        _check_frames(num_frames)
        return cls(num_frames, b"\x01" * (num_frames * num_frames), name="full")

    @classmethod
    def k_m(cls, k: int, num_frames: int) -> TileMask:
        """The paper's k:m mask with T = ``num_frames`` and m = T - k (0 <= k <= T).

        Diagonal tiles, plus full rows and columns for the first k (global) frames.
        """
        _check_frames(num_frames)
        if not isinstance(k, (int, np.integer)) or not 0 <= k <= num_frames:
            raise ValueError(f"k must be an int in [0, T={num_frames}], got {k!r}")
        m = np.eye(num_frames, dtype=bool)
        m[:k, :] = True
        m[:, :k] = True
        name = "full" if k >= num_frames - 1 and m.all() else f"{k}:{num_frames - k}"
        return cls.from_array(m, name=name)

    @classmethod
    def window(cls, w: int, num_frames: int, num_global: int = 0) -> TileMask:
        """Temporal window: frame i attends to frames j with |i - j| <= w, plus ``num_global`` global frames."""
        _check_frames(num_frames)
        if not isinstance(w, (int, np.integer)) or w < 0:
            raise ValueError(f"window half-width w must be an int >= 0, got {w!r}")
        if not 0 <= num_global <= num_frames:
            raise ValueError(f"num_global must be in [0, T={num_frames}], got {num_global}")
        i = np.arange(num_frames)
        m = np.abs(i[:, None] - i[None, :]) <= w
        m[:num_global, :] = True
        m[:, :num_global] = True
        name = f"window:{w}" + (f":{num_global}" if num_global else "")
        return cls.from_array(m, name=name)

    @classmethod
    def from_string(cls, spec: str, num_frames: int | None = None) -> TileMask:
        """Parse ``"full"``, ``"k:m"`` (e.g. ``"1:7"``) or ``"window:w"`` / ``"window:w:g"``.

        For ``"k:m"`` the number of frames is k + m; if ``num_frames`` is given it must agree. ``"full"`` and
        ``"window:..."`` need ``num_frames``.
        """
        if not isinstance(spec, str):
            raise ValueError(f"mask spec must be a string, got {type(spec).__name__}")
        s = spec.strip().lower()
        if s in ("full", "dense"):
            if num_frames is None:
                raise ValueError("mask spec 'full' needs num_frames")
            return cls.full(num_frames)
        parts = s.split(":")
        if parts[0] == "window":
            if num_frames is None:
                raise ValueError(f"mask spec {spec!r} needs num_frames")
            if len(parts) not in (2, 3):
                raise ValueError(f"window mask spec must be 'window:w' or 'window:w:g', got {spec!r}")
            try:
                vals = [int(p) for p in parts[1:]]
            except ValueError:
                raise ValueError(f"window mask spec must hold integers, got {spec!r}") from None
            return cls.window(vals[0], num_frames, num_global=vals[1] if len(vals) == 2 else 0)
        if len(parts) != 2:
            raise ValueError(f"unknown mask spec {spec!r}: expected 'full', 'k:m' or 'window:w[:g]'")
        try:
            k, m = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(f"k:m mask spec must hold two integers, got {spec!r}") from None
        if k < 0 or m < 0 or k + m < 1:
            raise ValueError(f"k:m mask spec needs k, m >= 0 and k + m >= 1, got {spec!r}")
        if num_frames is not None and k + m != num_frames:
            raise ValueError(f"mask spec {spec!r} has k + m = {k + m} frames but num_frames = {num_frames}")
        mask = cls.k_m(k, k + m)
        return mask if mask.name == f"{k}:{m}" else TileMask(mask.num_frames, mask.bits, name=f"{k}:{m}")

    # ------------------------------------------------------------------ views
    @property
    def matrix(self) -> np.ndarray:
        """The T x T boolean matrix (a fresh, writable copy)."""
        t = self.num_frames
        return np.frombuffer(self.bits, dtype=np.uint8).reshape(t, t).astype(bool)

    @property
    def kept_tiles(self) -> int:
        return int(sum(self.bits))

    @property
    def density(self) -> float:
        """Fraction of kept tiles (1.0 = dense)."""
        return self.kept_tiles / (self.num_frames * self.num_frames)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def is_full(self) -> bool:
        return all(self.bits)

    def key_frames(self, query_frame: int) -> tuple[int, ...]:
        """The key frames kept by ``query_frame``, ascending."""
        t = self.num_frames
        row = self.bits[query_frame * t:(query_frame + 1) * t]
        return tuple(j for j in range(t) if row[j])

    def label(self) -> str:
        return self.name or f"custom(T={self.num_frames}, kept={self.kept_tiles})"

    def pretty(self) -> str:
        """A multi-line picture: one row per query frame, '#' = kept tile, '.' = skipped."""
        t = self.num_frames
        m = self.matrix
        head = f"TileMask {self.label()}: T={t}, kept {self.kept_tiles}/{t * t} tiles, density {self.density:.3f}"
        rows = [f"q{i:>3} " + "".join("#" if m[i, j] else "." for j in range(t)) for i in range(t)]
        return "\n".join([head, *rows])

    def __str__(self) -> str:
        return self.pretty()

    def __repr__(self) -> str:
        return f"TileMask({self.label()!r}, T={self.num_frames}, kept={self.kept_tiles})"

    # ------------------------------------------------------------------ serialisation
    def to_json_value(self) -> Any:
        """A JSON value: the spec string when it rebuilds the same mask, else a list of '0'/'1' row strings."""
        if self.name:
            try:
                if TileMask.from_string(self.name, self.num_frames) == self:
                    return self.name
            except ValueError:
                pass
        t = self.num_frames
        return ["".join(str(b) for b in self.bits[i * t:(i + 1) * t]) for i in range(t)]

    @classmethod
    def from_json_value(cls, value: Any, num_frames: int | None = None) -> TileMask:
        """Inverse of :meth:`to_json_value`; also accepts a list of lists of booleans."""
        if isinstance(value, str):
            return cls.from_string(value, num_frames)
        if not isinstance(value, list) or not value:
            raise ValueError(f"cannot read a tile mask from {value!r}")
        if all(isinstance(r, str) for r in value):
            if any(set(r) - {"0", "1"} for r in value):
                raise ValueError("tile mask rows must be strings of '0' and '1'")
            if len({len(r) for r in value}) != 1:
                raise ValueError(f"tile mask rows must have equal lengths, got {[len(r) for r in value]}")
            arr = np.array([[c == "1" for c in r] for r in value], dtype=bool)
        elif all(isinstance(r, list) and all(isinstance(x, bool) for x in r) for r in value):
            if len({len(r) for r in value}) != 1:
                raise ValueError(f"tile mask rows must have equal lengths, got {[len(r) for r in value]}")
            arr = np.array(value, dtype=bool)
        else:
            raise ValueError("tile mask JSON must be a spec string, a list of '0'/'1' strings or of bool lists")
        mask = cls.from_array(arr)
        if num_frames is not None and mask.num_frames != num_frames:
            raise ValueError(f"tile mask has T={mask.num_frames}, expected {num_frames}")
        return mask


def _check_frames(num_frames: Any) -> None:
    if not isinstance(num_frames, (int, np.integer)) or isinstance(num_frames, bool) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")


def as_tile_mask(tile_mask: Any) -> TileMask:
    """Accept a TileMask or a concrete T x T boolean matrix; return a validated TileMask."""
    if isinstance(tile_mask, TileMask):
        return tile_mask
    if isinstance(tile_mask, str):
        return TileMask.from_string(tile_mask)
    return TileMask.from_array(tile_mask)


@dataclass(frozen=True)
class MaskSchedule:
    """One tile mask per layer (``None`` = dense attention for that layer). Hashable.

    JSON form: ``{"num_frames": T, "layers": [null | "full" | "1:7" | "window:1:1" | ["1000", ...], ...]}``.
    """

    masks: tuple[TileMask | None, ...]

    def __post_init__(self) -> None:
        masks = tuple(self.masks)
        for i, m in enumerate(masks):
            if m is not None and not isinstance(m, TileMask):
                raise ValueError(f"layer {i}: expected a TileMask or None, got {type(m).__name__}")
        frames = {m.num_frames for m in masks if m is not None}
        if len(frames) > 1:
            raise ValueError(f"all masks of a schedule must have the same number of frames, got {sorted(frames)}")
        object.__setattr__(self, "masks", masks)

    @classmethod
    def uniform(cls, mask: TileMask | None, num_layers: int) -> MaskSchedule:
        return cls((mask,) * num_layers)

    @classmethod
    def dense(cls, num_layers: int) -> MaskSchedule:
        return cls((None,) * num_layers)

    @classmethod
    def from_specs(cls, specs: Iterable[str | None], num_frames: int) -> MaskSchedule:
        return cls(tuple(None if s is None else TileMask.from_string(s, num_frames) for s in specs))

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, layer: int) -> TileMask | None:
        if not -len(self.masks) <= layer < len(self.masks):
            raise ValueError(f"mask schedule has {len(self.masks)} layers, asked for layer {layer}")
        return self.masks[layer]

    def __iter__(self):
        return iter(self.masks)

    @property
    def num_frames(self) -> int | None:
        for m in self.masks:
            if m is not None:
                return m.num_frames
        return None

    @property
    def density(self) -> float:
        """Mean density over layers (dense layers count 1.0)."""
        if not self.masks:
            return 1.0
        return float(np.mean([1.0 if m is None else m.density for m in self.masks]))

    def pretty(self) -> str:
        lines = [f"MaskSchedule: {len(self)} layers, mean density {self.density:.3f}"]
        lines += [f"  layer {i:>3}: {'dense' if m is None else m.label()}" for i, m in enumerate(self.masks)]
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {"num_frames": self.num_frames,
             "layers": [None if m is None else m.to_json_value() for m in self.masks]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> MaskSchedule:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"mask schedule is not valid JSON: {e}") from None
        if not isinstance(obj, dict) or "layers" not in obj or not isinstance(obj["layers"], list):
            raise ValueError("mask schedule JSON must be an object with a 'layers' list")
        t = obj.get("num_frames")
        masks = []
        for i, v in enumerate(obj["layers"]):
            try:
                masks.append(None if v is None else TileMask.from_json_value(v, t))
            except ValueError as e:
                raise ValueError(f"mask schedule layer {i}: {e}") from None
        return cls(tuple(masks))

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temporary file + rename)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mask_schedule.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> MaskSchedule:
        with open(path) as f:
            return cls.from_json(f.read())
