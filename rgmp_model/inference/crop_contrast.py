"""Per-crop contrast: the one rule for how region mode shows a grey crop to the network, used also
where the network is trained on such crops (training clips, fine-tuning and test-time adaptation
pairs), so that it learns on what it will see.

Each crop's 1st to 99.5th percentile (of its channel mean) is mapped to [0, 1]; the range is
taken as at least ``floor`` (per crop), so that the noise of a crop an object left is not
stretched into an object (region mode passes half the object's range on its keyframe).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rgmp_model.inference.region_crops import percentiles

__all__ = ["CROP_PERCENTILES", "crop_spread", "normalise_crops"]

CROP_PERCENTILES = (0.01, 0.995)


def crop_spread(crops: Tensor) -> tuple[Tensor, Tensor]:
    """(K, C, S, S) -> each crop's low percentile and its range up to the high percentile, (K,) each."""
    flat = crops.float().mean(dim=1).flatten(1) if crops.shape[1] > 1 else crops.float().flatten(1)
    lo, hi = percentiles(flat, CROP_PERCENTILES)
    return lo, hi - lo


def normalise_crops(crops: Tensor, floor: Tensor | None = None) -> Tensor:
    """(K, C, S, S) crops with each one's percentiles mapped to [0, 1] (module docstring); ``floor``
    (K,): the smallest range each crop is stretched by."""
    lo, spread = crop_spread(crops)
    spread = spread.clamp_min(1e-3) if floor is None else torch.maximum(spread.clamp_min(1e-3), floor)
    return ((crops - lo.view(-1, 1, 1, 1)) / spread.view(-1, 1, 1, 1)).clamp(0, 1)
