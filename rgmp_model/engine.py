"""The propagation engine: one session per image stack.

    session = PropagationSession(model, frames)          # frames: (T,H,W) or (T,H,W,C) array-like
    session.add_keyframe(0, labels0)                    # or add_keyframes_from_stack(labels)
    for t, labels, confidence in session.propagate("both"):
        out[t] = labels                                 # (H, W), original ids; stop at any frame

Each non-keyframe is propagated from its nearest keyframe (in the allowed direction); keyframes
are yielded unchanged and never overwritten. Only one frame, the previous soft masks and the
keyframe's reference features are held in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .flow import FLOW_METHODS, dense_flow, grey, warp_along_flow
from .frames import FrameStack
from .inference import (
    OFFICIAL_SCALES,
    BatchedPropagator,
    OfficialPropagator,
    resize_bilinear,
    winner_confidence,
)
from .labels import ObjectIds, validate_label_frame
from .network import RGMP

DIRECTIONS = ("forward", "backward", "both")
MODES = ("default", "official")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FrameResult = tuple[int, np.ndarray, dict[int, float]]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available, else mps, else cpu; a named device is checked to exist."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here: use 'auto' or 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here: use 'auto' or 'cpu'")
    return resolved


def _autocast_dtype(precision: str, device: torch.device, mode: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type != "cuda" or mode == "official":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp32":
        return None
    if device.type != "cuda":
        raise ValueError(f"{precision} autocast is only used on CUDA; on {device.type} use precision='fp32'")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def working_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """(height, width) scaled down so that the longer side is at most ``max_size`` (None: unchanged)."""
    factor = 1.0 if max_size is None else min(1.0, max_size / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


@dataclass(frozen=True)
class Stretch:
    """The frames propagated from one keyframe, in processing order: ``backward`` goes
    keyframe-1, keyframe-2, ...; ``forward`` goes keyframe+1, keyframe+2, ..."""

    keyframe: int
    backward: tuple[int, ...]
    forward: tuple[int, ...]


def plan_stretches(keyframes: list[int], num_frames: int, direction: str) -> list[Stretch]:
    """Assign every frame reachable in ``direction`` to its nearest keyframe (ties go to the
    earlier keyframe, i.e. forward propagation)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    keys = sorted(keyframes)
    stretches = []
    for i, key in enumerate(keys):
        previous_key = keys[i - 1] if i > 0 else None
        next_key = keys[i + 1] if i + 1 < len(keys) else None
        forward_end = num_frames if next_key is None else next_key  # exclusive
        backward_end = -1 if previous_key is None else previous_key  # exclusive
        if direction == "both":
            if next_key is not None:  # frames up to the midpoint (inclusive on ties)
                forward_end = key + (next_key - key) // 2 + 1
            if previous_key is not None:
                backward_end = previous_key + (key - previous_key) // 2
        forward = tuple(range(key + 1, forward_end)) if direction != "backward" else ()
        backward = tuple(range(key - 1, backward_end, -1)) if direction != "forward" else ()
        stretches.append(Stretch(key, backward, forward))
    return stretches


