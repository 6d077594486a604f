"""Region mode's crops, cut in one batch: each object's window of the frame and of its mask,
resized to the network's S x S (:class:`~rgmp_model.inference.region.RegionTracker`).

The values are ``torchvision.ops.roi_align``'s (aligned, 2 x 2 samples per output pixel: each
sample bilinear, a sample more than a pixel outside the image 0, one within a pixel of its edge
the edge's value), computed another way. That sampling is separable: along each axis every
output pixel is a weighted sum of at most 4 pixels, so a crop is ``A_rows @ block @ A_cols^T``
with the block of pixels the window samples and two (S x side) interpolation matrices. For 40
windows of about 130 px cut to 96 px that is 5-6 ms on one CPU thread where ``roi_align``, whose
per-sample set-up dominates, takes 14 ms; windows of similar sizes share one matrix product.

An object's mask is cut from the frame's map of object channels (the keyframe's labels, then the
previous frame's winners) compared with its channel, no per-object full-frame tensor: on the
keyframe from the whole map, later from its patch (its last paste window) taken as an image of
its own, as region mode always cut a track's previous mask (a sample within a pixel of the
patch's edge takes the edge's value).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["cut_windows", "percentiles", "size_groups"]

Window = tuple[float, float, float, float]  # top, left, bottom, right at full resolution (float)
Box = tuple[int, int, int, int]  # top, left, bottom, right (integer, exclusive ends)


def size_groups(sides: Sequence[float], ratio: float = 1.25) -> list[list[int]]:
    """Indices of ``sides`` in groups (smallest first) whose sides differ by at most ``ratio``:
    padding every member to its group's largest costs at most ``ratio`` squared in pixels."""
    groups: list[list[int]] = []
    smallest = 0.0
    for i in sorted(range(len(sides)), key=lambda i: sides[i]):
        if not groups or sides[i] > ratio * smallest:
            groups.append([])
            smallest = sides[i]
        groups[-1].append(i)
    return groups


def _taps(low: Tensor, high: Tensor, size: int, extent: int | Tensor) -> tuple[Tensor, Tensor]:
    """``roi_align``'s sampling along one axis (aligned, 2 samples per output pixel) of windows
    [low, high) (K,) over ``extent`` pixels (one for all, or (K,)) -> the (K, size, 4) pixel
    indices and weights of each output pixel (2 samples x 2 bilinear taps, each weight halved),
    by its rules."""
    if isinstance(extent, Tensor):
        extent = extent[:, None, None]
    step = (high - low) / size
    position = torch.arange(size, dtype=low.dtype, device=low.device)
    sample = torch.tensor([0.25, 0.75], dtype=low.dtype, device=low.device)  # (i + 0.5) / 2 of a bin
    y = (low - 0.5)[:, None, None] + position[None, :, None] * step[:, None, None] + sample * step[:, None, None]
    valid = (y >= -1.0) & (y <= extent)
    y = y.clamp_min(0)
    below = y.floor().long()
    edge = below >= extent - 1
    below = torch.where(edge, extent - 1, below)
    fraction = torch.where(edge, 0.0, y - below)
    above = torch.where(edge, below, below + 1)
    index = torch.stack([below, above], dim=-1).flatten(-2)
    weight = (torch.stack([1 - fraction, fraction], dim=-1) * (valid[..., None] * 0.5)).flatten(-2)
    return index, weight


def _matrix(index: Tensor, weight: Tensor, first: Tensor, length: int) -> Tensor:
    """(K, size, 4) taps -> (K, size, length) interpolation matrices over pixels first[k] on
    (taps outside them left out)."""
    matrix = torch.zeros((*index.shape[:2], length), dtype=weight.dtype, device=weight.device)
    relative = index - first[:, None, None]
    inside = (relative >= 0) & (relative < length)
    return matrix.scatter_add_(2, relative.clamp(0, length - 1), weight * inside)


def _blocks(image: Tensor, tops: list[int], lefts: list[int], tall: int, wide: int) -> Tensor:
    """(..., H, W) -> (K, ..., tall, wide): the block at (tops[k], lefts[k]) of ``image``."""
    return torch.stack([image[..., t : t + tall, l : l + wide] for t, l in zip(tops, lefts)])


def _resize(block: Tensor, along_rows: Tensor, along_cols: Tensor) -> Tensor:
    """(G, C, tall, wide) blocks, (G, S, tall) and (G, S, wide) matrices -> (G, C, S, S)."""
    g, c, tall, wide = block.shape
    size = along_rows.shape[1]
    across = (block.reshape(g, c * tall, wide) @ along_cols.transpose(1, 2)).view(g, c, tall, size)  # columns first
    if c == 1:
        return (along_rows @ across[:, 0])[:, None]
    return (along_rows[:, None] @ across).view(g, c, size, size)


def _placed(first: Tensor, length: int, extent: int) -> Tensor:
    """Block origins: ``first`` moved back where a block of ``length`` would leave the image."""
    return torch.minimum(first, torch.tensor(max(extent - length, 0), device=first.device))


