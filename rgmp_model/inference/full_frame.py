"""Full-frame mode: a session's stretches run on whole frames at the working size, each frame's work
guarded against running out of memory (:mod:`rgmp_model.inference.memory`).

:class:`FullFrameRunner` (beside :class:`~rgmp_model.inference.region_stretch.RegionRunner`) owns
the keyframes' reference features encoded at the working size (encoded once per keyframe, dropped
when the keyframe, the working size or the network changes) and walks a stretch's frames in one
direction after the other from the keyframe: per frame the frame at the working size
(:class:`~rgmp_model.inference.working_size.WorkingSize`), flow guidance, the propagator's step and
the result at full size. A frame's state (the previous probabilities, the flow's last grey frame)
is committed only once the frame is done, so a frame that runs out of memory is retried from the
same state: at a smaller working size (the reference features at the old size are encoded again,
the previous probabilities resized), or, when the full-size result failed on a GPU, with that
resize on the CPU. No frame is yielded twice.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from rgmp_model.inference.flow import dense_flow, grey, warp_along_flow
from rgmp_model.inference.frame_feed import FrameFeed
from rgmp_model.inference.labels import ObjectIds
from rgmp_model.inference.memory import MemoryGuard
from rgmp_model.inference.options import PropagationOptions
from rgmp_model.inference.propagators import (
    Padding, Reference, resize_bilinear, winner_scores, winners, winners_on_host,
)
from rgmp_model.inference.working_size import WorkingSize

__all__ = ["FrameResult", "FullFrameRunner", "RunnerResult"]
FrameResult = tuple[int, np.ndarray, dict[int, float]]
RunnerResult = tuple[int, np.ndarray, dict[int, float], "np.ndarray | None"]  # + probabilities (with keep)


class FullFrameRunner:
    """Full-frame mode for one session: its ``propagator`` (default or official), the ``feed`` of
    its frames, its ``working`` size, ``options`` (resolved), ``device`` and memory ``guard``."""

    def __init__(self, propagator: Any, feed: FrameFeed, working: WorkingSize, options: PropagationOptions,
                 device: torch.device, guard: MemoryGuard) -> None:
        self.propagator, self.feed, self.working = propagator, feed, working
        self.options, self.device, self.guard = options, device, guard
        self.result_on_cpu = False  # set by a retry when the resize to full size ran out of GPU memory
        self._references: dict[int, tuple[tuple[int, ...], Reference]] = {}  # keyframe -> (ids, features)

    # ------------------------------------------------------------------ the reference cache
    def forget(self, keyframe: int) -> None:
        """``keyframe``'s labels changed or it is gone: its features go."""
        self._references.pop(keyframe, None)

    def clear(self) -> None:
        """The working size or the network changed: every encoded feature goes."""
        self._references.clear()

    def set_network(self, network: Any) -> None:
        """Run ``network`` from now on (e.g. adapted to the keyframes); features encoded by the old one go."""
        self.propagator.model = network
        self.clear()

    def reference(self, index: int, channels: Tensor, active: Tensor, objects: ObjectIds) -> Reference:
        """The reference features of keyframe ``index`` for its ``active`` channels, encoded
        once and kept until the keyframe changes (keyed by the ids, not the channels: a new
        object elsewhere shifts channels but not this keyframe's masks)."""
        ids = tuple(int(objects.ids[c - 1]) for c in active.tolist())
        kept = self._references.get(index)
        if kept is not None and kept[0] == ids:
            return kept[1]
        masks = (channels[None] == active[:, None, None]).float()
        reference = self.propagator.encode_reference(self.frame(index), self.to_working(masks))
        self._references[index] = (ids, reference)
        return reference

    # ------------------------------------------------------------------ frames and results
    def frame(self, t: int) -> Tensor:
        """Frame t as (1, 3, h, w) float32 at the working size, on the device."""
        frame = self.to_working(self.feed.get(t))
        return frame.expand(-1, 3, -1, -1) if frame.shape[1] == 1 else frame

    def to_working(self, x: Tensor) -> Tensor:
        """(B, h0, w0) or (B, C, h0, w0) at full size -> the working size (antialiased)."""
        size = self.working.size
        if tuple(x.shape[-2:]) == size:
            return x
        if x.dim() == 3:
            return resize_bilinear(x[None], size, antialias=True)[0]
        return resize_bilinear(x, size, antialias=True)

    def result(self, t: int, probabilities: Tensor, active: Tensor, objects: ObjectIds, keep: bool) -> RunnerResult:
        """(A+1, h, w) probabilities over background + active objects -> labels at full size, and
        with ``keep`` the (K+1, H, W) float32 probabilities over all ``objects``."""
        full = (self.working.height, self.working.width)
        probabilities = resize_bilinear(probabilities[None].float(), full)[0]
        winner, best = winners(probabilities)
        scores = winner_scores(winner, best, len(probabilities))
        session_channels = torch.cat([active.new_zeros(1), active])  # output row -> object channel
        kept = None
        if keep:
            everything = torch.zeros((len(objects) + 1, *full), device=probabilities.device)
            everything[session_channels] = probabilities
            kept = everything.cpu().numpy()
        winner, values = winners_on_host(winner, scores)
        ids = [objects.ids[c - 1] for c in active.tolist()]
        lookup = np.concatenate([np.zeros(1, objects.dtype), np.asarray(ids, objects.dtype)])
        return t, lookup[winner], {int(object_id): values[row] for row, object_id in enumerate(ids, start=1)}, kept

    @torch.inference_mode()
    def refine_boxes(self, index: int, box_labels: np.ndarray) -> np.ndarray:
        """Boxes (an (H, W) label image of filled rectangles) on frame ``index`` refined in one pass
        (reference = the frame and the boxes, previous mask = the boxes), kept inside each box; an
        object the network finds nothing of keeps its box as its mask."""
        objects = ObjectIds.from_frames([box_labels])
        channels = torch.from_numpy(objects.channels(box_labels)).to(self.device)
        active = torch.arange(1, len(objects) + 1, device=self.device)
        masks = self.to_working((channels[None] == active[:, None, None]).float())
        frame = self.frame(index)
        reference = self.propagator.encode_reference(frame, masks)
        probabilities, _ = self.propagator.step(reference, reference.initial_previous, frame)
        _, refined, _, _ = self.result(index, probabilities, active, objects, keep=False)
        refined = np.where(refined == box_labels, refined, 0).astype(box_labels.dtype)
        for object_id in objects.ids:
            if not (refined == object_id).any():
                refined[box_labels == object_id] = object_id
        return refined

    def run(self, keyframe: int, channels: Tensor, active: Tensor, objects: ObjectIds, keep: bool,
            directions: Sequence[Sequence[int]]) -> Iterator[RunnerResult]:
        """Yield each frame of ``directions`` (the stretch's backward, then forward frames, nearest
        the keyframe first) propagated from ``keyframe`` (``channels``: its (H, W) channel map;
        ``active``: its objects' channels)."""
        stretch = _Stretch(self, keyframe, channels, active, objects, keep)
        for frames in directions:
            yield from stretch.run(frames)

    # ------------------------------------------------------------------ out of memory
    def take_less(self, stage: str) -> str | None:
        """After running out of memory in ``stage`` ("reference", "step" or "result"): the resize to
        full size on the CPU (when that failed on a GPU), else a smaller working size (None when
        none is smaller)."""
        if stage == "result" and self.device.type != "cpu" and not self.result_on_cpu:
            self.result_on_cpu = True
            return "the resize of each frame's result to full size on the CPU"
        was = self.working.describe()
        if self.working.shrink() is None:
            return None
        self.clear()  # encoded at the old size
        return f"a smaller working size {self.working.describe()} (was {was})"

    def context(self, objects: int) -> str:
        return (f"working size {self.working.describe()} of {self.working.width}x{self.working.height} frames, "
                f"{objects} object(s)")

    def advice(self) -> str:
        smaller = self.working.smaller()
        tries = [f"a smaller working size (--max-size {max(smaller)}, max_size={max(smaller)})" if smaller
                 else "smaller frames"]
        if self.options.mode == "default" and self.options.flow is None:
            tries.append("region mode for many small objects (--region on, region='on')")
        if self.device.type != "cpu":
            tries.append("the CPU (--device cpu, device='cpu')")
        return ", ".join(tries[:-1]) + (" or " if len(tries) > 1 else "") + tries[-1]


