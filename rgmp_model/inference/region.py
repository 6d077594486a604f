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
from scipy import ndimage as ndi
from torch import Tensor

from rgmp_model.inference.crop_contrast import crop_spread, normalise_crops
from rgmp_model.inference.frame_feed import to_host
from rgmp_model.inference.labels import object_boxes
from rgmp_model.inference.region_crops import cut_windows
from rgmp_model.inference.region_paste import Merged, paste_and_merge
from rgmp_model.nn.graphs import bucket
from rgmp_model.nn.inference import encode_r5, object_probability
from rgmp_model.nn.network import RGMP

__all__ = ["RegionOptions", "RegionTracker", "choose_region_mode"]

# On the CPU at most this many crop pixels go through the network per call: every activation
# stays under glibc's largest recycled allocation (32 MB), which a batch of 40 crops of 96 px
# outgrows (each of its larger activations then costs thousands of fresh pages: 10% more time).
CPU_CROP_PIXELS = 192 * 1024


@dataclass(frozen=True)
class RegionOptions:
    """``crop_size``: network input side of every crop (a multiple of the network stride; None:
    chosen per keyframe: the median crop's side times ``crop_scale``, 64-256 px). ``crop_scale``:
    network pixels per frame pixel that the automatic size aims at; 2 (each object seen at twice
    its size) keeps a large low-contrast nucleus's outline where one step at 1 placed it inside,
    5-15% of its area a frame, and lifts the fluorescence set (docs/benchmarks.md, "why masks
    shrink"). ``context``: margin on each side in
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
    crop_scale: float = 2.0

    def __post_init__(self) -> None:
        if self.crop_size is not None and (self.crop_size < RGMP.stride or self.crop_size % RGMP.stride):
            raise ValueError(f"region crop_size must be a multiple of {RGMP.stride}, got {self.crop_size}")
        if (self.context < 0 or self.min_area < 1 or self.batch < 1 or not 0 < self.split_fraction < 0.5
                or self.min_contrast < 0 or self.crop_scale <= 0):
            raise ValueError("region options: context >= 0, min_area >= 1, batch >= 1, 0 < split_fraction < 0.5, "
                             "min_contrast >= 0, crop_scale > 0")


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
    patch: tuple[int, int, int, int]  # integer window of its pixels in the frame (its last paste window)
    reference: int  # row of the reference features
    centre: tuple[float, float]
    labels: Tensor  # (H, W) channel map of the frame its pixels are from (shared by all tracks)
    channel: int
    pixels: tuple[int, int, int, int]  # the box of its pixels in ``labels``
    motion: float = 0.0
    area: float = 0.0
    contrast: float = 1.0  # the range of its reference crop (per-crop normalisation)

    def copy(self) -> "_Track":
        """A shallow copy (the fields are numbers, tuples and the shared channel map)."""
        twin = object.__new__(_Track)
        twin.__dict__.update(self.__dict__)
        return twin

    @property
    def previous(self) -> Tensor:
        """(h, w) bool: the object's pixels inside ``patch``, its previous mask."""
        t0, l0, t1, l1 = self.patch
        return self.labels[t0:t1, l0:l1] == self.channel


@dataclass
class StepResult:
    """One frame: ``channels`` (H, W) int32 winner channel (0 background; the tracker keeps it
    as the next frame's masks: read it, do not write it); ``confidence`` {channel: mean
    probability over its pixels, 0 when gone}; ``born`` {new channel: parent}; ``pixels`` and
    ``winners``: the same map as flat indices of its non-zero pixels and their channels (None
    when parts were born)."""

    channels: np.ndarray
    confidence: dict[int, float]
    born: dict[int, int] = field(default_factory=dict)
    pixels: np.ndarray | None = None
    winners: np.ndarray | None = None