def cut_windows(image: Tensor, windows: Sequence[Window], size: int, labels: Tensor | None = None,
                channels: Sequence[int] = (), boxes: Sequence[Box] | None = None,
                patches: Sequence[Box] | None = None) -> tuple[Tensor, Tensor | None]:
    """(C, H, W) float ``image`` -> (K, C, size, size) crops of ``windows`` (module docstring);
    with an (H, W) integer map ``labels`` also (K, size, size) crops of the masks
    ``labels == channels[k]``. ``patches[k]`` (top, left, bottom, right): the part of ``labels``
    mask k is cut from, as an image of its own (``roi_align``'s edge rules at its edges; None:
    the whole frame). ``boxes[k]``: where mask k's pixels lie (None: anywhere in the window);
    only that part of each mask is read."""
    count = len(windows)
    height, width = image.shape[-2:]
    device = image.device
    window = torch.tensor(windows, dtype=torch.float32, device=device).view(count, 4)
    rows, row_weight = _taps(window[:, 0], window[:, 2], size, height)
    cols, col_weight = _taps(window[:, 1], window[:, 3], size, width)
    top_tap, bottom_tap = rows.flatten(1).min(1).values, rows.flatten(1).max(1).values
    left_tap, right_tap = cols.flatten(1).min(1).values, cols.flatten(1).max(1).values
    if labels is not None:
        where = (torch.tensor(boxes, dtype=torch.int64, device=device).view(count, 4) if boxes is not None
                 else torch.stack([top_tap, left_tap, bottom_tap + 1, right_tap + 1], dim=1))
        if patches is None:  # the masks' taps: the frame's, or each patch's as an image of its own
            origin = torch.zeros((count, 2), dtype=torch.int64, device=device)
            mask_rows, mask_row_weight, mask_cols, mask_col_weight = rows, row_weight, cols, col_weight
        else:
            patch = torch.tensor(patches, dtype=torch.int64, device=device).view(count, 4)
            origin = patch[:, :2]
            mask_rows, mask_row_weight = _taps(window[:, 0] - origin[:, 0], window[:, 2] - origin[:, 0], size,
                                               patch[:, 2] - patch[:, 0])
            mask_cols, mask_col_weight = _taps(window[:, 1] - origin[:, 1], window[:, 3] - origin[:, 1], size,
                                               patch[:, 3] - patch[:, 1])
    crops = image.new_empty((count, image.shape[0], size, size))
    masks = image.new_empty((count, size, size)) if labels is not None else None
    taller = max(int((bottom_tap - top_tap).max()) + 1 - height, 0)
    wider = max(int((right_tap - left_tap).max()) + 1 - width, 0)
    if taller or wider:  # a window longer than the image: zeros after it, which no tap reaches
        image = torch.nn.functional.pad(image, (0, wider, 0, taller))
        labels = torch.nn.functional.pad(labels, (0, wider, 0, taller)) if labels is not None else None
    spans = (torch.maximum(bottom_tap - top_tap, right_tap - left_tap) + 1).tolist()
    for group in size_groups(spans):
        pick = torch.tensor(group, device=device)
        tall = int((bottom_tap[pick] - top_tap[pick]).max()) + 1
        wide = int((right_tap[pick] - left_tap[pick]).max()) + 1
        tops = _placed(top_tap[pick], tall, image.shape[-2])
        lefts = _placed(left_tap[pick], wide, image.shape[-1])
        along_rows = _matrix(rows[pick], row_weight[pick], tops, tall)  # (G, S, tall)
        along_cols = _matrix(cols[pick], col_weight[pick], lefts, wide)  # (G, S, wide)
        crops[pick] = _resize(_blocks(image, tops.tolist(), lefts.tolist(), tall, wide), along_rows, along_cols)
        if masks is None:
            continue
        inside = where[pick]
        tall = max(int((inside[:, 2] - inside[:, 0]).max()), 1)
        wide = max(int((inside[:, 3] - inside[:, 1]).max()), 1)
        tops = _placed(inside[:, 0], tall, labels.shape[-2])
        lefts = _placed(inside[:, 1], wide, labels.shape[-1])
        wanted = torch.tensor([channels[i] for i in group], dtype=labels.dtype, device=device)
        mask = (_blocks(labels, tops.tolist(), lefts.tolist(), tall, wide) == wanted[:, None, None]).to(image.dtype)
        masks[pick] = _resize(mask[:, None], _matrix(mask_rows[pick], mask_row_weight[pick], tops - origin[pick, 0], tall),
                              _matrix(mask_cols[pick], mask_col_weight[pick], lefts - origin[pick, 1], wide))[:, 0]
    return crops, masks


def percentiles(values: Tensor, q: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """``torch.quantile(values, q, dim=1)`` (linear interpolation) for a low and a high ``q``
    of (K, N) ``values``, from the few order statistics each needs (``topk``) instead of sorting
    every row: the same values within float rounding, in half the time for 40 crops."""
    count = values.shape[1]
    ranks = torch.tensor(q, dtype=values.dtype, device=values.device) * (count - 1)
    below = ranks.long()  # as torch.quantile: truncation, then ceil for the upper neighbour
    above = ranks.ceil().long()
    weights = ranks - below
    low_order = int(above[0]) + 1  # the smallest ones the low quantile needs
    smallest = values.topk(low_order, dim=1, largest=False).values
    high_order = count - int(below[1])  # the largest ones the high quantile needs
    largest = values.topk(high_order, dim=1, largest=True).values
    low = smallest[:, int(below[0])].lerp(smallest[:, int(above[0])], weights[0])
    high = largest[:, count - 1 - int(below[1])].lerp(largest[:, count - 1 - int(above[1])], weights[1])
    return low, high

