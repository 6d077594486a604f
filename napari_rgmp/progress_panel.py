"""The Propagate dock's progress row: a progress bar of frames done / total with frames/s and the
time left, and the "follow progress" switch (the viewer shows each frame as it is written).

The panel only displays what the widget gives it (:meth:`ProgressPanel.advance` per written frame);
it holds no job state of its own besides the start time.
"""

from __future__ import annotations

import math
import time

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QProgressBar, QVBoxLayout, QWidget

FOLLOW_MS = 100  # the viewer moves to the latest written frame at most this often (the GUI keeps up)


def format_duration(seconds: float) -> str:
    """Short duration: "42 s", "3 min 05 s", "1 h 02 min"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_text(done: int, total: int, elapsed: float) -> str:
    """What the bar says: "12 / 40 frames, 3.1 frames/s, 9 s left" (rate and time left once
    a frame is done)."""
    text = f"{done} / {total} frames"
    if done <= 0 or elapsed <= 0:
        return text
    rate = done / elapsed
    text += f", {rate:.2f} frames/s" if rate < 10 else f", {rate:.0f} frames/s"
    if total > done:
        text += f", {format_duration((total - done) / rate)} left"
    return text


class ProgressPanel(QWidget):
    """A progress bar (value: frames done; maximum: the job's frames) whose text gives frames/s and
    the time left, and the "follow progress" check box (on by default): while it is on,
    ``show_frame(t)`` asks for the latest written frame, at once and then at most every FOLLOW_MS."""

    show_frame = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("no run yet")
        self.bar.setToolTip("frames propagated so far out of the frames of this run, the speed in frames per "
                            "second and the time left at that speed")
        self.follow_check = QCheckBox("follow progress")
        self.follow_check.setChecked(True)
        self.follow_check.setToolTip("during a run, move the viewer's slider to each frame as it is written "
                                     "(turn off to look at other frames while it runs)")
        self._started = time.perf_counter()
        self._pending: int | None = None
        self._follow_timer = QTimer(self, singleShot=True, interval=FOLLOW_MS)
        self._follow_timer.timeout.connect(self._show_pending)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.bar, 1)
        row.addWidget(self.follow_check)
        layout.addLayout(row)

    @property
    def follows(self) -> bool:
        """Whether the viewer should show each frame as it is written."""
        return self.follow_check.isChecked()

    def follow(self, t: int) -> None:
        """Frame ``t`` was written: show it now, or the latest one when FOLLOW_MS has passed."""
        if not self.follows:
            return
        self._pending = int(t)
        if not self._follow_timer.isActive():
            self._show_pending()

    def _show_pending(self) -> None:
        if self._pending is not None:
            t, self._pending = self._pending, None
            self._follow_timer.start()
            self.show_frame.emit(t)

    def start(self, text: str = "starting...") -> None:
        """A job starts: an empty bar (its total comes with the first frame)."""
        self._started = time.perf_counter()
        self.bar.setRange(0, 0)  # busy until the total is known
        self.bar.setFormat(text)

    def adapting(self, iteration: int, total: int) -> str:
        """Step ``iteration`` of ``total`` of test-time adaptation, before the frames (whose speed
        is then measured from the last step on); returns the text shown."""
        self._started = time.perf_counter()
        self.bar.setRange(0, max(int(total), 1))
        self.bar.setValue(int(iteration))
        text = f"{int(iteration)} / {int(total)} iterations"
        self.bar.setFormat(f"adapting: {text}")
        return text

    def advance(self, done: int, total: int) -> str:
        """``done`` of ``total`` frames written; returns the text shown."""
        total = max(int(total), int(done), 1)
        if self.bar.maximum() != total:
            self.bar.setRange(0, total)
        self.bar.setValue(int(done))
        text = progress_text(int(done), total, time.perf_counter() - self._started)
        self.bar.setFormat(text)
        return text

    def finish(self, text: str | None = None) -> None:
        """The job ended: the last written frame is shown (when following); the bar keeps the
        frames done (``text`` replaces its message)."""
        self._follow_timer.stop()
        self._show_pending()
        self._follow_timer.stop()
        if self.bar.maximum() == 0:  # never got a frame
            self.bar.setRange(0, 1)
            self.bar.setValue(0)
        if text is not None:
            self.bar.setFormat(text)

    def rate(self, done: int) -> float:
        """Frames per second since :meth:`start`."""
        elapsed = time.perf_counter() - self._started
        return done / elapsed if elapsed > 0 else math.nan
