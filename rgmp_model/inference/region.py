"""Region mode: many small objects in large frames, each tracked in its own crop.

Full-frame propagation costs one pass of the network over the whole frame per object; with 40
cells in a 1024x1024 frame that is 40 megapixel passes per frame. In region mode every object
gets a square box around its previous mask (a context margin of ``context`` times its size on
each side, plus twice its last displacement so a fast cell stays inside), cropped from the
full-resolution frame and resized to one fixed network size; the reference crop is cut and
encoded once per keyframe. All crops of a frame go through the network in one batch, each
normalised by its own intensity percentiles (grey stacks; so that a dim nucleus looks like a
bright one; the range taken as at least half the object's range on the keyframe, so that the
noise of a crop the object left is not stretched into an object), and the object probabilities
are pasted back at full resolution and merged by RGMP's soft aggregation over the objects whose
boxes cover a pixel; an object's pixels (the aggregation's winners) are its previous mask for
the next frame. An object whose mask falls under ``min_area`` pixels (it left the frame or
vanished) gets confidence 0 and is dropped.

With ``split_divisions`` a part of an object that separates from it (a daughter cell) becomes
an object of its own, tracked from then on, with its parent recorded.

When to use it (``choose_region_mode``): when objects are small relative to the frame: the
median object's crop (box side x (1 + 2 context)) is at most a quarter of the frame's shorter
side, the frame's longer side exceeds ``region_min_frame`` (256 px) and no object's crop would
cover more than half of the frame's area. (It was 512 px until the tracks carried hard masks; on
the 512 px fluorescence sequences region mode is now the more accurate and 20-70x faster:
docs/benchmarks.md.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import Tensor
from torchvision.ops import roi_align

from rgmp_model.inference.crop_contrast import crop_spread, normalise_crops
from rgmp_model.inference.labels import object_boxes
from rgmp_model.nn.network import RGMP

__all__ = ["RegionOptions", "RegionTracker", "choose_region_mode", "object_boxes"]

_EPS = 1e-6


@dataclass(frozen=True)
class RegionOptions:
    """``crop_size``: network input side of every crop (a multiple of the network stride; None:
    chosen per keyframe from the median crop, 64-256 px). ``context``: margin on each side in
    box sizes. ``normalise``: per-crop percentile normalisation (None: on grey stacks only).
    ``min_area``: pixels below which an object counts as gone. ``split_divisions``: separated
    parts become new objects. ``batch``: crops per network call. ``min_contrast``: a crop's
    intensity range is stretched to [0, 1] only down to this fraction of its object's range on
    the keyframe, so that the noise of a crop the object left is not stretched into an object."""

    crop_size: int | None = None
    context: float = 0.75
    normalise: bool | None = None
    min_area: int = 6
    split_divisions: bool = False
    split_fraction: float = 0.2  # a part counts as separated when it holds this much of the object
    batch: int = 32
    min_contrast: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_size is not None and (self.crop_size < RGMP.stride or self.crop_size % RGMP.stride):
            raise ValueError(f"region crop_size must be a multiple of {RGMP.stride}, got {self.crop_size}")
        if (self.context < 0 or self.min_area < 1 or self.batch < 1 or not 0 < self.split_fraction < 0.5
                or self.min_contrast < 0):
            raise ValueError("region options: context >= 0, min_area >= 1, batch >= 1, 0 < split_fraction < 0.5, "
                             "min_contrast >= 0")


def _crop_side(box: tuple[int, int, int, int], context: float) -> float:
    return max(box[2] - box[0], box[3] - box[1]) * (1 + 2 * context)


def choose_region_mode(channels: np.ndarray, context: float = RegionOptions.context,
                       region_min_frame: int = 256) -> bool:
    """The automatic rule (see the module docstring) on a keyframe's (H, W) channel map."""
    height, width = channels.shape
    boxes = object_boxes(channels, [int(c) for c in np.unique(channels) if c > 0])
    if not boxes or max(height, width) <= region_min_frame:
        return False
    sides = [_crop_side(b, context) for b in boxes.values()]
    return float(np.median(sides)) <= min(height, width) / 4 and max(sides) ** 2 <= height * width / 2


