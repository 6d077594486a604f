"""Smooth displacement fields from thin-plate splines, evaluated on a coarse grid of knots and
interpolated bilinearly (used by the random warps of :mod:`rgmp_model.adapt.augment`)."""

from __future__ import annotations

import math

import numpy as np
from skimage.transform import ThinPlateSplineTransform

__all__ = ["local_tps_displacement", "thin_plate_spline_displacement"]

_LAMBDAS = (1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05, 0.0)  # displacement shrink factors tried


def _lerp_index(n: int, knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pixels 0..n-1: the knot to their left (n,) and the float32 fraction towards the next (n, )."""
    if len(knots) == 1:
        return np.zeros(n, np.intp), np.zeros(n, np.float32)
    x = np.arange(n, dtype=np.float64)
    k = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    return k, ((x - knots[k]) / (knots[k + 1] - knots[k])).astype(np.float32)


def _tps_coarse(shape: tuple[int, int], points: np.ndarray, displacements: np.ndarray,
                grid_step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knot rows (gh,), knot cols (gw,) and the spline's displacement (2, gh, gw) at the knots."""
    kr, kc = (np.linspace(0, n - 1, max(2, math.ceil((n - 1) / grid_step) + 1)) if n > 1 else np.zeros(1)
              for n in shape)
    disp = np.zeros((2, len(kr), len(kc)))
    points, moved = np.asarray(points, np.float64), np.asarray(displacements, np.float64)
    if points.size and np.abs(moved).max() > 0:
        tps = ThinPlateSplineTransform.from_estimate(points[:, ::-1], (points + moved)[:, ::-1])  # (x, y) order
        if tps:
            gr, gc = np.meshgrid(kr, kc, indexing="ij")
            xy = np.stack([gc.ravel(), gr.ravel()], 1)
            out = tps(xy) - xy
            disp = np.stack([out[:, 1], out[:, 0]]).reshape(2, len(kr), len(kc))
    return kr, kc, disp


def _upsample(kr: np.ndarray, kc: np.ndarray, disp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Knot displacements (2, gh, gw) -> (2, H, W) float32 by bilinear interpolation."""
    d = disp.astype(np.float32)
    k, t = _lerp_index(shape[0], kr)
    d = d[:, k] * (1 - t)[:, None] + d[:, k + 1] * t[:, None] if len(kr) > 1 else np.repeat(d, shape[0], axis=1)
    k, t = _lerp_index(shape[1], kc)
    d = d[:, :, k] * (1 - t) + d[:, :, k + 1] * t if len(kc) > 1 else np.repeat(d, shape[1], axis=2)
    return np.ascontiguousarray(d)


def _area_safe_factor(kr: np.ndarray, kc: np.ndarray, disp: np.ndarray, max_area_change: float) -> float:
    """Largest factor in _LAMBDAS for which x -> x + factor * disp(x), bilinear between knots, has a
    Jacobian determinant in [1/max_area_change, max_area_change] everywhere: within a knot cell it is
    bilinear in the cell coordinates, so it is checked exactly at the cell corners."""
    if not np.abs(disp).any() or len(kr) < 2 or len(kc) < 2:
        return 1.0
    d_r = np.diff(disp, axis=1) / np.diff(kr)[None, :, None]  # (2, gh-1, gw): d/d row along columns
    d_c = np.diff(disp, axis=2) / np.diff(kc)[None, None, :]  # (2, gh, gw-1): d/d col along rows
    sides = (slice(None, -1), slice(1, None))  # left / right (top / bottom) edge of each cell
    for lam in _LAMBDAS:
        dets = [(1 + lam * d_r[0][:, sc]) * (1 + lam * d_c[1][sr, :]) - lam * lam * d_c[0][sr, :] * d_r[1][:, sc]
                for sc in sides for sr in sides]
        if min(d.min() for d in dets) >= 1 / max_area_change and max(d.max() for d in dets) <= max_area_change:
            return lam
    return 0.0


def thin_plate_spline_displacement(shape: tuple[int, int], points: np.ndarray, displacements: np.ndarray,
                                   grid_step: float = 16.0) -> np.ndarray:
    """(2, H, W) float32 (row, col) displacement of the thin-plate spline moving ``points`` (N, 2)
    (row, col) by ``displacements`` (N, 2); evaluated on knots ``grid_step`` px apart and bilinearly
    interpolated between them. All-zero displacements give exactly zero (the identity warp)."""
    kr, kc, disp = _tps_coarse(shape, points, displacements, grid_step)
    return _upsample(kr, kc, disp, shape)


def local_tps_displacement(rng: np.random.Generator, shape: tuple[int, int], candidates: np.ndarray, count: int,
                           spacing: float, amplitude: np.ndarray, max_area_change: float) -> np.ndarray:
    """(2, h, w) displacement: up to ``count`` of the (M, 2) ``candidates``, >= ``spacing`` px apart, moved
    by up to +-amplitude (row, col) with the frame's corners and edge midpoints fixed; shrunk so that the
    local area change stays within [1/max_area_change, max_area_change]."""
    h, w = shape
    mid = ((h - 1) / 2, (w - 1) / 2)
    ctrl = [(y, x) for y in (0, mid[0], h - 1) for x in (0, mid[1], w - 1) if (y, x) != mid]
    for p in candidates:  # greedy: points close together moving apart would fold the warp
        if len(ctrl) < 8 + count and min(math.hypot(p[0] - y, p[1] - x) for y, x in ctrl) >= spacing:
            ctrl.append((float(p[0]), float(p[1])))
    moves = np.concatenate([np.zeros((8, 2)), rng.uniform(-1.0, 1.0, (len(ctrl) - 8, 2)) * amplitude])
    ctrl = np.array(ctrl, float)
    step = float(np.clip(min(shape) / 8, 4, 16))
    kr, kc, disp = _tps_coarse(shape, ctrl, moves, step)
    lam = _area_safe_factor(kr, kc, disp, max_area_change)
    return _upsample(kr, kc, disp * lam, shape)
