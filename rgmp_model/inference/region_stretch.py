"""Region mode inside a session: which stretches use it, the ids of separated parts, and the
driver of one stretch.

- :func:`uses_region_mode` is the one rule: ``PropagationOptions.region`` "on" / "off", or "auto":
  :func:`~rgmp_model.inference.region.choose_region_mode` on the keyframe's labels (objects small
  relative to a frame longer than 256 px), except when the options ask for what only full-frame
  mode does (official mode, flow guidance, several scales).
- :class:`RegionRunner` (beside :class:`~rgmp_model.inference.full_frame.FullFrameRunner`) builds one
  :class:`~rgmp_model.inference.region.RegionTracker` per keyframe (its reference crops encoded
  once, kept in the runner's cache until the keyframe or the network changes) and runs it
  over a stretch's frames, one direction at a time, at full resolution; tracker channels become
  the user's ids. An object that leaves the frame or vanishes is yielded with confidence 0 on
  the frame it is lost and is absent from the results afterwards (never labelled again).
- :class:`DivisionIds`: with ``split_divisions`` a part that separates from an object gets a new id,
  the largest keyframe id + 1, + 2, ... (unique in the session; the same division keeps its id
  when its stretch is propagated again), its parent recorded. In a backward stretch a "division"
  is two objects that merge forward in time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from rgmp_model.inference.labels import ObjectIds
from rgmp_model.inference.memory import MemoryGuard
from rgmp_model.inference.options import PropagationOptions
from rgmp_model.inference.region import RegionOptions, RegionTracker, StepResult, choose_region_mode
from rgmp_model.nn.network import RGMP

__all__ = ["DivisionIds", "KeyframeRegions", "RegionRunner", "uses_region_mode"]
RegionResult = tuple[int, np.ndarray, dict[int, float], "np.ndarray | None"]


def uses_region_mode(options: PropagationOptions, labels: np.ndarray) -> bool:
    """Whether the stretch of a keyframe with (H, W) ``labels`` runs in region mode (module docstring)."""
    if options.region != "auto":
        return options.region == "on"
    if options.mode == "official" or options.flow is not None or len(options.scales or (1.0,)) > 1:
        return False
    return choose_region_mode(ObjectIds.from_frames([labels]).channels(labels))


class DivisionIds:
    """New ids for separated parts, and who their parents are (see the module docstring)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, int, int], int] = {}  # (keyframe, direction, tracker channel) -> id
        self._births: dict[tuple[int, int], dict[int, int]] = {}  # (keyframe, direction) -> {id: parent}

    def begin(self, keyframe: int, direction: int) -> None:
        """A stretch's direction is propagated (again): its earlier births go."""
        self._births[(keyframe, direction)] = {}

    def assign(self, keyframe: int, direction: int, channel: int, parent: int, taken: set[int]) -> int:
        """The id of the part born as tracker ``channel`` from object ``parent``; ``taken``: the
        ids on the keyframes."""
        key = (keyframe, direction, channel)
        new = self._ids.get(key)
        if new is None or new in taken:  # a user object took the id since: a fresh one
            new = max(max(taken, default=0), max(self._ids.values(), default=0)) + 1
            self._ids[key] = new
        self._births.setdefault((keyframe, direction), {})[new] = parent
        return new

    def divisions(self, keyframes: Iterable[int], taken: set[int]) -> dict[int, int]:
        """{new id: parent id} from the last run of the stretches of ``keyframes``."""
        wanted = set(keyframes)
        out: dict[int, int] = {}
        for (keyframe, _), births in sorted(self._births.items()):
            if keyframe in wanted:
                out.update({new: parent for new, parent in births.items() if new not in taken})
        return out


@dataclass
class KeyframeRegions:
    """A keyframe's tracker (started on it) and its ids: tracker channel k is ``ids[k - 1]``."""

    tracker: RegionTracker
    ids: np.ndarray


