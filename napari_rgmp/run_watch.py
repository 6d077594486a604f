"""The Propagate dock under a user's hands: what a running propagation does when the user changes
its layers or controls before it ends. Every case has one defined end:

- the output layer, or the image layer, removed from the viewer, or their data replaced: the run
  is cancelled (a warning says why) and no later frame is written anywhere (the frames already
  written stay in the output layer while it exists);
- the labels layer removed or its data replaced: the run goes on (its keyframes were copied
  when Run was pressed) and an info notification says so;
- painting on the output layer during the run: the frames painted are not overwritten by the
  run's results (a notification at the end lists them);
- another model or device chosen during the run: the run goes on with the ones it started with,
  the change applies to the next Run (an info notification says so);
- Run pressed again: an info notification, one run (``PropagateWidget._start``).

Every connection is weak (:mod:`.weak_slots`) and undone by :meth:`RunWatch.close`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .weak_slots import weak_slot

__all__ = ["RunWatch"]


class RunWatch:
    """Follows one propagation's layers while it runs. ``cancel(reason)`` is called (once) when the
    run must stop; ``inform(text)`` for changes the run survives. ``axis`` is the output layer's
    stack axis (painted frames are counted along it), ``frame_shown()`` the frame on screen."""

    def __init__(self, viewer: Any, image: Any, labels: Any, output: Any, axis: int,
                 cancel: Callable[[str], None], inform: Callable[[str], None],
                 frame_shown: Callable[[], int]) -> None:
        self.viewer, self.image, self.labels, self.output, self.axis = viewer, image, labels, output, axis
        self._cancel, self._inform, self._frame_shown = cancel, inform, frame_shown
        self.cancelled: str | None = None  # why the run was cancelled, once it was
        self.painted: set[int] = set()  # frames of the output layer the user painted during the run
        self.kept: set[int] = set()  # painted frames whose result the run did not write
        self._told: set[str] = set()
        self._links: list[tuple[Any, Any]] = []
        self._link(viewer.layers.events.removed, self._on_removed)
        for layer in {id(x): x for x in (image, labels, output) if x is not None}.values():
            self._link(layer.events.data, self._on_data)
        if output is not None and hasattr(output.events, "paint"):
            self._link(output.events.paint, self._on_paint)

    def _link(self, emitter: Any, method: Callable[..., Any]) -> None:
        slot = weak_slot(method)
        emitter.connect(slot)
        self._links.append((emitter, slot))

    def close(self) -> None:
        """The run has ended: no more watching."""
        for emitter, slot in self._links:
            try:
                emitter.disconnect(slot)
            except (TypeError, RuntimeError, ValueError):
                pass
        self._links = []

    # ---------------------------------------------------------------------------------- events
    def _stop(self, reason: str) -> None:
        if self.cancelled is None:
            self.cancelled = reason
            self._cancel(reason)

    def _tell(self, text: str) -> None:
        if text not in self._told:  # once per run
            self._told.add(text)
            self._inform(text)

    def _on_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        if layer is None:
            return
        if layer is self.output:
            self._stop(f"the output layer '{layer.name}' was deleted: the propagation was cancelled (no frame is "
                       "written into another layer); press Run to propagate again")
        elif layer is self.image:
            self._stop(f"the image layer '{layer.name}' was deleted: the propagation was cancelled; the frames "
                       "done stay in the output layer")
        elif layer is self.labels:
            self._tell(f"the labels layer '{layer.name}' was deleted: the propagation goes on from the keyframes "
                       "taken when Run was pressed")

    def _on_data(self, event: Any) -> None:
        source = getattr(event, "source", None)
        if source is self.output:
            self._stop(f"the data of the output layer '{source.name}' was replaced: the propagation was "
                       "cancelled so that it does not write into the new data; press Run to propagate again")
        elif source is self.image:
            self._stop(f"the data of the image layer '{source.name}' was replaced: the propagation was cancelled "
                       "(its frames were the old ones); press Run to propagate the new image")
        elif source is self.labels:
            self._tell(f"the data of the labels layer '{source.name}' was replaced: the propagation goes on from "
                       "the keyframes taken when Run was pressed; press Run again to use the new labels")

    def _on_paint(self, event: Any) -> None:
        self.painted.update(self._frames_of(getattr(event, "value", None) or ()))

    def _frames_of(self, atoms: Any) -> set[int]:
        """The frames (along ``axis``) that a paint event's undo atoms touched."""
        frames: set[int] = set()
        for atom in atoms:
            key = getattr(atom, "slice_key", None)  # napari's masked atom: a bounding box of slices
            if key is not None and len(key) > self.axis and isinstance(key[self.axis], slice):
                along = key[self.axis]
                frames.update(range(*along.indices(self.output.data.shape[self.axis])))
                continue
            try:
                indices = atom[0]  # (indices per axis, old values, new value)
                frames.update(int(t) for t in np.unique(np.asarray(indices[self.axis])))
            except (TypeError, IndexError, ValueError):
                frames.add(int(self._frame_shown()))
        return frames

    # ---------------------------------------------------------------------------------- the run's side
    def model_changed(self, what: str) -> None:
        """The user chose another ``what`` (model, device) during the run."""
        self._tell(f"the {what} was changed during a propagation: this run goes on with the one it started "
                   f"with; the new {what} is used at the next Run")

    def may_write(self, t: int) -> bool:
        """Whether the run may write its result for frame ``t`` into the output layer (a painted
        frame is recorded in ``kept``)."""
        if self.cancelled is not None or self.output is None or self.output not in self.viewer.layers:
            return False
        if t in self.painted:
            self.kept.add(t)
            return False
        return True
