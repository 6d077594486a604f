"""Region mode's crops pasted back at full resolution with RGMP's soft aggregation, in one batch,
with no per-object full-frame tensor (:class:`~rgmp_model.inference.region.RegionTracker`; the
crops are cut by :mod:`rgmp_model.inference.region_crops`).

:func:`paste_and_merge` takes each object's probability at the pixels of its window as a paste
with ``grid_sample`` would (bilinear, half-pixel centres, zeros outside the crop), flattened into
one list of (object, pixel) elements; sums the background prod(1 - p) and the odds per pixel
(``index_add_``); and gives each pixel to the first object, in order, with the highest
aggregated probability, if it beats the background. Per object it returns the area, the summed
aggregated probability and the bounding box of its pixels: the next windows come from the crops.

Which pixels: on a GPU every pixel of every window (objects of similar window sizes padded into
one block per group, no synchronisation per object). On the CPU only the pixels that can have a
winner, with every window's element there, so the result is the same. Where at most m windows
cover a pixel and each one's probability there is at most t = :func:`hot_threshold` (m), the
background wins: prod(1 - p) >= (1 - t) ** m keeps its odds above every object's t / (1 - t)
(t is 0.25 for m = 4, 0.06 for m = 40). A window's pixel can exceed t only when one of its 4
bilinear taps in the crop does; at the pixels where some window's can, every window's element
is sampled as ``grid_sample`` does (4 taps). For 40 nuclei that is a fifth of the windows'
pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rgmp_model.inference.region_crops import size_groups

__all__ = ["Merged", "paste_and_merge", "paste_windows"]

_EPS = 1e-6
Window = tuple[float, float, float, float]  # top, left, bottom, right at full resolution (float)
Patch = tuple[int, int, int, int]  # top, left, bottom, right (integer, exclusive ends)


def paste_windows(windows: Sequence[Window], shape: tuple[int, int]) -> list[Patch | None]:
    """Each window's integer pixels inside the frame (None when it has none)."""
    height, width = shape
    out: list[Patch | None] = []
    for top, left, bottom, right in windows:
        t0, l0 = max(math.floor(top), 0), max(math.floor(left), 0)
        t1, l1 = min(math.ceil(bottom), height), min(math.ceil(right), width)
        out.append((t0, l0, t1, l1) if t1 > t0 and l1 > l0 else None)
    return out


@dataclass
class Merged:
    """One frame's objects merged: (object, pixel) elements, each object's window pixels that
    were looked at (module docstring). ``pixel`` (N,) flat frame index; ``owner`` (N,) object
    row; ``q`` (N,) the owner's aggregated probability there; ``won`` (N,) bool, the owner wins
    the pixel; per object (K,): ``area`` pixels won, ``score`` sum of q over them, ``box``
    (K, 4) int64 (top, left, bottom, right; exclusive ends) of them (meaningless when the area is
    0); ``patches`` each object's integer window (None: outside the frame); ``background``
    (H, W) the background probability (1 outside every window) when asked for, else None."""

    patches: list[Patch | None]
    width: int
    pixel: Tensor
    owner: Tensor
    q: Tensor
    won: Tensor
    area: Tensor
    score: Tensor
    box: Tensor
    background: Tensor | None = None

    def patch_values(self, k: int, values: Tensor) -> Tensor:
        """Object k's (h, w) window of a per-element tensor (0 where it was not looked at)."""
        t0, l0, t1, l1 = self.patches[k]
        mine = (self.owner == k).nonzero().view(-1)
        pixel = self.pixel.take(mine)
        out = torch.zeros((t1 - t0) * (l1 - l0), dtype=values.dtype, device=values.device)
        out[(torch.div(pixel, self.width, rounding_mode="floor") - t0) * (l1 - l0) + pixel % self.width - l0] = \
            values.take(mine)
        return out.view(t1 - t0, l1 - l0)