class _Stretch:
    """The frames of one stretch of ``runner`` from ``keyframe``, one direction at a time."""

    def __init__(self, runner: FullFrameRunner, keyframe: int, channels: Tensor, active: Tensor,
                 objects: ObjectIds, keep: bool) -> None:
        self.runner, self.keyframe, self.channels, self.active = runner, keyframe, channels, active
        self.objects, self.keep = objects, keep
        self.reference: Reference | None = None
        self._size = runner.working.size  # the size self.reference was encoded at
        self._stage = "reference"

    def run(self, frames: Sequence[int]) -> Iterator[RunnerResult]:
        """Yield each of ``frames`` (one direction, nearest the keyframe first)."""
        self._previous: tuple[Tensor, Padding | None] | None = None  # None: the keyframe's masks
        self._last, self._last_grey = self.keyframe, None
        self.runner.feed.expect(frames)
        runner = self.runner
        for t in frames:
            yield runner.guard.attempt(lambda: self._frame(t), f"frame {t}", lambda: runner.take_less(self._stage),
                                       lambda: runner.context(len(self.active)), runner.advice)

    def _frame(self, t: int) -> RunnerResult:
        runner = self.runner
        self._stage = "reference"
        if self.reference is None or self._size != runner.working.size:
            self._size = runner.working.size
            self.reference = runner.reference(self.keyframe, self.channels, self.active, self.objects)
        self._stage = "step"
        previous = self._previous_at_working_size()
        frame = runner.frame(t)
        current_grey = None
        if runner.options.flow is not None:
            current_grey = grey(frame[0])
            last_grey = self._last_grey
            if last_grey is None or last_grey.shape != current_grey.shape:
                last_grey = grey(runner.frame(self._last)[0])
            previous = warp_along_flow(previous, dense_flow(current_grey, last_grey, runner.options.flow))
        probabilities, following = runner.propagator.step(self.reference, previous, frame)
        self._stage = "result"
        if runner.result_on_cpu:
            probabilities = probabilities.cpu()
        result = runner.result(t, probabilities, self.active, self.objects, self.keep)
        self._previous = (following, self.reference.padding)  # the frame is done: its state is committed
        self._last, self._last_grey = t, current_grey
        return result

    def _previous_at_working_size(self) -> Tensor:
        """The previous probabilities at the current working size (resized after a retry)."""
        assert self.reference is not None
        start = self.reference.initial_previous
        if self._previous is None:
            return start
        previous, padding = self._previous
        if previous.shape[-2:] == start.shape[-2:]:
            return previous
        inner = padding.crop(previous) if padding is not None else previous
        target = self.reference.padding.crop(start) if self.reference.padding is not None else start
        resized = resize_bilinear(inner[None].float(), tuple(target.shape[-2:]))[0].to(previous.dtype)
        return self.reference.padding.apply(resized) if self.reference.padding is not None else resized
