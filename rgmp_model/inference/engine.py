"""The propagation engine: one session per image stack.

    session = open_session("model.pt", frames, PropagationOptions(direction="both"))
    session.add_keyframe(0, labels0)                    # or add_keyframes_from_stack(labels)
    for t, labels, confidence in session.propagate():
        out[t] = labels                                 # (H, W), original ids; stop at any frame

(``PropagationSession(model, frames, **keywords)`` still works: the keywords become
:class:`~rgmp_model.inference.options.PropagationOptions`.) Each non-keyframe is propagated from its nearest
keyframe (in the allowed direction); keyframes are yielded unchanged and never overwritten. Only
one frame and the previous soft masks are held per step; each keyframe's reference features are
kept until its labels change, so propagating again (after a correction) re-encodes only the
keyframes that changed. A stretch runs on whole frames at the working size
(:class:`~rgmp_model.inference.full_frame.FullFrameRunner`; the size is owned by
:class:`~rgmp_model.inference.working_size.WorkingSize`, ``session.working``) or in region mode
(``options.region``; :class:`~rgmp_model.inference.region_stretch.RegionRunner`) as one crop per
object at full resolution: ``uses_region(keyframe)`` says whether it will, ``region_used`` which
stretches did, ``divisions`` the parents of parts that separated. Each runner keeps its keyframes'
encoded references. A frame that runs out of memory is retried once with less
(``inference/memory.py``; ``notes`` says so).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

from rgmp_model.inference.adaptation import KeyframeAdaptation
from rgmp_model.inference.frame_feed import FrameFeed
from rgmp_model.inference.frames import FrameStack
from rgmp_model.inference.full_frame import FrameResult, FullFrameRunner
from rgmp_model.inference.memory import MemoryGuard
from rgmp_model.inference.propagators import BatchedPropagator, OfficialPropagator
from rgmp_model.inference.labels import ObjectIds, validate_label_frame
from rgmp_model.nn.inference import inference_network
from rgmp_model.nn.network import RGMP, model_on_device
from rgmp_model.inference.options import DIRECTIONS, MODES, PRECISIONS, PropagationOptions, autocast_dtype, resolve_device, working_size
from rgmp_model.inference.plan import Stretch, plan_stretches
from rgmp_model.inference.region_stretch import RegionRunner, uses_region_mode
from rgmp_model.inference.working_size import WorkingSize

if TYPE_CHECKING:
    from rgmp_model.nn.checkpoint import CheckpointInfo

__all__ = ["DIRECTIONS", "MODES", "PRECISIONS", "FrameResult", "PropagationSession", "Stretch", "plan_stretches",
           "resolve_device", "working_size"]


class PropagationSession:
    """All state of one propagation job over one image stack (as Cutie's InferenceCore).

    model: an :class:`RGMP` network, used as is (eval mode, channels-last) when it is on the
        session's device; otherwise a copy is moved there and the caller's network is untouched.
    frames: (T, H, W) grey or (T, H, W, C) array-like, uint8 / uint16 / float, read lazily.
    options: :class:`PropagationOptions` (default: all defaults); ``checkpoint``: the model's
        :class:`CheckpointInfo`, whose recorded working size applies when ``options.max_size`` is
        None. ``self.options`` holds them resolved (``max_size`` 0 = full size, ``scales`` set).
    Keyword arguments instead of ``options`` (``mode=``, ``multiscale=``, ``max_size=``, ...)
    are the older spelling of the same options. Probabilities are resized back to full size
    before labels are taken; flow guidance (``options.flow``) warps the previous frame's
    probabilities along dense optical flow (on the CPU, at the working size) first. In region
    mode the frames are read at full size and cropped per object (``max_size`` does not apply).
    """

    def __init__(
        self,
        model: RGMP,
        frames: Any,
        options: PropagationOptions | None = None,
        *,
        checkpoint: CheckpointInfo | None = None,
        **keywords: Any,
    ) -> None:
        if options is not None and keywords:
            raise TypeError(f"give either options or keyword options ({sorted(keywords)}), not both")
        if options is None:
            options = PropagationOptions.from_keywords(**keywords)
        self.checkpoint = checkpoint
        self.options = options.resolved(checkpoint.working_size if checkpoint is not None else None)
        self.frames = FrameStack(frames)
        self.device = resolve_device(self.options.device)
        self.model = model_on_device(model, self.device)
        object_batch = self.options.object_batch
        if object_batch is None and self.device.type == "cpu":
            object_batch = 1  # see inference/propagators.py: batching objects is slower on CPUs
        dtype = autocast_dtype(self.options.precision, self.device, self.options.mode)
        self.network = inference_network(self.model, self.device, dtype)  # BatchNorm folded (nn/inference.py)
        propagator = OfficialPropagator if self.options.mode == "official" else BatchedPropagator
        self.memory = MemoryGuard(self.device)  # out of memory: one retry with less per run (inference/memory.py)
        self._feed = FrameFeed(self.frames, self.device)  # read ahead on a GPU (inference/frame_feed.py)
        # The model's recorded size (max_size None): small objects may get more pixels (inference/working_size.py)
        self.working = WorkingSize(self.frames.height, self.frames.width, self.options.max_size,
                                   fit_to_objects=options.max_size is None)
        self._full = FullFrameRunner(propagator(self.network, self.options.scales, dtype, object_batch), self._feed,
                                     self.working, self.options, self.device, self.memory)
        self._regions = RegionRunner(self.network, self.options, self.frames.is_grey, dtype, self.memory)
        self.region_used: dict[int, bool] = {}  # keyframe -> whether its stretch ran in region mode
        self._keyframes: dict[int, np.ndarray] = {}
        self._boxes: dict[int, np.ndarray] = {}  # the boxes a keyframe was refined from
        self.last_probabilities: np.ndarray | None = None
        self._base_model = self.model  # what adaptation starts from
        self.adaptation = KeyframeAdaptation(self.options.adapt)  # options.adapt iterations (0: none)

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def scales(self) -> tuple[float, ...]:
        return self._full.propagator.scales

    @property
    def propagator(self) -> Any:
        """The full-frame propagator (``inference/propagators.py``) that encodes references and steps frames."""
        return self._full.propagator

    @property
    def working_size(self) -> tuple[int, int]:
        """(height, width) at which full-frame mode runs now (``self.working`` decides it)."""
        return self.working.size

    @property
    def size_limit(self) -> tuple[int, int] | None:
        """The working size an out-of-memory retry took (never exceeded again), or None."""
        return self.working.limit

    @property
    def flow(self) -> str | None:
        return self.options.flow

    @property
    def notes(self) -> list[str]:
        """What the session changed on its own, e.g. a smaller working size after running out of memory."""
        return self.memory.notes

    # ----------------------------------------------------------------------------- keyframes
    def add_keyframe(self, frame_index: int, labels: Any) -> None:
        """Annotate frame ``frame_index`` with (H, W) integer labels (a copy is kept). Labels
        equal to the frame's current ones keep its encoded reference features."""
        index = self._frame_index(frame_index)
        array = validate_label_frame(labels, (self.frames.height, self.frames.width), index)
        if not array.any():
            raise ValueError(
                f"labels of frame {index} are empty (all 0): paint at least one object on it"
            )
        self._store(index, np.array(array, copy=True))
        self._boxes.pop(index, None)

    def _store(self, index: int, labels: np.ndarray) -> None:
        """Keep ``labels`` as keyframe ``index``; its reference features go when they change."""
        previous = self._keyframes.get(index)
        if previous is None or not np.array_equal(previous, labels):
            self._full.forget(index)
            self._regions.forget(index)
            self.working.measure(index, labels)  # once per keyframe's labels
        self._keyframes[index] = labels
        self._refit()

    def _refit(self) -> None:
        """The working size refitted to the keyframes' objects (``WorkingSize.refit``); features
        encoded at the old size go."""
        if self.working.refit():
            self._full.clear()

    def add_keyframes_from_stack(self, label_stack: Any) -> list[int]:
        """Every frame of a (T, H, W) label stack that holds labels becomes a keyframe.
        Frames are read one at a time. Returns the keyframe indices."""
        shape = tuple(getattr(label_stack, "shape", np.shape(label_stack)))
        if len(shape) != 3 or shape[0] != self.frames.num_frames:
            raise ValueError(
                f"the label stack has shape {shape} but the frames are "
                f"{(self.frames.num_frames, self.frames.height, self.frames.width)}: give one "
                f"(H, W) label image per frame, or use add_keyframe for single frames"
            )
        added = []
        for t in range(shape[0]):
            frame = validate_label_frame(label_stack[t], (self.frames.height, self.frames.width), t)
            if frame.any():
                self._store(t, np.array(frame, copy=True))
                self._boxes.pop(t, None)
                added.append(t)
        if not added:
            raise ValueError("the label stack has no labels on any frame: paint at least one object")
        return added

    def set_keyframes(self, labels: Mapping[int, Any], boxes: Mapping[int, Any] | None = None) -> None:
        """Make the keyframes exactly ``labels`` ({frame: (H, W) labels}) and ``boxes`` ({frame:
        (H, W) box labels}, see :meth:`add_box_keyframe`). Keyframes that stay as they were keep
        their encoded reference features (unchanged boxes are not refined again)."""
        boxes = dict(boxes or {})
        for t in set(self._keyframes) - set(labels) - set(boxes):
            self.remove_keyframe(t)
        for t, frame_labels in labels.items():
            if t not in boxes:
                self.add_keyframe(t, frame_labels)
        for t, frame_boxes in boxes.items():
            self.add_box_keyframe(t, frame_boxes)

    def add_box_keyframe(self, frame_index: int, boxes: Any) -> np.ndarray:
        """Start from boxes instead of masks (as MaskTrackBox): ``boxes`` is an (H, W) label
        image of filled rectangles, one id per object. The network refines them in one pass on
        their own frame (reference = the frame and the boxes, previous mask = the boxes); the
        result, kept inside each box, becomes the keyframe. An object the network finds nothing
        of keeps its box as its mask (visible, and correctable). Returns the (H, W) labels."""
        index = self._frame_index(frame_index)
        box_labels = validate_label_frame(boxes, (self.frames.height, self.frames.width), index)
        if not box_labels.any():
            raise ValueError(f"no box on frame {index}: draw at least one rectangle on it")
        if index in self._keyframes and np.array_equal(self._boxes.get(index), box_labels):
            return self._keyframes[index].copy()  # refined from these very boxes already
        refined = self._full.refine_boxes(index, box_labels)
        self._store(index, refined)
        self._boxes[index] = np.array(box_labels, copy=True)
        return refined.copy()

    def remove_keyframe(self, frame_index: int) -> None:
        index = self._frame_index(frame_index)
        for held in (self._keyframes, self._boxes):
            held.pop(index, None)
        self._full.forget(index)
        self._regions.forget(index)
        self.working.forget(index)
        self._refit()

    @property
    def keyframes(self) -> tuple[int, ...]:
        return tuple(sorted(self._keyframes))

    @property
    def object_ids(self) -> np.ndarray:
        """Sorted ids of all objects on all keyframes; channel k of ``last_probabilities`` is
        object_ids[k - 1] (channel 0 is the background)."""
        return self._objects().ids

    @property
    def divisions(self) -> dict[int, int]:
        """{new id: parent id} of the parts that separated from an object in region mode with
        ``split_divisions`` (the last run of each stretch): the parents of a Cell Tracking
        Challenge export. Empty otherwise."""
        return self._regions.divisions(self._keyframes)

    def uses_region(self, keyframe: int) -> bool:
        """Whether the stretch of ``keyframe`` runs in region mode (``options.region``; "auto":
        ``region_stretch.uses_region_mode`` on its labels)."""
        labels = self._keyframes.get(self._frame_index(keyframe))
        if labels is None:
            raise ValueError(f"frame {keyframe} is not a keyframe: add labels on it first")
        return uses_region_mode(self.options, labels)

    def _objects(self) -> ObjectIds:
        if not self._keyframes:
            raise ValueError("no keyframe: add labels on at least one frame (add_keyframe)")
        return ObjectIds.from_frames(self._keyframes.values())

    def _frame_index(self, frame_index: int) -> int:
        index = int(frame_index)
        if not 0 <= index < self.frames.num_frames:
            raise ValueError(f"frame {index} is outside the stack (0..{self.frames.num_frames - 1})")
        return index

    # ----------------------------------------------------------------------------- propagation
    def plan(self, direction: str | None = None, from_keyframes: Iterable[int] | None = None) -> list[Stretch]:
        """Which frames each keyframe will be propagated to, in order (``direction`` None: the
        options' direction; ``from_keyframes``: only the stretches of those keyframes)."""
        stretches = plan_stretches(list(self._keyframes), self.frames.num_frames, direction or self.options.direction)
        if from_keyframes is None:
            return stretches
        wanted = {self._frame_index(t) for t in from_keyframes}
        unknown = wanted - set(self._keyframes)
        if unknown:
            raise ValueError(f"frames {sorted(unknown)} are not keyframes: add them first")
        return [s for s in stretches if s.keyframe in wanted]

    def total_frames(self, direction: str | None = None, from_keyframes: Iterable[int] | None = None,
                     include_keyframes: bool = True) -> int:
        """How many results :meth:`propagate` with the same arguments yields."""
        return sum(len(s.backward) + len(s.forward) + include_keyframes for s in self.plan(direction, from_keyframes))

    def propagate(
        self,
        direction: str | None = None,
        *,
        from_keyframes: Iterable[int] | None = None,
        include_keyframes: bool = True,
        keep_probabilities: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[FrameResult]:
        """Yield ``(frame_index, labels (H, W) with the original ids, {id: confidence})`` for
        every keyframe (unchanged) and every frame reachable in ``direction`` ("forward",
        "backward" or "both"; None: the options' direction), one at a time; the caller may stop
        at any point. :meth:`total_frames` says how many.

        ``from_keyframes`` restricts the run to the stretches of those keyframes: after adding a
        corrected keyframe, propagating from it alone recomputes exactly the frames that now
        belong to it (the others would come out as before).
        Confidence of an object = mean probability over the pixels labelled as it (0 when it is
        lost; in region mode a lost object is reported with 0 once, on the frame it is lost, and
        is absent afterwards). With ``keep_probabilities``, ``last_probabilities`` holds the
        yielded frame's (K+1, H, W) float32 probabilities (channel 0 background, then
        ``object_ids``; in region mode a separated part adds to its parent's channel).
        ``on_progress(done, total)`` is called after every yielded frame. With ``options.adapt``
        the network is first adapted to the keyframes when :meth:`adapt` would train.
        """
        objects = self._objects()
        if self.adaptation.iterations and not self.adaptation.is_current(self._keyframes):
            self.adapt()
        stretches = self.plan(direction, from_keyframes)
        total = sum(len(s.backward) + len(s.forward) + include_keyframes for s in stretches)
        done = 0
        self.memory.begin_run()
        for stretch in stretches:
            for result in self._propagate_stretch(stretch, objects, include_keyframes, keep_probabilities):
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                yield result

    def adapting(self) -> Iterator[tuple[int, int, float]]:
        """Test-time adaptation (``options.adapt`` iterations, ``inference/adaptation.py``) as a
        generator of ``(iteration, total, loss)``: from its end on, propagation runs a copy of the
        network fine-tuned on the keyframes; closed early, the network stays as it was. No step
        while the adapted copy is still valid. The model file and the caller's network never change."""
        dtype = autocast_dtype(self.options.precision, self.device, self.options.mode)
        region_view = self.frames.is_grey and any(self.uses_region(t) for t in self._keyframes)
        yield from self.adaptation.steps(self._base_model, self.frames, self._keyframes, self.device, dtype,
                                         region_view)
        if self.adaptation.model is not None and self.model is not self.adaptation.model:
            self.model = self.adaptation.model
            self.network = inference_network(self.model, self.device, dtype)  # folded again: new weights
            self._full.set_network(self.network)  # features encoded by the previous network go
            self._regions.set_network(self.network)

    def adapt(self, on_progress: Callable[[int, int, float], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> bool:
        """:meth:`adapting` run through: ``on_progress(iteration, total, loss)`` after each step,
        ``should_stop()`` checked before each (stopping keeps the network as it was). Returns
        whether an adapted network is now used and was trained by this call."""
        runs = self.adaptation.runs
        steps = self.adapting()
        while should_stop is None or not should_stop():
            step = next(steps, None)
            if step is None:
                break
            if on_progress is not None:
                on_progress(*step)
        steps.close()
        return self.adaptation.runs > runs

    @torch.inference_mode()
    def _propagate_stretch(
        self, stretch: Stretch, objects: ObjectIds, include_keyframe: bool, keep_probabilities: bool
    ) -> Iterator[FrameResult]:
        key_labels = self._keyframes[stretch.keyframe].astype(objects.dtype, copy=False)
        channels = torch.from_numpy(objects.channels(key_labels)).to(self.device)
        active = torch.unique(channels[channels > 0])  # channels of the objects on this keyframe
        if include_keyframe:
            confidence = {int(objects.ids[c - 1]): 1.0 for c in active.tolist()}
            if keep_probabilities:
                self.last_probabilities = _one_hot(channels, len(objects)).cpu().numpy()
            yield stretch.keyframe, key_labels.copy(), confidence
        region = self.region_used[stretch.keyframe] = self.uses_region(stretch.keyframe)
        if not (stretch.backward or stretch.forward):
            return
        runs = (self._regions.stretch(stretch.keyframe, self._keyframes[stretch.keyframe],
                                      ((-1, stretch.backward), (1, stretch.forward)), self._feed, objects,
                                      keep_probabilities) if region else
                self._full.run(stretch.keyframe, channels, active, objects, keep_probabilities,
                               (stretch.backward, stretch.forward)))
        for t, labels, confidence, probabilities in runs:
            if keep_probabilities:
                self.last_probabilities = probabilities
            yield t, labels, confidence


def _one_hot(channels: Tensor, num_objects: int) -> Tensor:
    """(H, W) channel indices -> (K+1, H, W) float32 one-hot."""
    return (channels[None] == torch.arange(num_objects + 1, device=channels.device)[:, None, None]).float()

