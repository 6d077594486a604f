"""The base of both docks: controls that scroll when the dock is short, the docks sharing one
place, the view fitted to the data once a dock has taken its room, and the workers stopped and
awaited when the dock or the viewer closes.

- Scrolling: napari 0.9 does not put dock widgets in a scroll area itself. A dock asks for at most
  MAX_HINT_HEIGHT, the height napari's right-hand area has in a 1280x800 window; the Propagate
  dock's controls and plot fit that height (tests/plugin/test_dock_layout.py).
- Sharing: the second napari-rgmp dock opened in the same area becomes a tab beside the first
  (napari would stack them, each with half the height), so each has the whole height.
- The view: a dock narrows the canvas, and napari keeps the zoom it had: the data is fitted again.
- Closing: see :mod:`.workers` (``worker_groups`` lists a dock's workers).
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable

from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer
from qtpy.QtGui import QCloseEvent
from qtpy.QtWidgets import QDockWidget, QFrame, QHBoxLayout, QMainWindow, QScrollArea, QVBoxLayout, QWidget

from .workers import DockWorkers

MAX_HINT_HEIGHT = 700  # px: the height a dock asks for at most (a 1280x800 window, menus and title)
MAX_HINT_WIDTH = 440  # px: long texts (messages) wrap rather than widen the dock
MIN_HEIGHT = 200  # px: the least height it needs (when a user stacks the docks)
FIT_SECONDS = 2.0  # s after docking during which the canvas' size settles (napari lays the dock out)


def row(*widgets: QWidget) -> QWidget:
    """Widgets side by side on one form row (the first one stretches)."""
    holder = QWidget()
    layout = QHBoxLayout(holder)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 else 0)
    return holder


class ScrollDock(QWidget):
    """Put the controls in ``self.body`` (give it a layout); they scroll vertically when the dock
    is shorter than they are. The dock's size hint is the body's, at most MAX_HINT_HEIGHT high and
    MAX_HINT_WIDTH wide (never narrower than the body's minimum). Subclasses set ``self.viewer``
    and list their workers in :meth:`worker_groups`."""

    viewer: Any = None

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.body = QWidget()
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll)
        self._window: Callable[[], QMainWindow | None] = lambda: None  # weak: the main window whose closing we watch
        self._closed = False
        self._fit_until = 0.0  # until then (just docked), each change of the canvas size fits the view
        self._fitting = False  # connected to the canvas size

    def _bar_width(self) -> int:
        return self.scroll.verticalScrollBar().sizeHint().width()

    def sizeHint(self) -> QSize:
        hint, least = self.body.sizeHint(), self.body.minimumSizeHint()
        width = max(min(hint.width(), MAX_HINT_WIDTH), least.width())
        return QSize(width + self._bar_width(), min(hint.height(), MAX_HINT_HEIGHT))

    def minimumSizeHint(self) -> QSize:
        return QSize(self.body.minimumSizeHint().width() + self._bar_width(), MIN_HEIGHT)

    # ---------------------------------------------------------------------------------- workers
    def worker_groups(self) -> list[DockWorkers]:
        """Every group of workers of this dock (subclasses extend it)."""
        return []

    def stop_workers(self) -> None:
        """Stop every worker of the dock and wait for each to finish (the dock or viewer closes)."""
        for group in self.worker_groups():
            group.stop_and_wait()

    # ---------------------------------------------------------------------------------- docking
    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is None:  # napari took the widget out of its dock: the dock was closed
                self._on_close()
                # Qt deletes it from the event loop, not Python's garbage collector at any moment
                # (a Qt object deleted while Python collects garbage can crash the process)
                self.deleteLater()
            elif isinstance(self.parent(), QDockWidget):
                QTimer.singleShot(0, self._on_docked)  # once napari has added the dock to its window
        return super().event(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self._on_close()
        super().closeEvent(event)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        # getattr: Python may have cleared a collected widget's attributes before Qt deletes it
        if event.type() == QEvent.Type.Close and watched is getattr(self, "_window", lambda: None)():
            self._on_close()  # before napari's own closeEvent tears the viewer down
        return False

    def _on_close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            if self._fitting:
                self.viewer.canvas.events.size.disconnect(self._on_canvas_size)
                self._fitting = False
            self.stop_workers()

    def _on_docked(self) -> None:
        dock = self.parent()
        window = dock.parent() if isinstance(dock, QDockWidget) else None
        if not isinstance(window, QMainWindow):
            return
        if window is not self._window():
            if self._window() is not None:
                self._window().removeEventFilter(self)
            self._window = weakref.ref(window)  # (a strong one would keep the viewer alive with the dock)
            window.installEventFilter(self)
        self._closed = False
        self._share_place(window, dock)
        self._fit_until = time.monotonic() + FIT_SECONDS
        if self.viewer is not None and not self._fitting:
            self._fitting = True
            self.viewer.canvas.events.size.connect(self._on_canvas_size)
        self.fit_view()

    def _on_canvas_size(self, *_: Any) -> None:
        """The canvas changed size: fit the view while the dock is just docked."""
        if time.monotonic() < getattr(self, "_fit_until", 0.0):
            self.fit_view()

    def _share_place(self, window: QMainWindow, dock: QDockWidget) -> None:
        """A tab beside another visible napari-rgmp dock in the same area, if there is one."""
        area = window.dockWidgetArea(dock)
        for other in window.findChildren(QDockWidget):
            if (other is not dock and isinstance(other.widget(), ScrollDock) and other.isVisible()
                    and not other.isFloating() and window.dockWidgetArea(other) == area):
                window.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                return

    def fit_view(self) -> None:
        """Fit the view to the layers again (the dock narrowed the canvas)."""
        if self.viewer is not None and len(self.viewer.layers):
            self.viewer.reset_view()