class PropagationSession:
    """All state of one propagation job over one image stack (as Cutie's InferenceCore).

    model: an :class:`RGMP` network (moved to ``device`` and put in eval mode).
    frames: (T, H, W) grey or (T, H, W, C) array-like, uint8 / uint16 / float, read lazily.
    mode: "default" (objects batched, soft aggregation, ``scales``) or "official" (the authors'
        run.py procedure; scales 0.5, 0.75, 1.0 unless given).
    scales: working scales averaged per frame; default (1.0,), or (0.5, 0.75, 1.0) when
        ``multiscale`` is set.
    max_size: bound on the longer side of the network's working resolution (None = full size);
        probabilities are resized back to full size before labels are taken.
    device: "auto" (cuda, mps, cpu), or a device name. precision: "auto" (bf16/fp16 autocast on
        CUDA in default mode, fp32 otherwise), "fp32", "bf16" or "fp16".
    object_batch: most objects per network call; None = all objects of a frame in one batch on a
        GPU, one at a time on the CPU (faster there). Aggregation always sees all objects.
    flow: None (default), "tvl1" or "ilk": flow guidance (MaskTrack+Flow), default mode only:
        the previous frame's probabilities are warped along the dense optical flow between the
        two frames (computed on the CPU at the working size) before they enter the network.
    The model is moved to ``device`` in channels-last memory format and put in eval mode.
    """

    def __init__(
        self,
        model: RGMP,
        frames: Any,
        *,
        mode: str = "default",
        multiscale: bool = False,
        scales: tuple[float, ...] | None = None,
        max_size: int | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        object_batch: int | None = None,
        flow: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if flow is not None and flow not in FLOW_METHODS:
            raise ValueError(f"flow must be None or one of {FLOW_METHODS}, got {flow!r}")
        if flow is not None and mode == "official":
            raise ValueError("flow guidance is not part of the authors' procedure: use mode='default' with flow")
        self.flow = flow
        if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 32):
            raise ValueError(f"max_size must be an integer >= 32 (pixels) or None, got {max_size!r}")
        self.frames = FrameStack(frames)
        self.device = resolve_device(device)
        self.mode = mode
        self.model = model.to(self.device, memory_format=torch.channels_last).eval()
        if scales is None:
            scales = OFFICIAL_SCALES if (mode == "official" or multiscale) else (1.0,)
        if object_batch is None and self.device.type == "cpu":
            object_batch = 1  # see inference.py: batching objects is slower on CPUs
        dtype = _autocast_dtype(precision, self.device, mode)
        propagator = OfficialPropagator if mode == "official" else BatchedPropagator
        self._propagator = propagator(self.model, scales, dtype, object_batch)
        self.scales = self._propagator.scales
        self.working_size = working_size(self.frames.height, self.frames.width, max_size)
        self._keyframes: dict[int, np.ndarray] = {}
        self.last_probabilities: np.ndarray | None = None

    # ----------------------------------------------------------------------------- keyframes
    def add_keyframe(self, frame_index: int, labels: Any) -> None:
        """Annotate frame ``frame_index`` with (H, W) integer labels (a copy is kept)."""
        index = self._frame_index(frame_index)
        array = validate_label_frame(labels, (self.frames.height, self.frames.width), index)
        if not array.any():
            raise ValueError(
                f"labels of frame {index} are empty (all 0): paint at least one object on it"
            )
        self._keyframes[index] = np.array(array, copy=True)

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
                self._keyframes[t] = np.array(frame, copy=True)
                added.append(t)
        if not added:
            raise ValueError("the label stack has no labels on any frame: paint at least one object")
        return added

    @torch.inference_mode()
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
        objects = ObjectIds.from_frames([box_labels])
        channels = torch.from_numpy(objects.channels(box_labels)).to(self.device)
        active = torch.arange(1, len(objects) + 1, device=self.device)
        masks = self._to_working((channels[None] == active[:, None, None]).float())
        frame = self._frame(index)
        reference = self._propagator.encode_reference(frame, masks)
        probabilities, _ = self._propagator.step(reference, reference.initial_previous, frame)
        _, refined, _ = self._result(index, probabilities, active, objects, keep=False)
        refined = np.where(refined == box_labels, refined, 0).astype(box_labels.dtype)
        for object_id in objects.ids:
            if not (refined == object_id).any():
                refined[box_labels == object_id] = object_id
        self._keyframes[index] = refined
        return refined.copy()

    def remove_keyframe(self, frame_index: int) -> None:
        self._keyframes.pop(self._frame_index(frame_index), None)

    @property
    def keyframes(self) -> tuple[int, ...]:
        return tuple(sorted(self._keyframes))

    @property
    def object_ids(self) -> np.ndarray:
        """Sorted ids of all objects on all keyframes; channel k of ``last_probabilities`` is
        object_ids[k - 1] (channel 0 is the background)."""
        return self._objects().ids

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
    def plan(self, direction: str = "forward") -> list[Stretch]:
        """Which frames each keyframe will be propagated to, in order."""
        return plan_stretches(list(self._keyframes), self.frames.num_frames, direction)

    def propagate(
        self,
        direction: str = "forward",
        *,
        from_keyframes: Iterable[int] | None = None,
        include_keyframes: bool = True,
        keep_probabilities: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[FrameResult]:
        """Yield ``(frame_index, labels (H, W) with the original ids, {id: confidence})`` for
        every keyframe (unchanged) and every frame reachable in ``direction`` ("forward",
        "backward" or "both"), one at a time; the caller may stop at any point.

        ``from_keyframes`` restricts the run to the stretches of those keyframes: after adding a
        corrected keyframe, propagating from it alone recomputes exactly the frames that now
        belong to it (the others would come out as before).
        Confidence of an object = mean probability over the pixels labelled as it (0 when it is
        lost). With ``keep_probabilities``, ``last_probabilities`` holds the yielded frame's
        (K+1, H, W) float32 probabilities (channel 0 background, then ``object_ids``).
        ``on_progress(done, total)`` is called after every yielded frame.
        """
        objects = self._objects()
        stretches = self.plan(direction)
        if from_keyframes is not None:
            wanted = {self._frame_index(t) for t in from_keyframes}
            unknown = wanted - set(self._keyframes)
            if unknown:
                raise ValueError(f"frames {sorted(unknown)} are not keyframes: add them first")
            stretches = [s for s in stretches if s.keyframe in wanted]
        total = sum(len(s.backward) + len(s.forward) + include_keyframes for s in stretches)
        done = 0
        for stretch in stretches:
            for result in self._propagate_stretch(stretch, objects, include_keyframes, keep_probabilities):
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
                yield result

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
        if not (stretch.backward or stretch.forward):
            return
        masks = (channels[None] == active[:, None, None]).float()
        key_frame = self._frame(stretch.keyframe)
        reference = self._propagator.encode_reference(key_frame, self._to_working(masks))
        for frames in (stretch.backward, stretch.forward):
            previous = reference.initial_previous
            last_grey = grey(key_frame[0]) if self.flow is not None else None
            for t in frames:
                frame = self._frame(t)
                if last_grey is not None:
                    current_grey = grey(frame[0])
                    previous = warp_along_flow(previous, dense_flow(current_grey, last_grey, self.flow))
                    last_grey = current_grey
                try:
                    probabilities, previous = self._propagator.step(reference, previous, frame)
                except torch.cuda.OutOfMemoryError as error:
                    raise RuntimeError(
                        f"out of GPU memory at frame {t} ({self.working_size[1]}x"
                        f"{self.working_size[0]} working size, {len(active)} objects): set a "
                        f"smaller max_size, fewer scales, or run on the CPU"
                    ) from error
                yield self._result(t, probabilities, active, objects, keep_probabilities)

    def _frame(self, t: int) -> Tensor:
        """Frame t as (1, 3, h, w) float32 at the working size, on the device."""
        frame = torch.from_numpy(self.frames[t]).to(self.device).permute(2, 0, 1)[None]
        return self._to_working(frame)

    def _to_working(self, x: Tensor) -> Tensor:
        """(B, h0, w0) or (B, C, h0, w0) at full size -> the working size (antialiased)."""
        if tuple(x.shape[-2:]) == self.working_size:
            return x
        if x.dim() == 3:
            return resize_bilinear(x[None], self.working_size, antialias=True)[0]
        return resize_bilinear(x, self.working_size, antialias=True)

    def _result(
        self, t: int, probabilities: Tensor, active: Tensor, objects: ObjectIds, keep: bool
    ) -> FrameResult:
        """(A+1, h, w) probabilities over background + active objects -> labels at full size."""
        full = (self.frames.height, self.frames.width)
        probabilities = resize_bilinear(probabilities[None].float(), full)[0]
        winner = probabilities.argmax(dim=0)
        confidence = winner_confidence(probabilities, winner, [objects.ids[c - 1] for c in active.tolist()])
        session_channels = torch.cat([active.new_zeros(1), active])  # output row -> object channel
        if keep:
            everything = torch.zeros((len(objects) + 1, *full), device=probabilities.device)
            everything[session_channels] = probabilities
            self.last_probabilities = everything.cpu().numpy()
        return t, objects.to_ids(session_channels[winner].cpu().numpy()), confidence


def _one_hot(channels: Tensor, num_objects: int) -> Tensor:
    """(H, W) channel indices -> (K+1, H, W) float32 one-hot."""
    return (channels[None] == torch.arange(num_objects + 1, device=channels.device)[:, None, None]).float()


def propagate(
    model: RGMP,
    frames: Any,
    labels: Any,
    *,
    reference_frame: int | None = None,
    direction: str = "forward",
    **session_options: Any,
) -> Iterator[FrameResult]:
    """Convenience wrapper: ``labels`` is either one (H, W) label image for ``reference_frame``
    (default 0) or a (T, H, W) stack whose labelled frames are the keyframes."""
    session = PropagationSession(model, frames, **session_options)
    if np.ndim(labels) == 2:
        session.add_keyframe(0 if reference_frame is None else reference_frame, labels)
    else:
        session.add_keyframes_from_stack(labels)
    return session.propagate(direction)
