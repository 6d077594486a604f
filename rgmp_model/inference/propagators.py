"""Per-frame propagation steps on tensors.

Two procedures share one interface: ``encode_reference(frame, masks)`` once per keyframe, then
``step(reference, previous, frame)`` per frame, returning the frame's probabilities over
background + K objects and the state to feed to the next frame.

- :class:`BatchedPropagator` (the default): all K objects of a frame go through the network as
  one batch; their probabilities are merged by soft aggregation (RGMP's multi-object rule: the
  background is prod(1 - p_k), then softmax over the logits of background and objects).
- :class:`OfficialPropagator`: the authors' ``run.py`` procedure, exactly: each object separately
  plus a separate pass for the union of all objects (background = 1 - its probability); scales
  0.5 / 0.75 / 1.0 averaged; frames padded so that 32 - (size mod 32) is always added; resizing
  as OpenCV's INTER_LINEAR (= bilinear, half-pixel centres, no antialiasing); the previous mask
  kept at the padded size. The passes may be batched, which changes nothing but the speed.

How many masks go through the network per call is ``object_batch``: batching pays on a GPU, but
on a CPU the per-object time grows with the batch (activations outgrow the caches), so the
engine sends them one at a time there. The network runs in channels-last memory format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rgmp_model.inference.frame_feed import to_host
from rgmp_model.nn.inference import encode_r5, object_probability
from rgmp_model.nn.network import RGMP

PAD_MULTIPLE = RGMP.stride  # the network stride: frames are padded to multiples of it
OFFICIAL_SCALES = (0.5, 0.75, 1.0)
_EPS = 1e-7


@dataclass(frozen=True)
class Padding:
    """Zero padding added around a frame: top, bottom, left, right (pixels)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def to_multiple(cls, height: int, width: int, always: bool = False) -> "Padding":
        """Centred padding to a multiple of 32; ``always`` adds 32 - size % 32 even to a size that
        is already a multiple (the authors' rule: 480 -> 512)."""
        extra_h = PAD_MULTIPLE - height % PAD_MULTIPLE if always else -height % PAD_MULTIPLE
        extra_w = PAD_MULTIPLE - width % PAD_MULTIPLE if always else -width % PAD_MULTIPLE
        return cls(extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)

    def apply(self, x: Tensor) -> Tensor:
        """(..., h, w) -> (..., h + top + bottom, w + left + right), zeros outside."""
        return F.pad(x, (self.left, self.right, self.top, self.bottom))

    def crop(self, x: Tensor) -> Tensor:
        """Inverse of ``apply``."""
        return x[..., self.top : x.shape[-2] - self.bottom, self.left : x.shape[-1] - self.right]


