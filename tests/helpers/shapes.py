"""Geometry helpers shared by the augmentation and dataset tests."""

from __future__ import annotations

import numpy as np


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    """(H, W) bool mask of the open disc."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks thresholded at 0.5."""
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))
