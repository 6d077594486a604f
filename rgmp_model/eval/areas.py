"""How much of each object a propagation kept: predicted over true area at the end of its track.

A mask that shrinks (or grows) a little every frame scores well early and loses the object late;
the mean J hides that, the final area shows it. Label stacks are ``(T, H, W)`` integer arrays or
array-likes read one frame at a time; the objects are the non-zero ids of the first true frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["final_area_ratios"]


def final_area_ratios(predicted: Any, truth: Any) -> dict[int, float]:
    """{id: predicted area / true area} on the last frame where the truth holds ``id``, for every
    id of the first true frame (0.0 for an object the prediction lost there). Both (T, H, W)."""
    if tuple(predicted.shape) != tuple(truth.shape) or len(truth.shape) != 3:
        raise ValueError(f"predicted {tuple(predicted.shape)} and truth {tuple(truth.shape)} must be (T, H, W) "
                         "label stacks of one shape")
    ids = [int(i) for i in np.unique(np.asarray(truth[0])) if i != 0]
    ratios: dict[int, float] = {}
    for t in range(truth.shape[0] - 1, -1, -1):  # from the end: each id's last frame
        left = [i for i in ids if i not in ratios]
        if not left:
            break
        gt = np.asarray(truth[t])
        present = [i for i in left if bool((gt == i).any())]
        if present:
            pred = np.asarray(predicted[t])
            for i in present:
                ratios[i] = float(np.count_nonzero(pred == i)) / float(np.count_nonzero(gt == i))
    return {i: ratios[i] for i in ids if i in ratios}