def resize_bilinear(x: Tensor, size: tuple[int, int], antialias: bool = False) -> Tensor:
    """(B, C, h, w) -> (B, C, *size), bilinear with half-pixel centres (align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)


def logit_softmax(probabilities: Tensor) -> Tensor:
    """(K+1, h, w) probabilities -> softmax over channels of their logits (clamped to 1e-7)."""
    p = probabilities.clamp(_EPS, 1 - _EPS)
    return torch.softmax(torch.log(p / (1 - p)), dim=0)


def soft_aggregate(object_probabilities: Tensor) -> Tensor:
    """(K, h, w) independent object probabilities -> (K+1, h, w): background prod(1 - p_k)
    first, then the objects, normalised by ``logit_softmax``."""
    background = torch.prod(1 - object_probabilities, dim=0, keepdim=True)
    return logit_softmax(torch.cat([background, object_probabilities], dim=0))


def winners(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """(C, H, W) probabilities -> the (H, W) int64 channel of each pixel's largest probability
    (the first of equal ones, as ``argmax``) and that probability. A pass per channel: ``argmax``
    over the first dimension of a few channels is 20x slower on the CPU."""
    best = probabilities[0].clone()
    winner = torch.zeros(best.shape, dtype=torch.int64, device=best.device)
    for channel in range(1, len(probabilities)):
        better = probabilities[channel] > best
        best = torch.where(better, probabilities[channel], best)
        winner.masked_fill_(better, channel)
    return winner, best


def winner_scores(winner: Tensor, best: Tensor, channels: int) -> Tensor:
    """(H, W) winning channel and its probability -> (channels,) float64 mean probability over
    the pixels each channel wins (0 where it wins none)."""
    flat = winner.reshape(-1)
    sums = torch.bincount(flat, weights=best.reshape(-1).double(), minlength=channels)[:channels]
    counts = torch.bincount(flat, minlength=channels)[:channels]
    return torch.where(counts > 0, sums / counts.clamp_min(1), 0.0)


def winners_on_host(winner: Tensor, scores: Tensor) -> tuple[np.ndarray, list[float]]:
    """The (H, W) winners (as bytes when they fit) and their channels' scores on the host, in one
    transfer (:func:`~rgmp_model.inference.frame_feed.to_host`)."""
    if len(scores) <= 256:
        winner = winner.to(torch.uint8)
    winner, scores = to_host(winner, scores)
    return winner.numpy(), scores.tolist()


def winner_confidence(probabilities: Tensor, winner: Tensor, object_ids: Iterable[int]) -> dict[int, float]:
    """(C, H, W) probabilities, (H, W) argmax channel -> {object id: mean probability over the
    pixels it wins} for channels 1.. in ``object_ids`` order (0.0 where an object wins nothing)."""
    best = probabilities.gather(0, winner[None])[0]
    scores = winner_scores(winner, best, len(probabilities)).tolist()
    return {int(object_id): scores[channel] for channel, object_id in enumerate(object_ids, start=1)}


@dataclass
class Reference:
    """Reference features of one keyframe: r5 per scale (B, C5, h/32, w/32), the state to start
    propagating from, and the padding used (official mode)."""

    r5: dict[float, Tensor]
    initial_previous: Tensor
    padding: Padding | None = None


class _Propagator:
    """Shared by both procedures: network calls (:mod:`rgmp_model.nn.inference`: channels-last,
    autocast unless the weights are cast already), in chunks of at most ``object_batch`` masks
    (None = all at once). ``model``: the network as :func:`~rgmp_model.nn.inference.inference_network`
    made it (any RGMP works)."""

    def __init__(
        self,
        model: RGMP,
        scales: Sequence[float],
        autocast_dtype: torch.dtype | None = None,
        object_batch: int | None = None,
    ) -> None:
        if not scales or any(not 0 < s <= 4 for s in scales):
            raise ValueError(f"scales must be a non-empty list of factors in (0, 4], got {scales}")
        if object_batch is not None and object_batch < 1:
            raise ValueError(f"object_batch must be >= 1 or None, got {object_batch}")
        self.model = model
        self.scales = tuple(float(s) for s in scales)
        self.autocast_dtype = autocast_dtype
        self.object_batch = object_batch

    def _chunks(self, count: int) -> list[slice]:
        size = self.object_batch or count
        return [slice(start, start + size) for start in range(0, count, size)]

    def _object_probability(self, frame: Tensor, masks: Tensor, reference_r5: Tensor) -> Tensor:
        """frame (1, 3, H, W), masks (B, H, W), H and W multiples of 32 -> (B, H, W) P(object)."""
        return torch.cat([object_probability(self.model, frame, masks[chunk], reference_r5[chunk], self.autocast_dtype)
                          for chunk in self._chunks(len(masks))])

    def _reference_r5(self, frame: Tensor, masks: Tensor) -> Tensor:
        """frame (1, 3, H, W), masks (B, H, W) -> (B, C5, H/32, W/32)."""
        return torch.cat([encode_r5(self.model, frame, masks[chunk], self.autocast_dtype)
                          for chunk in self._chunks(len(masks))])


class BatchedPropagator(_Propagator):
    """All objects in one batch, soft aggregation, frames padded only as much as needed."""

    def _scaled(self, x: Tensor, scale: float) -> tuple[Tensor, Padding]:
        h, w = x.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = resize_bilinear(x, size)
        padding = Padding.to_multiple(*size)
        return padding.apply(x), padding

    def encode_reference(self, frame: Tensor, masks: Tensor) -> Reference:
        """frame (1, 3, h, w) in [0, 1], masks (K, h, w) in [0, 1] -> Reference."""
        r5 = {}
        for scale in self.scales:
            scaled_frame = self._scaled(frame, scale)[0]
            scaled_masks = self._scaled(masks[None], scale)[0][0]
            r5[scale] = self._reference_r5(scaled_frame, scaled_masks)
        return Reference(r5, masks)

    def step(self, reference: Reference, previous: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        """previous (K, h, w) object probabilities, frame (1, 3, h, w) ->
        ((K+1, h, w) aggregated probabilities, next previous (K, h, w))."""
        h, w = frame.shape[-2:]
        total = torch.zeros_like(previous)
        for scale in self.scales:
            scaled_frame, padding = self._scaled(frame, scale)
            scaled_masks = self._scaled(previous[None], scale)[0][0]
            p = padding.crop(self._object_probability(scaled_frame, scaled_masks, reference.r5[scale]))
            total += resize_bilinear(p[None], (h, w))[0]
        probabilities = soft_aggregate(total / len(self.scales))
        return probabilities, probabilities[1:]


class OfficialPropagator(_Propagator):
    """The authors' procedure (``run.py``: Infer_SO / Infer_MO with Encode_MS / Propagate_MS)."""

    def __init__(self, model: RGMP, scales: Sequence[float] = OFFICIAL_SCALES,
                 autocast_dtype: torch.dtype | None = None, object_batch: int | None = None) -> None:
        super().__init__(model, scales, autocast_dtype, object_batch)

    @staticmethod
    def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
        """The authors' size at ``scale``: int(size * scale), then always up past a multiple of 32."""
        h, w = int(height * scale), int(width * scale)
        return h + PAD_MULTIPLE - h % PAD_MULTIPLE, w + PAD_MULTIPLE - w % PAD_MULTIPLE

    def _at_scale(self, x: Tensor, scale: float) -> Tensor:
        if scale == 1.0:
            return x
        return resize_bilinear(x, self.scaled_size(*x.shape[-2:], scale))

    @staticmethod
    def _pass_masks(objects: Tensor) -> Tensor:
        """(K, H, W) object masks -> the masks of the passes: the object alone when K == 1,
        else the union of all objects (background pass) followed by each object."""
        if len(objects) == 1:
            return objects
        return torch.cat([objects.sum(0, keepdim=True), objects], dim=0)

    def encode_reference(self, frame: Tensor, masks: Tensor) -> Reference:
        """frame (1, 3, h, w) in [0, 1], masks (K, h, w) one-hot -> Reference (padded state)."""
        padding = Padding.to_multiple(*frame.shape[-2:], always=True)
        frame, masks = padding.apply(frame), padding.apply(masks)
        passes = self._pass_masks(masks)
        r5 = {}
        for scale in self.scales:
            scaled_frame = self._at_scale(frame, scale)
            scaled_masks = self._at_scale(passes[None], scale)[0]
            r5[scale] = self._reference_r5(scaled_frame, scaled_masks)
        return Reference(r5, masks, padding)

    def step(self, reference: Reference, previous: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        """previous (K, H+pad, W+pad), frame (1, 3, h, w) -> ((K+1, h, w), next previous)."""
        assert reference.padding is not None
        frame = reference.padding.apply(frame)
        height, width = frame.shape[-2:]
        passes = self._pass_masks(previous)
        total = torch.zeros_like(passes)
        for scale in self.scales:  # summed in the authors' order, then divided
            p = self._object_probability(
                self._at_scale(frame, scale), self._at_scale(passes[None], scale)[0], reference.r5[scale]
            )
            total += resize_bilinear(p[None], (height, width))[0]
        p = total / len(self.scales)
        if len(previous) == 1:  # Infer_SO: no background pass, no normalisation
            probabilities = torch.cat([1 - p, p], dim=0)
        else:
            probabilities = logit_softmax(torch.cat([1 - p[:1], p[1:]], dim=0))
        return reference.padding.crop(probabilities), probabilities[1:]
