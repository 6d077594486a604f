"""Stage-2 ("video") training data for RGMP: short augmented clips cut from the annotated videos
of :mod:`training.video_sources`. Item ``k`` of :class:`VideoClipDataset` depends only on
``(seed, k)``, so training resumes exactly and DDP ranks can split the indices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from rgmp_model.inference.crop_contrast import crop_spread, normalise_crops
from rgmp_model.inference.frames import FrameStack

from .occluders import add_occluder, cut_object
from .video_sources import VideoSequence, VideoSource, _lru

__all__ = ["ClipSample", "VideoClipDataset"]

_MAX_SEQUENCE_TRIES = 25  # sequences drawn for one item before giving up
_MAX_START_TRIES = 8  # start frames tried per sequence (an empty first frame is rejected)



@dataclass(frozen=True, eq=False)
class ClipSample:
    """One clip and where it came from. ``frame_indices``: the sequence frames used, in clip
    order; ``object_ids``: the original ids of objects 1..K."""

    frames: torch.Tensor  # (N, 3, H, W) float32 in [0, 1]
    labels: torch.Tensor  # (N, H, W) int64, 0..K
    object_valid: torch.Tensor  # (max_objects,) bool
    num_objects: torch.Tensor  # () int64, K >= 1
    source: int
    sequence: str
    frame_indices: tuple[int, ...]
    object_ids: tuple[int, ...]
    flipped: bool

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors, as the dataset returns them."""
        return {"frames": self.frames, "labels": self.labels, "object_valid": self.object_valid,
                "num_objects": self.num_objects}


def _renumber(labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(H,W) ids -> uint8 (H,W) with ``ids[j]`` -> j + 1 and everything else 0."""
    out = np.zeros(labels.shape, np.uint8)
    for new, old in enumerate(ids, 1):
        out[labels == old] = new
    return out


def _offset(rng: np.random.Generator, size: int, window: int, b0: int, b1: int) -> int:
    """Start of a ``window`` along an axis of ``size`` (window > size: the image is padded) that
    contains [b0, b1) if possible, else is centred on it."""
    lo, hi = min(0, size - window), max(0, size - window)
    a, b = max(lo, b1 - window), min(hi, b0)
    if a > b:
        return int(np.clip(round((b0 + b1 - window) / 2), lo, hi))
    return int(rng.integers(a, b + 1))


def _crop(image: np.ndarray, oy: int, ox: int, h: int, w: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The part of ``image`` inside window (oy, ox, h, w) and where it goes in the window."""
    y0, y1 = max(oy, 0), min(oy + h, image.shape[0])
    x0, x1 = max(ox, 0), min(ox + w, image.shape[1])
    return image[y0:y1, x0:x1], (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))