# ----------------------------------------------------------------------------- every pixel (GPU)
def _dense_elements(probabilities: Tensor, patches: list[Patch | None], windows: Sequence[Window], width: int,
                    outside: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every pixel of every window: (p, pixel, owner) (N,) each; a window smaller than its
    group's block is padded with elements at pixel ``outside``."""
    device = probabilities.device
    live = [k for k, p in enumerate(patches) if p is not None]
    sides = [max(patches[k][2] - patches[k][0], patches[k][3] - patches[k][1]) for k in live]
    sampled, pixels, owners = [], [], []
    for group in size_groups(sides):
        rows = [live[i] for i in group]
        heights = [patches[k][2] - patches[k][0] for k in rows]
        widths = [patches[k][3] - patches[k][1] for k in rows]
        axes = []
        for axis, sizes in ((0, heights), (1, widths)):
            start = torch.tensor([patches[k][axis] for k in rows], dtype=torch.float32, device=device)
            low = torch.tensor([windows[k][axis] for k in rows], dtype=torch.float32, device=device)
            span = torch.tensor([windows[k][axis + 2] - windows[k][axis] for k in rows], dtype=torch.float32,
                                device=device)
            step = torch.arange(max(sizes), device=device)
            grid = (start[:, None] + step[None] + 0.5 - low[:, None]) / span[:, None] * 2 - 1
            inside = step[None] < torch.tensor(sizes, device=device)[:, None]
            axes.append((grid, start.long()[:, None] + step[None], inside))
        (ys, y, y_in), (xs, x, x_in) = axes
        grid = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
        picked = probabilities[torch.tensor(rows, device=device)][:, None]
        sampled.append(F.grid_sample(picked, grid, mode="bilinear", align_corners=False).reshape(-1))
        pixel = torch.where(y_in[:, :, None] & x_in[:, None, :], y[:, :, None] * width + x[:, None, :], outside)
        pixels.append(pixel.reshape(-1))
        owners.append(torch.tensor(rows, device=device).repeat_interleave(pixel[0].numel()))
    return torch.cat(sampled), torch.cat(pixels), torch.cat(owners)


# ----------------------------------------------------------------------------- pixels that can win (CPU)
def hot_threshold(coverage: int) -> float:
    """The largest probability (with a margin) that cannot win a pixel covered by ``coverage``
    windows whose probabilities are all at most it: t / (1 - t) stays below the background's
    odds, at least (1 - t) ** coverage / (1 - (1 - t) ** coverage)."""
    low, high = 0.0, 0.5
    for _ in range(40):
        t = (low + high) / 2
        floor = (1 - t) ** coverage
        if t / (1 - t) < floor / (1 - floor):
            low = t
        else:
            high = t
    return 0.9 * low


def _coverage(patches: list[Patch | None], device: torch.device) -> int:
    """At most how many windows cover one pixel: 1 + the most other windows one window meets
    (the windows over a pixel all meet each other)."""
    box = torch.tensor([p for p in patches if p is not None], dtype=torch.int64).view(-1, 4)
    meet = ((box[:, None, 0] < box[None, :, 2]) & (box[None, :, 0] < box[:, None, 2])
            & (box[:, None, 1] < box[None, :, 3]) & (box[None, :, 1] < box[:, None, 3]))
    return int(meet.sum(1).max()) if len(box) else 0


def _hot_elements(probabilities: Tensor, patches: list[Patch | None], windows: Sequence[Window],
                  shape: tuple[int, int], everywhere: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(p, pixel, owner) for every window's pixels where some window's probability can exceed
    the threshold (a bilinear tap of its crop does; ``everywhere``: every window pixel)."""
    height, width = shape
    device = probabilities.device
    count, size = probabilities.shape[0], probabilities.shape[-1]
    live = [k for k, p in enumerate(patches) if p is not None]
    if not live:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return torch.zeros(0, device=device), empty, empty
    box = torch.tensor(windows, dtype=torch.float64, device=device).view(count, 4)
    origin = torch.tensor([p[:2] if p is not None else (0, 0) for p in patches], dtype=torch.int64, device=device)
    longest = max(max(patches[k][2] - patches[k][0], patches[k][3] - patches[k][1]) for k in live)
    step = torch.arange(longest, device=device)
    # per object and axis, each window pixel's source position in the crop, as the paste's
    # grid_sample computes it (align_corners=False, in float32)
    sources = []
    for axis in (0, 1):
        low, high = box[:, axis].float(), box[:, axis + 2]
        span = (high - box[:, axis]).float()
        grid = (origin[:, axis, None].float() + step[None] + 0.5 - low[:, None]) / span[:, None] * 2 - 1
        sources.append(((grid + 1) * size - 1) / 2)  # (K, longest)
    union = torch.zeros(shape, dtype=torch.bool, device=device)
    if everywhere:
        for k in live:
            union[patches[k][0] : patches[k][2], patches[k][1] : patches[k][3]] = True
    else:
        above = F.pad(probabilities > hot_threshold(_coverage(patches, device)), (1, 2, 1, 2))
        # a crop pixel's 2 x 2 neighbourhood holds a hot tap of the window pixels whose first tap
        # it is (taps -1 .. S - 1 -> 0 .. S; S + 1: never hot, for taps outside the crop)
        hot = above[:, :-1, :-1] | above[:, 1:, :-1] | above[:, :-1, 1:] | above[:, 1:, 1:]  # (K, S + 2, S + 2)
        first_y, first_x = [(source.floor() + 1).clamp(0, size + 1).long() for source in sources]
        first_y, first_x = (torch.where(f > size, size + 1, f) for f in (first_y, first_x))
        near = hot.gather(1, first_y[:, :, None].expand(-1, -1, size + 2))
        near = near.gather(2, first_x[:, None, :].expand(-1, longest, -1))  # (K, longest, longest)
        for k in live:
            t0, l0, t1, l1 = patches[k]
            union[t0:t1, l0:l1] |= near[k, : t1 - t0, : l1 - l0]
    found, counts = [], []
    for k in live:
        t0, l0, t1, l1 = patches[k]
        found.append(union[t0:t1, l0:l1].nonzero())
        counts.append(len(found[-1]))
    at = torch.cat(found)
    owner = torch.repeat_interleave(torch.tensor(live, device=device), torch.tensor(counts, device=device))
    row, col = at[:, 0], at[:, 1]
    source_y = sources[0].view(-1).take(owner * longest + row)
    source_x = sources[1].view(-1).take(owner * longest + col)
    pixel = (origin[:, 0].take(owner) + row) * width + origin[:, 1].take(owner) + col
    return _bilinear(probabilities, owner, source_y, source_x), pixel, owner


def _bilinear(crops: Tensor, owner: Tensor, source_y: Tensor, source_x: Tensor) -> Tensor:
    """``grid_sample`` (bilinear, zeros outside) of crop ``owner[i]`` of (K, S, S) ``crops`` at
    the source position (source_y[i], source_x[i]) in its pixels, point by point: the crops get
    a zero border (1 pixel before, 2 after), so a position clamped to [-1, S] always has its 4
    taps in it, and one outside the crop reads zeros."""
    size = crops.shape[-1]
    side = size + 3
    padded = F.pad(crops, (1, 2, 1, 2)).reshape(-1)
    y, x = source_y.clamp(-1, size), source_x.clamp(-1, size)
    below_y, below_x = y.floor(), x.floor()
    fy, fx = y - below_y, x - below_x
    corner = owner * (side * side) + (below_y.long() + 1) * side + below_x.long() + 1
    top = (1 - fx) * padded.take(corner) + fx * padded.take(corner + 1)
    bottom = (1 - fx) * padded.take(corner + side) + fx * padded.take(corner + side + 1)
    return (1 - fy) * top + fy * bottom


# ----------------------------------------------------------------------------- merging
def paste_and_merge(probabilities: Tensor, windows: Sequence[Window], shape: tuple[int, int],
                    keep_background: bool = False, slots: Tensor | None = None,
                    every_pixel: bool | None = None) -> Merged:
    """(K, S, S) object probabilities of the crops at ``windows`` -> :class:`Merged` at full size
    ``shape`` (module docstring). ``slots``: an (H * W + 1,) int64 tensor of -1 to work in (left
    as it was; the caller keeps it from frame to frame), else one is made. ``every_pixel``:
    every window pixel (None: on a GPU), else the pixels that can have a winner."""
    count = probabilities.shape[0]
    height, width = shape
    frame = height * width
    device = probabilities.device
    patches = paste_windows(windows, shape)
    if device.type == "cuda" if every_pixel is None else every_pixel:
        p, pixel, owner = _dense_elements(probabilities, patches, windows, width, frame)
    else:
        p, pixel, owner = _hot_elements(probabilities, patches, windows, shape, keep_background)
    p = p.clamp(_EPS, 1 - _EPS)
    # the pixels several windows cover: every element points at one element of its pixel
    if slots is None or slots.numel() != frame + 1:
        slots = torch.full((frame + 1,), -1, dtype=torch.int64, device=device)
    slots.index_put_((pixel,), torch.arange(len(pixel), device=device))
    same = slots.take(pixel)
    slots.index_fill_(0, pixel, -1)
    zeros = torch.zeros(len(pixel), device=device)
    log_background = zeros.clone().index_add_(0, same, torch.log1p(-p))
    odds = p / (1 - p)
    odds_sum = zeros.clone().index_add_(0, same, odds)
    background = log_background.take(same).exp_().clamp_(_EPS, 1 - _EPS)
    background_odds = background / (1 - background)
    total = background_odds + odds_sum.take(same)  # RGMP's aggregation: softmax over the logits
    q = odds / total
    background_q = background_odds / total
    best = zeros.scatter_reduce_(0, same, q, "amax")
    candidate = ((q == best.take(same)) & (q > background_q) & (pixel < frame)).nonzero().view(-1)
    first = torch.full((len(pixel),), count, dtype=torch.int64, device=device)
    first.scatter_reduce_(0, same.take(candidate), owner.take(candidate), "amin")
    winning = candidate[first.take(same.take(candidate)) == owner.take(candidate)]
    won = torch.zeros(len(pixel), dtype=torch.bool, device=device).index_fill_(0, winning, True)
    winners, won_q, won_pixel = owner.take(winning), q.take(winning), pixel.take(winning)
    won_y = torch.div(won_pixel, width, rounding_mode="floor")
    won_x = won_pixel - won_y * width
    area = torch.zeros(count, device=device).index_add_(0, winners, torch.ones_like(won_q))
    score = torch.zeros(count, device=device).index_add_(0, winners, won_q)
    box = torch.stack([
        torch.full((count,), height, dtype=torch.int64, device=device).scatter_reduce_(0, winners, won_y, "amin"),
        torch.full((count,), width, dtype=torch.int64, device=device).scatter_reduce_(0, winners, won_x, "amin"),
        torch.zeros(count, dtype=torch.int64, device=device).scatter_reduce_(0, winners, won_y + 1, "amax"),
        torch.zeros(count, dtype=torch.int64, device=device).scatter_reduce_(0, winners, won_x + 1, "amax"),
    ], dim=1)
    kept = None
    if keep_background:
        kept = torch.ones(frame + 1, device=device)
        kept[pixel] = background_q
        kept = kept[:frame].view(shape)
    return Merged(patches, width, pixel, owner, q, won, area, score, box, kept)
