"""The Propagate dock's confidence view: per frame, the lowest confidence among the objects still
tracked, drawn as the frames arrive, and a note where an object was lost.

The engine yields an object that left the frame (or vanished) with confidence 0 on the frame it
was lost (region mode then drops it; full-frame mode keeps reporting 0). Plotting that 0 as the
frame's value would pin the curve at 0 from there on; instead the curve follows the objects still
tracked, and the frame where an object was lost gets a dashed line and "N lost" (and a line of
text under the plot). A frame whose objects are all lost has no value (a gap).
"""

from __future__ import annotations

import math
from typing import Mapping

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from .plots import LinePlot

REDRAW_MS = 150  # the curve is redrawn at most this often while frames arrive


def tracked_confidence(confidence: Mapping[int, float]) -> float:
    """The frame's value: the lowest confidence among the objects still tracked (confidence above
    0); NaN when none is."""
    tracked = [c for c in confidence.values() if c > 0]
    return min(tracked) if tracked else math.nan


def lost_objects(per_frame: Mapping[int, Mapping[int, float]]) -> dict[int, list[int]]:
    """{frame: [object ids]} of the frames where an object was lost: its confidence is 0 there
    while it was still tracked on a neighbouring frame (either direction of propagation)."""
    lost: dict[int, list[int]] = {}
    for t, confidence in per_frame.items():
        for object_id, value in confidence.items():
            if value > 0:
                continue
            if any(per_frame.get(n, {}).get(object_id, 0.0) > 0 for n in (t - 1, t + 1)):
                lost.setdefault(t, []).append(int(object_id))
    return {t: sorted(ids) for t, ids in sorted(lost.items())}


def lost_text(lost: Mapping[int, list[int]], shown: int = 4) -> str:
    """One line: "lost (left the frame or vanished): object 2 at frame 17, objects 3, 5 at frame 30"."""
    if not lost:
        return ""
    parts = [f"object{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} at frame {t}"
             for t, ids in list(lost.items())[:shown]]
    more = f" and {len(lost) - shown} more frames" if len(lost) > shown else ""
    return "lost (left the frame or vanished): " + "; ".join(parts) + more


class ConfidencePanel(QWidget):
    """The confidence plot (click: go to that frame) and the lost-objects note. ``add`` takes one
    frame's {object id: confidence}; ``values`` is {frame: plotted value}."""

    clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.per_frame: dict[int, dict[int, float]] = {}
        self.values: dict[int, float] = {}
        self.plot = LinePlot(title="confidence per frame (lowest tracked object)", x_label="frame",
                             y_range=(0.0, 1.0))
        self.plot.setToolTip("the network's confidence on each propagated frame (the lowest of the objects "
                             "still tracked); dips show frames worth checking. Click to go to a frame. A dashed "
                             "line marks a frame where an object was lost (it left the frame or vanished)")
        self.lost_label = QLabel()
        self.lost_label.setWordWrap(True)
        self.lost_label.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)  # the plot takes the room the dock gives the panel
        layout.addWidget(self.lost_label)
        self._timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._timer.timeout.connect(self.redraw)
        self.plot.clicked.connect(lambda x: self.clicked.emit(int(round(x))))

    def clear(self) -> None:
        self.per_frame.clear()
        self.values.clear()
        self.redraw()

    def add(self, t: int, confidence: Mapping[int, float]) -> None:
        """One propagated frame; the curve is redrawn soon (at most every REDRAW_MS)."""
        self.per_frame[int(t)] = {int(k): float(v) for k, v in confidence.items()}
        self.values[int(t)] = tracked_confidence(confidence)
        if not self._timer.isActive():
            self._timer.start()

    def least_confident(self, exclude: set[int]) -> int | None:
        """The frame with the lowest value, not in ``exclude`` (the keyframes); None without one."""
        candidates = {t: c for t, c in self.values.items() if t not in exclude and not math.isnan(c)}
        return min(candidates, key=candidates.get) if candidates else None

    def lost(self) -> dict[int, list[int]]:
        """{frame: ids of the objects lost on that frame}."""
        return lost_objects(self.per_frame)

    def redraw(self) -> None:
        """Draw the curve and the lost-object notes now."""
        self._timer.stop()
        frames = sorted(self.values)
        self.plot.set_data(frames, [self.values[t] for t in frames])
        lost = self.lost()
        self.plot.set_annotations([(t, f"{', '.join(map(str, ids))} lost") for t, ids in lost.items()])
        self.lost_label.setText(lost_text(lost))
        self.lost_label.setVisible(bool(lost))

    def set_marker(self, t: int | None) -> None:
        self.plot.set_marker(t)
