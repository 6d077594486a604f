"""Full-frame mode inside a session: one stretch's frames at the working size, each frame's work
guarded against running out of memory (:mod:`rgmp_model.inference.memory`).

:class:`FullFrameStretch` walks a stretch's frames in one direction after the other from the
keyframe: the keyframe's reference features (encoded once and cached by the session), per frame
the frame at the working size, flow guidance, the propagator's step and the result at full size.
A frame's state (the previous probabilities, the flow's last grey frame) is committed only once
the frame is done, so a frame that runs out of memory is retried from the same state: at a
smaller working size (the session's ``working_size`` changes, the cached reference features at
the old size are dropped and encoded again, the previous probabilities resized), or, when the
full-size result failed on a GPU, with that resize on the CPU. No frame is yielded twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

from torch import Tensor

from rgmp_model.inference.flow import dense_flow, grey, warp_along_flow
from rgmp_model.inference.labels import ObjectIds
from rgmp_model.inference.memory import smaller_working_size
from rgmp_model.inference.propagators import Padding, Reference, resize_bilinear

if TYPE_CHECKING:
    from rgmp_model.inference.engine import FrameResult, PropagationSession

__all__ = ["FullFrameStretch"]


class FullFrameStretch:
    """The frames of one stretch of ``session`` from ``keyframe`` in full-frame mode.
    ``channels``: the keyframe's (H, W) channel map; ``active``: its objects' channels."""

    def __init__(self, session: PropagationSession, keyframe: int, channels: Tensor, active: Tensor,
                 objects: ObjectIds, keep: bool) -> None:
        self.session, self.keyframe, self.channels, self.active = session, keyframe, channels, active
        self.objects, self.keep = objects, keep
        self.reference: Reference | None = None
        self.result_on_cpu = False
        self._stage = "reference"

    def run(self, frames: Sequence[int]) -> Iterator[FrameResult]:
        """Yield each of ``frames`` (one direction, nearest the keyframe first)."""
        self._previous: tuple[Tensor, Padding | None] | None = None  # None: the keyframe's masks
        self._last, self._last_grey = self.keyframe, None
        self.session._feed.expect(frames)
        for t in frames:
            yield self.session.memory.attempt(lambda: self._frame(t), f"frame {t}", self._take_less,
                                              self._context, self._advice)

    def _frame(self, t: int) -> FrameResult:
        session = self.session
        self._stage = "reference"
        if self.reference is None:
            self.reference = session._reference(self.keyframe, self.channels, self.active, self.objects)
        self._stage = "step"
        previous = self._previous_at_working_size()
        frame = session._frame(t)
        current_grey = None
        if session.flow is not None:
            current_grey = grey(frame[0])
            last_grey = self._last_grey
            if last_grey is None or last_grey.shape != current_grey.shape:
                last_grey = grey(session._frame(self._last)[0])
            previous = warp_along_flow(previous, dense_flow(current_grey, last_grey, session.flow))
        probabilities, following = session._propagator.step(self.reference, previous, frame)
        self._stage = "result"
        if self.result_on_cpu:
            probabilities = probabilities.cpu()
        result = session._result(t, probabilities, self.active, self.objects, self.keep)
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

    def _take_less(self) -> str | None:
        """After running out of memory: the resize to full size on the CPU (when that failed on a
        GPU), else a smaller working size (None when none is smaller)."""
        session = self.session
        if self._stage == "result" and session.device.type != "cpu" and not self.result_on_cpu:
            self.result_on_cpu = True
            return "the resize of each frame's result to full size on the CPU"
        smaller = smaller_working_size(session.frames.height, session.frames.width, session.working_size)
        if smaller is None:
            return None
        (h, w), session.working_size = session.working_size, smaller
        session.size_limit = smaller  # later keyframes never take the session above it again
        session._drop_full_frame_references()
        self.reference = None
        return f"a smaller working size {smaller[1]}x{smaller[0]} (was {w}x{h})"

    def _context(self) -> str:
        (h, w), session = self.session.working_size, self.session
        return (f"working size {w}x{h} of {session.frames.width}x{session.frames.height} frames, "
                f"{len(self.active)} object(s)")

    def _advice(self) -> str:
        session = self.session
        smaller = smaller_working_size(session.frames.height, session.frames.width, session.working_size)
        tries = [f"a smaller working size (--max-size {max(smaller)}, max_size={max(smaller)})" if smaller
                 else "smaller frames"]
        if session.options.mode == "default" and session.options.flow is None:
            tries.append("region mode for many small objects (--region on, region='on')")
        if session.device.type != "cpu":
            tries.append("the CPU (--device cpu, device='cpu')")
        return ", ".join(tries[:-1]) + (" or " if len(tries) > 1 else "") + tries[-1]