def _object_ids(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Non-zero ids covering at least ``min_pixels`` pixels of (H,W) ``labels``."""
    if labels.dtype.kind in "bu" and labels.dtype.itemsize <= 2:
        counts = np.bincount(labels.ravel())
        ids = np.arange(len(counts))
    else:
        ids, counts = np.unique(labels, return_counts=True)
    return ids[(ids != 0) & (counts >= min_pixels)]


def _colour_jitter(clip: torch.Tensor, gains: np.ndarray, inside: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast (around each frame's mean) and saturation factors ``gains`` applied to
    (N,3,H,W) in [0,1] as one affine colour map; pixels outside ``inside`` (H,W) (padding) stay 0."""
    b, c, sat = (float(g) for g in gains)
    luma = torch.tensor([0.299, 0.587, 0.114])
    matrix = c * b * (sat * torch.eye(3) + (1 - sat) * luma.expand(3, 3))
    mean = (clip * inside).sum((1, 2, 3), keepdim=True) / (3 * inside.sum().clamp(min=1))
    out = F.conv2d(clip, matrix[:, :, None, None]) + (1 - c) * b * mean
    return out.clamp_(0.0, 1.0).mul_(inside)


class VideoClipDataset(Dataset):
    """Map-style dataset of clips; item ``k`` is a function of ``(seed, k)`` only.

    Item k: a source (by ``source_weights``, default proportional to its number of sequences)
    and one of its sequences; the order of its annotated frames is reversed with p = 0.5
    (``reverse``); a start whose frame has an object of >= ``min_object_pixels`` pixels (up to 8
    starts per sequence, then another sequence), then ``clip_length - 1`` further annotated
    frames with steps of 1..``max_skip`` annotated frames (smaller near the end). A sequence with
    fewer annotated frames than ``clip_length`` gives all of them and repeats the last. Up to
    ``max_objects`` objects of the first frame (a random subset) are renumbered 1..K, the rest
    become background. One window for the whole clip: scale ``s = base * z``, ``base`` = the
    scale at which the image's short side fills the crop (at most 1: small images are padded with
    zeros), ``z`` log-uniform in ``scale_range``, lowered (not below ``base * scale_range[0]``) so
    the chosen objects' bounding box over the clip fits; the window contains that box when it
    can. Then a horizontal flip (p = 0.5, ``flip``) and brightness / contrast / saturation factors
    in 1 +- ``colour_jitter``, the same for the whole clip. Only the clip's frames are read, one at
    a time (the sequences and their :class:`FrameStack` are cached per worker, ``cache_size``;
    non-uint8 frames are normalised by the sequence's percentiles, estimated once per sequence).
    With probability ``occluder_probability`` an object cut from an annotated frame of another
    drawn sequence crosses frames 1.. in front of everything (:mod:`training.occluders`; its own
    random numbers, so the rest of the item does not change). With probability
    ``crop_contrast_probability`` a grey clip is shown as region mode shows crops (each frame
    stretched by its own percentiles: :meth:`_region_view`).

    Items: ``frames`` float32 (N,3,H,W) in [0,1] (frame 0 = the annotated reference), ``labels``
    int64 (N,H,W) in 0..K, ``object_valid`` bool (max_objects,), ``num_objects`` int64 () = K.
    """

    def __init__(self, sources: VideoSource | Sequence[VideoSource], clip_length: int = 4,
                 crop_size: tuple[int, int] = (256, 256), max_skip: int = 3, max_objects: int = 3, seed: int = 0,
                 length: int = 100_000, min_object_pixels: int = 32, *, source_weights: Sequence[float] | None = None,
                 scale_range: tuple[float, float] = (0.9, 1.5), colour_jitter: float = 0.1, flip: bool = True,
                 reverse: bool = True, cache_size: int = 16, occluder_probability: float = 0.0,
                 crop_contrast_probability: float = 0.0) -> None:
        self.sources = [sources] if hasattr(sources, "sequence") else list(sources)  # type: ignore[arg-type]
        if not self.sources or any(len(s) == 0 for s in self.sources):
            raise ValueError("sources must be one or more video sources, each with at least one sequence")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        checks = {"clip_length": (clip_length, 2), "max_skip": (max_skip, 1), "max_objects": (max_objects, 1),
                  "length": (length, 1), "min_object_pixels": (min_object_pixels, 1), "crop_size": (min(self.crop_size), 8),
                  "cache_size": (cache_size, 1)}
        for key, (value, least) in checks.items():
            if int(value) < least:
                raise ValueError(f"{key} must be >= {least}, got {value}")
        if max_objects > 255 or not 0 < scale_range[0] <= scale_range[1] or not 0 <= colour_jitter < 1:
            raise ValueError("need max_objects <= 255, 0 < scale_range[0] <= scale_range[1] and 0 <= colour_jitter < 1")
        if not 0 <= occluder_probability <= 1:
            raise ValueError(f"occluder_probability must be in [0, 1], got {occluder_probability}")
        self.occluder_probability = float(occluder_probability)
        if not 0 <= crop_contrast_probability <= 1:
            raise ValueError(f"crop_contrast_probability must be in [0, 1], got {crop_contrast_probability}")
        self.crop_contrast_probability = float(crop_contrast_probability)
        weights = np.array([len(s) for s in self.sources] if source_weights is None else source_weights, float)
        if weights.shape != (len(self.sources),) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"source_weights must be {len(self.sources)} non-negative numbers with a positive sum")
        self.weights = weights / weights.sum()
        self.clip_length, self.max_skip, self.max_objects = int(clip_length), int(max_skip), int(max_objects)
        self.seed, self.length, self.min_object_pixels = int(seed), int(length), int(min_object_pixels)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.colour_jitter, self.flip, self.reverse = float(colour_jitter), bool(flip), bool(reverse)
        self.cache_size = int(cache_size)
        self._stacks: OrderedDict[tuple[int, int], tuple[VideoSequence, FrameStack]] = OrderedDict()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return self.sample(k).as_dict()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stacks": OrderedDict()}

    def _open(self, s: int, i: int) -> tuple[VideoSequence, FrameStack]:
        def make() -> tuple[VideoSequence, FrameStack]:
            seq = self.sources[s].sequence(i)
            return seq, FrameStack(seq.frames)

        return _lru(self._stacks, (s, i), self.cache_size, make)

    def sample(self, k: int) -> ClipSample:
        """Item ``k`` with its provenance (sequence, frame indices, original object ids)."""
        if not -self.length <= int(k) < self.length:
            raise IndexError(f"item {k} is out of range for a dataset of length {self.length}")
        rng = np.random.default_rng((self.seed, int(k) % self.length))
        for _ in range(_MAX_SEQUENCE_TRIES):
            s = int(rng.choice(len(self.sources), p=self.weights))
            seq, stack = self._open(s, int(rng.integers(len(self.sources[s]))))
            plan = self._plan(rng, seq)
            if plan is not None:
                clip = self._occlude(int(k) % self.length, self._render(rng, s, seq, stack, *plan))
                return self._region_view(int(k) % self.length, clip)
        raise ValueError(f"item {k}: no annotated frame with an object of >= {self.min_object_pixels} pixels in "
                         f"{_MAX_SEQUENCE_TRIES} sequences: check the sources' annotations or lower min_object_pixels")

    def _plan(self, rng: np.random.Generator, seq: VideoSequence) -> tuple[list[int], np.ndarray, list[int]] | None:
        """(frame indices, labels of the first frame, chosen ids), or None for no usable start."""
        order = list(seq.annotated)
        if not order:
            return None
        if self.reverse and rng.random() < 0.5:
            order.reverse()
        n, m = self.clip_length, len(order)
        for p in rng.permutation(max(m - n, 0) + 1)[:_MAX_START_TRIES]:
            first = np.asarray(seq.labels[order[p]])
            ids = _object_ids(first, self.min_object_pixels)
            if ids.size:
                break
        else:
            return None
        positions = [int(p)]
        for j in range(1, n):
            room = min(self.max_skip, (m - 1 - positions[-1]) - (n - 1 - j))
            step = int(rng.integers(1, room + 1)) if room >= 1 else int(positions[-1] < m - 1)
            positions.append(positions[-1] + step)
        chosen = [int(i) for i in rng.permutation(ids)[: self.max_objects]]
        return [order[q] for q in positions], first, chosen

    def _region_view(self, k: int, clip: ClipSample) -> ClipSample:
        """A grey ``clip`` shown as region mode shows crops (probability ``crop_contrast_probability``):
        each frame stretched by its own percentiles, its range at least half frame 0's
        (:mod:`rgmp_model.inference.crop_contrast`)."""
        if not self.crop_contrast_probability:
            return clip
        frames = clip.frames
        grey = float((frames - frames.mean(dim=1, keepdim=True)).abs().amax()) < 1e-3  # colour jitter keeps grey
        if not grey or np.random.default_rng((self.seed, k, 11)).random() >= self.crop_contrast_probability:
            return clip
        floor = 0.5 * crop_spread(frames[:1])[1]
        shown = torch.cat([normalise_crops(frames[:1]), normalise_crops(frames[1:], floor.expand(len(frames) - 1))])
        return dataclasses.replace(clip, frames=shown.contiguous())

    def _occlude(self, k: int, clip: ClipSample) -> ClipSample:
        """``clip`` with an occluder crossing it (probability ``occluder_probability``)."""
        rng = np.random.default_rng((self.seed, k, 7))
        if self.occluder_probability == 0 or rng.random() >= self.occluder_probability:
            return clip
        for _ in range(4):
            s = int(rng.choice(len(self.sources), p=self.weights))
            seq, stack = self._open(s, int(rng.integers(len(self.sources[s]))))
            t = int(rng.choice(seq.annotated))
            cut = cut_object(stack[t], np.asarray(seq.labels[t]), rng, self.min_object_pixels)
            if cut is not None:
                frames, labels = add_occluder(rng, clip.frames, clip.labels, *cut)
                return dataclasses.replace(clip, frames=frames.contiguous(), labels=labels.contiguous())
        return clip

    def _window(self, rng: np.random.Generator, box: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the clip's window in image pixels (may reach outside)."""
        ch, cw = self.crop_size
        base = min(1.0, max(ch / h, cw / w))
        lo, hi = np.log(self.scale_range)
        scale = base * float(np.exp(rng.uniform(lo, hi)))
        y0, y1, x0, x1 = box
        scale = max(min(scale, ch / (y1 - y0), cw / (x1 - x0)), base * self.scale_range[0])
        wh, ww = max(1, round(ch / scale)), max(1, round(cw / scale))
        return _offset(rng, h, wh, y0, y1), _offset(rng, w, ww, x0, x1), wh, ww

    def _render(self, rng: np.random.Generator, s: int, seq: VideoSequence, stack: FrameStack,
                indices: list[int], first: np.ndarray, chosen: list[int]) -> ClipSample:
        times = list(dict.fromkeys(indices))  # distinct frames, each read once
        labels = {indices[0]: _renumber(first, chosen)}
        labels.update({t: _renumber(np.asarray(seq.labels[t]), chosen) for t in times[1:]})
        union = np.logical_or.reduce([lab > 0 for lab in labels.values()])
        rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
        (h, w), (ch, cw) = union.shape, self.crop_size
        oy, ox, wh, ww = self._window(rng, (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1), h, w)
        flipped = self.flip and bool(rng.random() < 0.5)
        gains = rng.uniform(1 - self.colour_jitter, 1 + self.colour_jitter, 3)
        window = np.zeros((len(times), 3, wh, ww), np.float32)
        masks = np.zeros((len(times), wh, ww), np.uint8)
        for n, t in enumerate(times):
            part, (ys, xs) = _crop(stack[t], oy, ox, wh, ww)
            window[n, :, ys, xs] = part.transpose(2, 0, 1)
            masks[n, ys, xs] = _crop(labels[t], oy, ox, wh, ww)[0]
        ry = np.minimum(((np.arange(ch) + 0.5) * wh / ch).astype(np.intp), wh - 1)  # nearest neighbour
        rx = np.minimum(((np.arange(cw) + 0.5) * ww / cw).astype(np.intp), ww - 1)
        clip = torch.from_numpy(window)
        if (wh, ww) != (ch, cw):
            clip = F.interpolate(clip, size=(ch, cw), mode="bilinear", align_corners=False, antialias=wh > ch or ww > cw)
            clip = clip.clamp_(0.0, 1.0)
        if self.colour_jitter > 0:
            inside = np.zeros((wh, ww), np.float32)
            inside[ys, xs] = 1.0
            clip = _colour_jitter(clip, gains, torch.from_numpy(inside[ry][:, rx]))
        order = torch.tensor([times.index(t) for t in indices])
        clip, masks = clip[order], torch.from_numpy(masks[:, ry][:, :, rx].astype(np.int64))[order]
        if flipped:
            clip, masks = clip.flip(-1), masks.flip(-1)
        valid = torch.zeros(self.max_objects, dtype=torch.bool)
        valid[: len(chosen)] = True
        return ClipSample(clip.contiguous(), masks.contiguous(), valid, torch.tensor(len(chosen), dtype=torch.int64), s,
                          seq.name, tuple(indices), tuple(chosen), flipped)