@dataclass
class _Track:
    box: tuple[float, float, float, float]  # crop window (top, left, bottom, right) at full resolution
    previous: Tensor  # (h, w) aggregated probability inside ``patch``
    patch: tuple[int, int, int, int]  # integer window of ``previous`` in the frame
    reference: int  # row of the reference features
    centre: tuple[float, float]
    motion: float = 0.0
    area: float = 0.0
    contrast: float = 1.0  # the range of its reference crop (per-crop normalisation)


@dataclass
class StepResult:
    """One frame: ``channels`` (H, W) int64 winner channel (0 background); ``confidence``
    {channel: mean probability over its pixels, 0 when gone}; ``born`` {new channel: parent}."""

    channels: np.ndarray
    confidence: dict[int, float]
    born: dict[int, int] = field(default_factory=dict)


class RegionTracker:
    """Region-mode propagation of one stretch: :meth:`start` on the keyframe, then :meth:`step`
    per frame (:meth:`restart` goes back to the keyframe, its reference crops kept). Frames are
    (1, 3, H, W) float tensors at full resolution on the model's device. With ``keep_background``
    each step leaves the (H, W) background probability in ``last_background``."""

    def __init__(self, model: RGMP, options: RegionOptions, grey: bool, autocast_dtype: torch.dtype | None = None):
        self.model, self.options = model, options
        self.normalise = grey if options.normalise is None else options.normalise
        self.autocast_dtype = autocast_dtype
        self.tracks: dict[int, _Track] = {}
        self.crop_size = options.crop_size or 128
        self._reference_r5: Tensor | None = None
        self.next_channel = 1
        self._initial: tuple[dict[int, _Track], int] = ({}, 1)
        self.keep_background = False
        self.last_background: Tensor | None = None

    # ----------------------------------------------------------------------------- geometry
    def _window(self, box: tuple[int, int, int, int], motion: float, shape: tuple[int, int]) -> tuple[float, ...]:
        cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(_crop_side(box, self.options.context) + 4 * motion, 16.0)
        return (cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2)

    def _crops(self, image: Tensor, windows: list[tuple[float, ...]]) -> Tensor:
        """(1, C, H, W) -> (K, C, S, S) bilinear crops (zeros outside the frame)."""
        boxes = torch.tensor([[0, w[1], w[0], w[3], w[2]] for w in windows], dtype=image.dtype, device=image.device)
        s = self.crop_size
        return roi_align(image, boxes, output_size=(s, s), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    def _normalised(self, crops: Tensor, floor: Tensor | None = None) -> Tensor:
        """Grey crops shown as :func:`~rgmp_model.inference.crop_contrast.normalise_crops` does."""
        return normalise_crops(crops, floor) if self.normalise else crops

    # ----------------------------------------------------------------------------- network
    def _run(self, frames: Tensor, masks: Tensor, reference_r5: Tensor | None) -> Tensor:
        """(K, 3, S, S) crops and (K, S, S) masks -> (K, S, S) P(object), or the r5 features when
        ``reference_r5`` is None."""
        out = []
        autocast = (torch.autocast(frames.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                    else torch.autocast(frames.device.type, enabled=False))
        with autocast:
            for start in range(0, len(frames), self.options.batch):
                part = slice(start, start + self.options.batch)
                f = frames[part].contiguous(memory_format=torch.channels_last)
                m = masks[part][:, None].contiguous(memory_format=torch.channels_last)
                features = self.model.encode(f, m)
                if reference_r5 is None:
                    out.append(features.r5)
                else:
                    logits = self.model.decode(features, reference_r5[part]).logits
                    out.append(torch.softmax(logits.float(), dim=1)[:, 1])
        return torch.cat(out)

    # ----------------------------------------------------------------------------- stretch
    def start(self, frame: Tensor, channels: np.ndarray, active: list[int]) -> None:
        """Encode the reference crops of the ``active`` channels of the keyframe's (H, W) map
        (separated parts get channels from max(active) + 1 on)."""
        shape = channels.shape
        boxes = object_boxes(channels, active)
        if self.options.crop_size is None and boxes:
            median = float(np.median([_crop_side(b, self.options.context) for b in boxes.values()]))
            self.crop_size = int(np.clip(round(median / RGMP.stride) * RGMP.stride, 64, 256))
        order = sorted(boxes)
        windows = [self._window(boxes[c], 0.0, shape) for c in order]
        key = torch.from_numpy(channels).to(frame.device)
        masks = torch.stack([(key == c).float() for c in order])[:, None] if order else None
        self.tracks = {}
        self.next_channel = max(active, default=0) + 1
        self._initial = ({}, self.next_channel)
        if not order:
            self._reference_r5 = None
            return
        crops = self._crops(frame, windows)
        contrast = crop_spread(crops)[1].tolist() if self.normalise else [1.0] * len(order)
        crops = self._normalised(crops)
        mask_crops = torch.cat([self._crops(masks[k : k + 1], [windows[k]]) for k in range(len(order))])[:, 0]
        self._reference_r5 = self._run(crops, (mask_crops > 0.5).float(), None)
        for row, c in enumerate(order):
            t, l, b, r = boxes[c]
            patch = masks[row, 0, t:b, l:r]
            self.tracks[c] = _Track(windows[row], patch, (t, l, b, r), row, ((t + b) / 2, (l + r) / 2),
                                    area=float(patch.sum()), contrast=contrast[row])
        self._initial = ({c: replace(t) for c, t in self.tracks.items()}, self.next_channel)

    def restart(self) -> None:
        """Back to the state :meth:`start` left (the reference features are kept): for the other
        direction of a stretch, or propagating the stretch again."""
        tracks, self.next_channel = self._initial
        self.tracks = {c: replace(t) for c, t in tracks.items()}

    def _previous_crops(self, order: list[int]) -> Tensor:
        """Each track's previous probability, cut at its new window and resized to S x S."""
        out = []
        for c in order:
            track = self.tracks[c]
            t, l, b, r = track.patch
            prev = track.previous[None, None]
            window = track.box
            boxes = torch.tensor([[0, window[1] - l, window[0] - t, window[3] - l, window[2] - t]],
                                 dtype=prev.dtype, device=prev.device)
            out.append(roi_align(prev, boxes, (self.crop_size,) * 2, 1.0, 2, aligned=True)[0, 0])
        return torch.stack(out)

    def step(self, frame: Tensor) -> StepResult:
        """Propagate every live track to ``frame`` (1, 3, H, W); returns the frame's result."""
        height, width = frame.shape[-2:]
        order = sorted(self.tracks)
        confidence: dict[int, float] = {}
        if not order:
            self.last_background = torch.ones((height, width), device=frame.device) if self.keep_background else None
            return StepResult(np.zeros((height, width), np.int64), confidence)
        windows = [self.tracks[c].box for c in order]
        floor = torch.tensor([self.options.min_contrast * self.tracks[c].contrast for c in order], device=frame.device)
        crops = self._normalised(self._crops(frame, windows), floor)
        rows = torch.tensor([self.tracks[c].reference for c in order], device=frame.device)
        probabilities = self._run(crops, self._previous_crops(order), self._reference_r5[rows])
        # paste back: per object its probability over its integer window; background complement and odds
        log_background = torch.zeros((height, width), device=frame.device)
        odds_sum = torch.zeros((height, width), device=frame.device)
        pasted = {}
        for k, c in enumerate(order):
            top, left, bottom, right = self.tracks[c].box
            t0, l0 = max(int(np.floor(top)), 0), max(int(np.floor(left)), 0)
            t1, l1 = min(int(np.ceil(bottom)), height), min(int(np.ceil(right)), width)
            if t1 <= t0 or l1 <= l0:
                continue
            # the crop's pixel grid maps to [top, bottom) x [left, right); sample it at the integer pixels
            ys = (torch.arange(t0, t1, device=frame.device) + 0.5 - top) / (bottom - top) * 2 - 1
            xs = (torch.arange(l0, l1, device=frame.device) + 0.5 - left) / (right - left) * 2 - 1
            grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]
            p = F.grid_sample(probabilities[k][None, None], grid, mode="bilinear", align_corners=False)[0, 0]
            p = p.clamp(_EPS, 1 - _EPS)
            log_background[t0:t1, l0:l1] += torch.log1p(-p)
            odds_sum[t0:t1, l0:l1] += p / (1 - p)
            pasted[c] = ((t0, l0, t1, l1), p)
        background = log_background.exp().clamp(_EPS, 1 - _EPS)
        total = background / (1 - background) + odds_sum  # RGMP's aggregation: softmax over logits
        best = torch.full((height, width), 1.0, device=frame.device) * (background / (1 - background)) / total
        self.last_background = best.clone() if self.keep_background else None
        winner = torch.zeros((height, width), dtype=torch.int64, device=frame.device)
        aggregated = {}
        for c, ((t0, l0, t1, l1), p) in pasted.items():
            q = (p / (1 - p)) / total[t0:t1, l0:l1]
            aggregated[c] = q
            wins = q > best[t0:t1, l0:l1]
            best[t0:t1, l0:l1] = torch.where(wins, q, best[t0:t1, l0:l1])
            winner[t0:t1, l0:l1] = torch.where(wins, torch.full_like(winner[t0:t1, l0:l1], c), winner[t0:t1, l0:l1])
        channels = winner.cpu().numpy()
        born: dict[int, int] = {}
        for c in order:
            if c not in pasted:
                confidence[c] = 0.0
                del self.tracks[c]
                continue
            (t0, l0, t1, l1), _ = pasted[c]
            region = channels[t0:t1, l0:l1] == c
            area = int(region.sum())
            if area < self.options.min_area:  # left the frame or vanished: dropped, never smeared
                confidence[c] = 0.0
                channels[t0:t1, l0:l1][region] = 0
                del self.tracks[c]
                continue
            confidence[c] = float(aggregated[c][torch.from_numpy(region).to(frame.device)].mean())
            if self.options.split_divisions:  # the parts become new channels; the parent keeps its own part
                born.update(self._split(c, channels, (t0, l0, t1, l1), aggregated[c], area, confidence))
            self._advance(c, channels, (t0, l0, t1, l1), (height, width))
        return StepResult(channels, confidence, born)

    def _advance(self, c: int, channels: np.ndarray, patch: tuple[int, int, int, int], shape: tuple[int, int]) -> None:
        """Move track ``c`` to where its pixels are now (its next window); its previous mask for the
        next frame is those pixels (hard), not the aggregated probability: cut, resized and pasted
        back frame after frame, a soft mask loses mass and a dim nucleus
        shrinks until it is lost (measured with ``benchmarks/accuracy.py fluorescence --region on``,
        docs/benchmarks.md)."""
        t0, l0, t1, l1 = patch
        region = channels[t0:t1, l0:l1] == c
        ys, xs = np.nonzero(region)
        box = (t0 + int(ys.min()), l0 + int(xs.min()), t0 + int(ys.max()) + 1, l0 + int(xs.max()) + 1)
        track = self.tracks[c]
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        motion = float(np.hypot(centre[0] - track.centre[0], centre[1] - track.centre[1]))
        track.motion = max(motion, 0.5 * track.motion)
        hard = torch.from_numpy(region.astype(np.float32)).to(track.previous.device)
        track.centre, track.area, track.patch, track.previous = centre, float(region.sum()), patch, hard
        track.box = self._window(box, track.motion, shape)

    def _split(self, c: int, channels: np.ndarray, patch: tuple[int, int, int, int], q: Tensor, area: int,
               confidence: dict[int, float]) -> dict[int, int]:
        """Separated parts of object ``c`` holding >= split_fraction of it become new channels."""
        t0, l0, t1, l1 = patch
        view = channels[t0:t1, l0:l1]
        parts, count = ndi.label(view == c)
        if count < 2:
            return {}
        sizes = np.bincount(parts.ravel())[1:]
        big = [i + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= self.options.split_fraction * area]
        born = {}
        for part in big[1:]:  # the largest part keeps the id
            new = self.next_channel
            self.next_channel += 1
            piece = parts == part
            view[piece] = new
            mask = torch.from_numpy(piece).to(q.device)
            confidence[new] = float(q[mask].mean())
            parent = self.tracks[c]
            self.tracks[new] = _Track(parent.box, mask.float(), patch, parent.reference, parent.centre, parent.motion,
                                      contrast=parent.contrast)
            self._advance(new, channels, patch, channels.shape)
            born[new] = c
        return born
