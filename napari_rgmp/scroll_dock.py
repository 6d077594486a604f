"""A dock widget whose controls scroll: both docks fit a 1280x800 screen side by side with napari's
canvas (napari 0.9 does not put dock widgets in a scroll area itself)."""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QVBoxLayout, QWidget

MAX_HINT_HEIGHT = 640  # px: the height a dock asks for at most (a 1280x800 screen, menus and title)
MAX_HINT_WIDTH = 440  # px: long texts (model summary, messages) wrap rather than widen the dock
MIN_HEIGHT = 200  # px: the least height it needs (two docks stacked on an 800 px screen)


class ScrollDock(QWidget):
    """Put the controls in ``self.body`` (give it a layout); they scroll vertically when the dock
    is shorter than they are. The dock's size hint is the body's, at most MAX_HINT_HEIGHT high and
    MAX_HINT_WIDTH wide (never narrower than the body's minimum)."""

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

    def _bar_width(self) -> int:
        return self.scroll.verticalScrollBar().sizeHint().width()

    def sizeHint(self) -> QSize:
        hint, least = self.body.sizeHint(), self.body.minimumSizeHint()
        width = max(min(hint.width(), MAX_HINT_WIDTH), least.width())
        return QSize(width + self._bar_width(), min(hint.height(), MAX_HINT_HEIGHT))

    def minimumSizeHint(self) -> QSize:
        return QSize(self.body.minimumSizeHint().width() + self._bar_width(), MIN_HEIGHT)
