"""Anti-aliased shape rasterisation from signed distance functions (shared by the generator and ToyBench).

Every shape is placed by its area centroid, has a size fixed by the object "radius" R, and is rasterised as
``alpha = clip(0.5 - sdf / edge_width, 0, 1)`` (a linear ramp one ``edge_width`` wide across the outline), so a
sub-pixel move changes the image smoothly. Geometry (in units of R):

* circle:   radius 1
* square:   half side 0.85 (axis aligned)
* triangle: equilateral, apex up, circumradius 1.4 (centroid at the origin)
* cross:    plus sign, arm half length 1, arm half width 0.35
* ring:     annulus, outer radius 1.05, inner radius 0.45
"""

from __future__ import annotations

import functools
import math

import numpy as np

_SQUARE_HALF = 0.85
_TRI_CIRCUM = 1.4
_CROSS_HALF_WIDTH = 0.35
_RING_MID = 0.75
_RING_HALF_THICK = 0.30

# outward unit normals of the triangle's edges (image coordinates, y down, apex up)
_TRI_NORMALS = np.array(
    [[0.0, 1.0], [math.sqrt(3) / 2, -0.5], [-math.sqrt(3) / 2, -0.5]], dtype=np.float64
)


def shape_extents(shape: str, radius: float) -> tuple[float, float, float, float]:
    """Distances (left, right, up, down) in pixels from the centroid to the shape's bounding box."""
    r = float(radius)
    if shape == "circle":
        e = r
        return (e, e, e, e)
    if shape == "square":
        e = _SQUARE_HALF * r
        return (e, e, e, e)
    if shape == "triangle":
        rho = _TRI_CIRCUM * r
        hw = rho * math.sqrt(3) / 2
        return (hw, hw, rho, rho / 2)
    if shape == "cross":
        return (r, r, r, r)
    if shape == "ring":
        e = (_RING_MID + _RING_HALF_THICK) * r
        return (e, e, e, e)
    raise ValueError(f"unknown shape {shape!r}")


def _box_sdf(dx: np.ndarray, dy: np.ndarray, hx: float, hy: float) -> np.ndarray:
    qx = np.abs(dx) - hx
    qy = np.abs(dy) - hy
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside


def shape_sdf(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) of ``shape`` centred (by area centroid) at the origin.

    ``dx``, ``dy``: broadcastable float arrays of offsets from the centroid. Returns their broadcast shape.
    """
    r = float(radius)
    if shape == "circle":
        return np.hypot(dx, dy) - r
    if shape == "square":
        h = _SQUARE_HALF * r
        return _box_sdf(dx, dy, h, h)
    if shape == "triangle":
        inr = _TRI_CIRCUM * r / 2  # inradius of an equilateral triangle = circumradius / 2
        n = _TRI_NORMALS
        d = np.maximum(n[0, 0] * dx + n[0, 1] * dy, n[1, 0] * dx + n[1, 1] * dy)
        return np.maximum(d, n[2, 0] * dx + n[2, 1] * dy) - inr
    if shape == "cross":
        w = _CROSS_HALF_WIDTH * r
        return np.minimum(_box_sdf(dx, dy, r, w), _box_sdf(dx, dy, w, r))
    if shape == "ring":
        return np.abs(np.hypot(dx, dy) - _RING_MID * r) - _RING_HALF_THICK * r
    raise ValueError(f"unknown shape {shape!r}")


def shape_alpha(
    shape: str,
    cx: np.ndarray,
    cy: np.ndarray,
    height: int,
    width: int,
    radius: float,
    edge_width: float = 1.0,
) -> np.ndarray:
    """Anti-aliased coverage of ``shape`` centred at (cx, cy) on an H x W pixel grid.

    ``cx``, ``cy``: arrays of shape (N,) (e.g. one entry per frame), pixel units. Returns (N, H, W) float64 in
    [0, 1].
    """
    cx = np.asarray(cx, dtype=np.float64).reshape(-1, 1, 1)
    cy = np.asarray(cy, dtype=np.float64).reshape(-1, 1, 1)
    xs = np.arange(width, dtype=np.float64).reshape(1, 1, width)
    ys = np.arange(height, dtype=np.float64).reshape(1, height, 1)
    sdf = shape_sdf(shape, xs - cx, ys - cy, radius)
    return np.clip(0.5 - sdf / edge_width, 0.0, 1.0)


@functools.lru_cache(maxsize=256)
def shape_area(shape: str, radius: float, edge_width: float = 1.0) -> float:
    """Rasterised area (sum of alpha, pixels) of one shape, measured on a centred grid."""
    n = int(math.ceil(4 * radius + 8))
    a = shape_alpha(shape, np.array([n / 2 + 0.25]), np.array([n / 2 + 0.35]), n, n, radius, edge_width)
    return float(a.sum())
