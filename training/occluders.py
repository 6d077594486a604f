"""Occluders for training clips: an object cut from another sequence crosses the clip in front of
the tracked objects, hiding them where it passes (their labels are background there), so the
network learns to lose an object behind something and find it again. Torch tensors in, out."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["cut_object", "add_occluder"]


def cut_object(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
               min_pixels: int = 64) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A random object of ``labels`` (H, W) with >= ``min_pixels`` pixels, cut from ``image``
    (H, W, 3) float32 in [0, 1] to its box: (3, h, w) colours and (h, w) float mask; None when
    there is none."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    ids = ids[counts >= min_pixels]
    if ids.size == 0:
        return None
    mask = labels == rng.choice(ids)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    colours = torch.from_numpy(np.ascontiguousarray(image[box].transpose(2, 0, 1)))
    return colours, torch.from_numpy(mask[box].astype(np.float32))


def add_occluder(rng: np.random.Generator, frames: torch.Tensor, labels: torch.Tensor, colours: torch.Tensor,
                 mask: torch.Tensor, size: tuple[float, float] = (0.25, 0.6)) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the object (``colours`` (3, h, w), ``mask`` (h, w)) over frames 1..N-1 of ``frames``
    (N, 3, H, W) on a straight path that crosses the middle of the clip; its longer side is
    ``size`` x the clip's shorter side. ``labels`` (N, H, W) become 0 under it. Frame 0 (the
    reference) is left as it is. Returns new tensors."""
    n, _, height, width = frames.shape
    side = rng.uniform(*size) * min(height, width)
    scale = side / max(mask.shape)
    h, w = max(2, round(mask.shape[0] * scale)), max(2, round(mask.shape[1] * scale))
    colours = F.interpolate(colours[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    alpha = F.interpolate(mask[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    middle = np.array([rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width])
    direction = rng.normal(0, 1, 2)
    direction /= max(np.linalg.norm(direction), 1e-6)
    travel = rng.uniform(0.5, 1.5) * min(height, width)  # over the whole clip
    frames, labels = frames.clone(), labels.clone()
    for t in range(1, n):
        centre = middle + direction * travel * ((t - 1) / max(n - 2, 1) - 0.5)
        top, left = int(round(centre[0] - h / 2)), int(round(centre[1] - w / 2))
        y0, y1, x0, x1 = max(top, 0), min(top + h, height), max(left, 0), min(left + w, width)
        if y0 >= y1 or x0 >= x1:
            continue
        a = alpha[y0 - top : y1 - top, x0 - left : x1 - left]
        c = colours[:, y0 - top : y1 - top, x0 - left : x1 - left]
        region = frames[t, :, y0:y1, x0:x1]
        frames[t, :, y0:y1, x0:x1] = region * (1 - a) + c * a
        labels[t, y0:y1, x0:x1][a >= 0.5] = 0
    return frames, labels