class RegionTracker:
    """Region-mode propagation of one stretch: :meth:`start` on the keyframe, then :meth:`step`
    per frame (:meth:`restart` goes back to the keyframe, its reference crops kept). Frames are
    (1, C, H, W) float tensors at full resolution on the model's device, C = 1 (grey: repeated
    to RGB after cropping) or 3. ``model``: the network as
    :func:`~rgmp_model.nn.inference.inference_network` made it (any RGMP works). With
    ``keep_background`` each step leaves the (H, W) background probability in ``last_background``.
    The crops are cut, and pasted back, in one batch (:mod:`rgmp_model.inference.region_paste`);
    one transfer per frame brings the winners and each object's area, score and box to the host."""

    def __init__(self, model: RGMP, options: RegionOptions, grey: bool, autocast_dtype: torch.dtype | None = None):
        self.model, self.options = model, options
        self.normalise = grey if options.normalise is None else options.normalise
        self.autocast_dtype = autocast_dtype
        self.tracks: dict[int, _Track] = {}
        self.crop_size = options.crop_size or 128
        self._reference_r5: Tensor | None = None
        self.next_channel = 1
        self._initial: tuple[dict[int, _Track], int, Tensor | None] = ({}, 1, None)
        self._labels: Tensor | None = None  # (H, W) int32 channel map of the last frame, on the device
        self.keep_background = False
        self.last_background: Tensor | None = None
        self._slots: Tensor | None = None  # paste_and_merge's working index, kept from frame to frame

    # ----------------------------------------------------------------------------- geometry
    def _window(self, box: tuple[int, int, int, int], motion: float, shape: tuple[int, int]) -> tuple[float, ...]:
        cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(_crop_side(box, self.options.context) + 4 * motion, 16.0)
        return (cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2)

    def _crops(self, image: Tensor, windows: list[tuple[float, ...]], labels: Tensor | None = None,
               channels: list[int] = (), boxes: list[tuple[int, int, int, int]] | None = None,
               patches: list[tuple[int, int, int, int]] | None = None) -> tuple[Tensor, Tensor | None]:
        """(1, C, H, W) -> (K, C, S, S) bilinear crops (zeros outside the frame), and with an
        (H, W) channel map ``labels`` the (K, S, S) crops of each object's mask (its pixels in
        ``labels``, the channels ``channels``, inside ``boxes``, cut from ``patches`` or the whole
        map), in one batch (:mod:`region_crops`)."""
        return cut_windows(image[0], windows, self.crop_size, labels, channels, boxes, patches)

    def _normalised(self, crops: Tensor, floor: Tensor | None = None) -> Tensor:
        """Grey crops shown as :func:`~rgmp_model.inference.crop_contrast.normalise_crops` does."""
        return normalise_crops(crops, floor) if self.normalise else crops

    # ----------------------------------------------------------------------------- network
    def _calls(self, count: int, device: torch.device) -> list[slice]:
        """The crops of each network call: at most ``options.batch`` (on the CPU also at most
        ``CPU_CROP_PIXELS`` crop pixels), in calls of equal size."""
        most = self.options.batch
        if device.type == "cpu":
            most = max(1, min(most, CPU_CROP_PIXELS // self.crop_size**2))
        calls = -(-count // most)
        size = -(-count // calls) if count else 1
        return [slice(start, start + size) for start in range(0, count, size)]

    def _run(self, frames: Tensor, masks: Tensor, reference_r5: Tensor | None) -> Tensor:
        """(K, C, S, S) crops (C = 1 is repeated to RGB) and (K, S, S) masks -> (K, S, S)
        P(object), or the r5 features when ``reference_r5`` is None."""
        out = []
        graphs = getattr(self.model, "graphs", None) is not None
        for part in self._calls(len(frames), frames.device):
            crops, held = frames[part].expand(-1, 3, -1, -1), masks[part]
            references = reference_r5[part] if reference_r5 is not None else None
            count = len(crops)
            if graphs:  # crop counts rounded up to a few buckets: shapes that repeat (nn/graphs.py)
                crops, held, references = (_padded(t, bucket(count)) if t is not None else None
                                           for t in (crops, held, references))
            if references is None:
                out.append(encode_r5(self.model, crops, held, self.autocast_dtype)[:count])
            else:
                out.append(object_probability(self.model, crops, held, references, self.autocast_dtype)[:count])
        return torch.cat(out)

    # ----------------------------------------------------------------------------- stretch
    def start(self, frame: Tensor, channels: np.ndarray, active: list[int]) -> None:
        """Encode the reference crops of the ``active`` channels of the keyframe's (H, W) map
        (separated parts get channels from max(active) + 1 on). ``frame``: (1, C, H, W), C = 1
        (grey) or 3, on the model's device."""
        shape = channels.shape
        boxes = object_boxes(channels, active)
        if self.options.crop_size is None and boxes:
            median = float(np.median([_crop_side(b, self.options.context) for b in boxes.values()]))
            side = median * self.options.crop_scale
            self.crop_size = int(np.clip(round(side / RGMP.stride) * RGMP.stride, 64, 256))
        order = sorted(boxes)
        windows = [self._window(boxes[c], 0.0, shape) for c in order]
        self.tracks = {}
        self.next_channel = max(active, default=0) + 1
        self._initial = ({}, self.next_channel, None)
        if not order:
            self._reference_r5 = None
            return
        key = torch.from_numpy(channels.astype(np.int32, copy=False)).to(frame.device)
        crops, mask_crops = self._crops(frame, windows, key, order, [boxes[c] for c in order])
        contrast = crop_spread(crops)[1].tolist() if self.normalise else [1.0] * len(order)
        crops = self._normalised(crops)
        self._reference_r5 = self._run(crops, (mask_crops > 0.5).float(), None)
        for row, c in enumerate(order):
            t, l, b, r = boxes[c]
            self.tracks[c] = _Track(windows[row], (t, l, b, r), row, ((t + b) / 2, (l + r) / 2), key, c, boxes[c],
                                    area=float((key[t:b, l:r] == c).sum()), contrast=contrast[row])
        self._labels = key
        self._initial = ({c: t.copy() for c, t in self.tracks.items()}, self.next_channel, key)

    def restart(self) -> None:
        """Back to the state :meth:`start` left (the reference features are kept): for the other
        direction of a stretch, or propagating the stretch again."""
        self.set_state(self._initial)

    def state(self) -> tuple[dict[int, _Track], int, Tensor | None]:
        """The tracks, the next new channel and the last channel map: what :meth:`step` changes
        (for a retry from the same state; :meth:`set_state` takes it back)."""
        return dict(self.tracks), self.next_channel, self._labels

    def set_state(self, state: tuple[dict[int, _Track], int, Tensor | None]) -> None:
        """Back to a :meth:`state`: the tracks are copied, so the state stays as it was."""
        tracks, self.next_channel, self._labels = state
        self.tracks = {c: t.copy() for c, t in tracks.items()}

    def step(self, frame: Tensor) -> StepResult:
        """Propagate every live track to ``frame`` (1, C, H, W), C = 1 (grey) or 3; returns the
        frame's result."""
        height, width = frame.shape[-2:]
        order = sorted(self.tracks)
        confidence: dict[int, float] = {}
        if not order:
            self.last_background = torch.ones((height, width), device=frame.device) if self.keep_background else None
            return StepResult(np.zeros((height, width), np.int32), confidence)
        windows = [self.tracks[c].box for c in order]
        floor = torch.tensor([self.options.min_contrast * self.tracks[c].contrast for c in order], device=frame.device)
        tracks = [self.tracks[c] for c in order]  # previous: each object's pixels, from its patch
        crops, previous = self._crops(frame, windows, self._labels, order, [t.pixels for t in tracks],
                                      [t.patch for t in tracks])
        rows = torch.tensor([self.tracks[c].reference for c in order], device=frame.device)
        probabilities = self._run(self._normalised(crops, floor), previous, self._reference_r5[rows])
        slots = self._slots
        if (slots is None or slots.numel() != height * width + 1 or slots.device != frame.device
                or slots.is_inference() != torch.is_inference_mode_enabled()):
            self._slots = torch.full((height * width + 1,), -1, dtype=torch.int64, device=frame.device)
        merged = paste_and_merge(probabilities, windows, (height, width), self.keep_background, self._slots)
        self.last_background = merged.background
        channels, labels, (pixels, winners), (area, score, box) = self._to_host(merged, order, (height, width))
        born: dict[int, int] = {}
        for k, c in enumerate(order):
            if merged.patches[k] is None or area[k] < self.options.min_area:
                # left the frame or vanished: dropped, never smeared (its pixels were not written)
                confidence[c] = 0.0
                del self.tracks[c]
                continue
            confidence[c] = score[k] / area[k]
            if self.options.split_divisions:  # the parts become new channels; the parent keeps its own part
                q = merged.patch_values(k, merged.q)
                born.update(self._split(c, channels, merged.patches[k], q, int(area[k]), confidence))
                region = channels[_slices(merged.patches[k])] == c
                if int(region.sum()) != int(area[k]):  # a part left: the parent keeps the rest
                    self._advance_to_pixels(c, channels, merged.patches[k], (height, width))
                    continue
            self._advance(c, tuple(int(v) for v in box[k]), float(area[k]), merged.patches[k], (height, width))
        if labels.device.type != "cpu" and born:  # the new parts' channels, written on the host
            labels = torch.from_numpy(channels).to(labels.device)
        self._labels = labels  # on the CPU the same memory as ``channels``
        for track in self.tracks.values():
            track.labels = labels
        if born:
            pixels = winners = None
        return StepResult(channels, confidence, born, pixels, winners)

    def _to_host(self, merged: Merged, order: list[int], shape: tuple[int, int]
                 ) -> tuple[np.ndarray, Tensor, tuple[np.ndarray, np.ndarray], tuple[list, list, list]]:
        """The frame's (H, W) int32 channel map (the winners of the objects that stay) on the host
        and on the device, its non-zero pixels (flat) and their channels, and per object (area,
        score, box): one transfer from the device."""
        winning = merged.won.nonzero().view(-1)
        keep = merged.area >= self.options.min_area
        winning = winning[keep.take(merged.owner.take(winning))]
        pixel = merged.pixel.take(winning)
        channel = torch.tensor(order, dtype=torch.int32, device=pixel.device).take(merged.owner.take(winning))
        stats = torch.cat([merged.area[:, None], merged.score[:, None], merged.box.to(merged.area.dtype)], dim=1)
        labels = torch.zeros(shape[0] * shape[1], dtype=torch.int32, device=pixel.device)
        labels[pixel] = channel
        if pixel.device.type == "cpu":
            channels = labels.numpy()  # the same memory
        else:  # the winners come over, not the frame
            pixel, channel, stats = to_host(pixel, channel, stats)
            channels = np.zeros(shape[0] * shape[1], np.int32)
            channels[pixel.numpy()] = channel.numpy()
        values = stats.numpy()
        return (channels.reshape(shape), labels.view(shape), (pixel.numpy(), channel.numpy()),
                (values[:, 0].tolist(), values[:, 1].tolist(), values[:, 2:].astype(np.int64).tolist()))

    def _advance(self, c: int, box: tuple[int, int, int, int], area: float, patch: tuple[int, int, int, int],
                 shape: tuple[int, int]) -> None:
        """Move track ``c`` to where its pixels are now: their ``box`` (its next window); its
        previous mask for the next frame is those pixels (hard: the frame's channel map inside
        ``patch``), not the aggregated probability: cut, resized and pasted back frame after
        frame, a soft mask loses mass and a dim nucleus shrinks until it is lost (measured with
        ``benchmarks/accuracy.py fluorescence --region on``, docs/benchmarks.md)."""
        track = self.tracks[c]
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        motion = float(np.hypot(centre[0] - track.centre[0], centre[1] - track.centre[1]))
        track.motion = max(motion, 0.5 * track.motion)
        track.centre, track.area, track.patch, track.pixels = centre, area, patch, box
        track.box = self._window(box, track.motion, shape)

    def _advance_to_pixels(self, c: int, channels: np.ndarray, patch: tuple[int, int, int, int],
                           shape: tuple[int, int]) -> None:
        """:meth:`_advance` to channel ``c``'s pixels in the (H, W) map inside ``patch``."""
        t0, l0, t1, l1 = patch
        region = channels[t0:t1, l0:l1] == c
        ys, xs = np.nonzero(region)
        box = (t0 + int(ys.min()), l0 + int(xs.min()), t0 + int(ys.max()) + 1, l0 + int(xs.max()) + 1)
        self._advance(c, box, float(region.sum()), patch, shape)

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
            self.tracks[new] = replace(parent, channel=new)
            self._advance_to_pixels(new, channels, patch, channels.shape)
            born[new] = c
        return born


def _slices(patch: tuple[int, int, int, int]) -> tuple[slice, slice]:
    return slice(patch[0], patch[2]), slice(patch[1], patch[3])


def _padded(batch: Tensor, count: int) -> Tensor:
    """``batch`` with zeros appended up to ``count`` items."""
    if len(batch) >= count:
        return batch
    return torch.cat([batch, batch.new_zeros((count - len(batch), *batch.shape[1:]))])
