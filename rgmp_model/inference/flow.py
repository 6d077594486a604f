"""Dense optical flow between two frames (scikit-image) and warping of soft masks along it.

Used by the engine's optional flow guidance (MaskTrack+Flow: the previous frame's probabilities
are moved along the flow before they enter the network) and by the flow baseline in
``benchmarks/``. Flow is "backward": for every pixel of the *current* frame it points to where that
pixel was in the *previous* frame, so warping is a lookup and leaves no holes::

    flow = dense_flow(grey(current), grey(previous))        # (2, H, W): rows, cols
    moved = warp_along_flow(previous_probabilities, flow)    # (C, H, W) at the current frame
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rgmp_model.inference.choices import FLOW_METHODS


def grey(frame: np.ndarray | Tensor) -> np.ndarray:
    """(H, W, 3) / (3, H, W) / (H, W) image with values in [0, 1] -> (H, W) float32 luminance."""
    if isinstance(frame, Tensor):
        frame = frame.detach().float().cpu().numpy()
    array = np.asarray(frame, dtype=np.float32)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = np.moveaxis(array, 0, -1)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"expected an (H, W), (H, W, 3) or (3, H, W) image, got shape {array.shape}")
    return array @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def dense_flow(current: np.ndarray, previous: np.ndarray, method: str = "tvl1") -> np.ndarray:
    """Flow (2, H, W) float32 (row, column displacements) such that
    ``current[y, x] ~ previous[y + flow[0, y, x], x + flow[1, y, x]]``.

    current, previous: (H, W) grey images of the same shape. method: "tvl1" (TV-L1, accurate) or
    "ilk" (iterative Lucas-Kanade, about 5x faster).
    """
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1

    if method not in FLOW_METHODS:
        raise ValueError(f"flow method must be one of {FLOW_METHODS}, got {method!r}")
    current, previous = np.asarray(current, np.float32), np.asarray(previous, np.float32)
    if current.shape != previous.shape or current.ndim != 2:
        raise ValueError(f"need two (H, W) images of one shape, got {current.shape} and {previous.shape}")
    if method == "tvl1":
        flow = optical_flow_tvl1(current, previous, dtype=np.float32)
    else:
        flow = optical_flow_ilk(current, previous, radius=7, dtype=np.float32)
    return np.asarray(flow, dtype=np.float32)


def warp_along_flow(values: Tensor, flow: np.ndarray | Tensor) -> Tensor:
    """values (C, H, W) at the previous frame, flow (2, H, W) from :func:`dense_flow` ->
    (C, H, W) at the current frame (bilinear; outside the image the border value is used).
    Sums over channels are preserved, so warped probabilities stay probabilities."""
    if values.dim() != 3:
        raise ValueError(f"values must be (C, H, W), got shape {tuple(values.shape)}")
    flow = torch.as_tensor(flow, dtype=torch.float32, device=values.device)
    h, w = values.shape[-2:]
    if tuple(flow.shape) != (2, h, w):
        raise ValueError(f"flow must be (2, {h}, {w}) for values of size {h}x{w}, got {tuple(flow.shape)}")
    rows = torch.arange(h, dtype=torch.float32, device=values.device)[:, None] + flow[0]
    cols = torch.arange(w, dtype=torch.float32, device=values.device)[None, :] + flow[1]
    grid = torch.stack([cols * (2 / max(w - 1, 1)) - 1, rows * (2 / max(h - 1, 1)) - 1], dim=-1)
    warped = F.grid_sample(values[None].float(), grid[None], mode="bilinear", padding_mode="border",
                           align_corners=True)
    return warped[0].to(values.dtype)