class RegionRunner:
    """Region mode for one session: ``options`` (resolved), frames grey or not, autocast dtype,
    the session's ``guard`` against running out of memory (a retry sends one crop per network call)."""

    def __init__(self, model: RGMP, options: PropagationOptions, grey: bool, dtype: torch.dtype | None,
                 guard: MemoryGuard | None = None) -> None:
        self.model, self.grey, self.dtype = model, grey, dtype
        self.options = RegionOptions(crop_size=options.region_crop_size, split_divisions=options.split_divisions,
                                     batch=options.object_batch or RegionOptions.batch)
        self.division_ids = DivisionIds()
        self.guard = guard or MemoryGuard(torch.device("cpu"))
        self._tracker: RegionTracker | None = None  # the one running, for the retry
        self._started: dict[int, KeyframeRegions] = {}  # keyframe -> its tracker (its reference crops)

    def forget(self, keyframe: int) -> None:
        """``keyframe``'s labels changed or it is gone: its tracker goes."""
        self._started.pop(keyframe, None)

    def clear(self) -> None:
        """Every keyframe's tracker goes (e.g. the network changed)."""
        self._started.clear()

    def set_network(self, network: RGMP) -> None:
        """Run ``network`` from now on (e.g. adapted to the keyframes); trackers of the old one go."""
        self.model = network
        self.clear()

    def stretch(self, keyframe: int, labels: np.ndarray, directions: Sequence[tuple[int, Sequence[int]]],
                feed: Any, objects: ObjectIds, keep: bool) -> Iterator[RegionResult]:
        """A stretch in region mode from ``keyframe`` (its (H, W) ``labels``): its tracker (started
        once, kept until the keyframe changes) run over each ``(direction, frames)`` of
        ``directions``; ``feed`` gives full-size frames (``expect(frames)``, ``get(t)``)."""
        regions = self._started.get(keyframe)
        if regions is None:
            regions = self._started[keyframe] = self.start(feed.get(keyframe), labels, keyframe)
        for direction, frames in directions:
            feed.expect(frames)
            yield from self.run(regions, keyframe, direction, frames, feed.get, objects, keep)

    def start(self, frame: Tensor, labels: np.ndarray, index: int = 0) -> KeyframeRegions:
        """A tracker started on keyframe ``index``'s ``frame`` (1, 3, H, W) with its (H, W) ``labels``."""
        objects = ObjectIds.from_frames([labels])
        tracker = self._tracker = RegionTracker(self.model, self.options, self.grey, self.dtype)
        self.guard.attempt(lambda: tracker.start(frame, objects.channels(labels), list(range(1, len(objects) + 1))),
                           f"keyframe {index}", self._one_crop_per_call, lambda: self._context(tracker), self._advice)
        return KeyframeRegions(tracker, objects.ids)

    def _one_crop_per_call(self) -> str | None:
        """After running out of memory: one crop per network call (None when it already was)."""
        if self.options.batch == 1:
            return None
        batch, self.options = self.options.batch, replace(self.options, batch=1)
        if self._tracker is not None:
            self._tracker.options = self.options
        return f"one crop per network call in region mode (was up to {batch})"

    def _context(self, tracker: RegionTracker) -> str:
        return f"region mode, {len(tracker.tracks)} crop(s) of {tracker.crop_size} px, {self.options.batch} per call"

    @staticmethod
    def _advice() -> str:
        return ("smaller crops (region_crop_size=64), full frames at a smaller working size (--region off "
                "--max-size 512, region='off', max_size=512) or the CPU (--device cpu, device='cpu')")

    def _step(self, tracker: RegionTracker, frame: Callable[[], Tensor], t: int) -> StepResult:
        """``tracker.step`` on frame ``t``; out of memory: retried once from the same tracks."""
        state = tracker.state()

        def step() -> StepResult:
            tracker.set_state(state)
            return tracker.step(frame())

        self._tracker = tracker
        if tracker.options.batch > self.options.batch:  # a tracker started before a retry took less
            tracker.options = replace(tracker.options, batch=self.options.batch)
        return self.guard.attempt(step, f"frame {t}", self._one_crop_per_call, lambda: self._context(tracker),
                                  self._advice)

    def run(self, regions: KeyframeRegions, keyframe: int, direction: int, frames: Sequence[int],
            read: Callable[[int], Tensor], objects: ObjectIds, keep: bool) -> Iterator[RegionResult]:
        """Yield ``(t, (H, W) labels with the user's ids, {id: confidence}, probabilities)`` for
        ``frames`` (one direction, ``read(t)`` -> (1, 3, H, W) full-size frame). ``probabilities``
        ((K+1, H, W) float32 over background + ``objects``, a separated part counted in its first
        ancestor's channel) only with ``keep``, else None. The labels keep the keyframes' dtype
        unless a new id does not fit in it (then a wider one)."""
        tracker = regions.tracker
        tracker.restart()
        tracker.keep_background = keep
        self.division_ids.begin(keyframe, direction)
        to_id = {c: int(i) for c, i in enumerate(regions.ids.tolist(), start=1)}
        session_channel = {c: int(np.searchsorted(objects.ids, i)) + 1 for c, i in to_id.items()}
        taken = {int(i) for i in objects.ids.tolist()}
        dtype = objects.dtype
        for t in frames:
            result = self._step(tracker, lambda: read(t), t)
            for child, parent in sorted(result.born.items()):
                to_id[child] = self.division_ids.assign(keyframe, direction, child, to_id[parent], taken)
                session_channel[child] = session_channel[parent]
                dtype = _dtype_for(dtype, to_id[child])
            lookup = np.zeros(max(to_id) + 1, dtype)
            lookup[list(to_id)] = list(to_id.values())
            confidence = {to_id[c]: value for c, value in result.confidence.items()}
            probabilities = _probabilities(tracker, session_channel, len(objects)) if keep else None
            if result.pixels is not None:  # the labels from the winners alone
                labels = np.zeros(result.channels.size, dtype)
                labels[result.pixels] = lookup[result.winners]
                labels = labels.reshape(result.channels.shape)
            else:
                labels = np.take(lookup, result.channels)
            yield t, labels, confidence, probabilities

    def divisions(self, keyframes: Mapping[int, np.ndarray]) -> dict[int, int]:
        """{new id: parent id} for the stretches of ``keyframes`` ({frame: (H, W) labels})."""
        taken = {int(i) for labels in keyframes.values() for i in np.unique(labels)}
        return self.division_ids.divisions(keyframes, taken)


def _dtype_for(dtype: np.dtype, new_id: int) -> np.dtype:
    """``dtype``, widened when it cannot hold ``new_id``."""
    if new_id <= np.iinfo(dtype).max:
        return dtype
    wider = np.promote_types(dtype, np.min_scalar_type(new_id))
    return wider if wider.kind in "ui" else np.dtype(np.uint64)


def _probabilities(tracker: RegionTracker, session_channel: dict[int, int], num_objects: int) -> np.ndarray:
    """(K+1, H, W) float32: the tracker's background, then each live track pasted into its channel."""
    background = tracker.last_background
    dense = torch.zeros((num_objects + 1, *background.shape), device=background.device)
    dense[0] = background
    for c, track in tracker.tracks.items():
        t0, l0, t1, l1 = track.patch
        dense[session_channel[c], t0:t1, l0:l1] += track.previous.float()
    return dense.cpu().numpy()
