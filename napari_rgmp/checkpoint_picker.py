"""The one checkpoint picker of both docks.

A combo box of the checkpoints the registry offers (the bundled default, those added in this
session, the user model folder) by file name, a last "Browse..." entry, and one line describing the
chosen one (encoder, validation score, working size) with its whole description on demand
("details", and the line's tooltip). Descriptions are read in a worker thread (a checkpoint's weights are hashed) and
cached per file version, so choosing a model never blocks the viewer. A browsed file is listed
here at once and offered to the other docks (added to the registry) once it reads as a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QSize, Qt, Signal
from qtpy.QtGui import QResizeEvent
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QHBoxLayout, QLabel, QSizePolicy, QToolButton, QVBoxLayout, QWidget,
)

from .weak_slots import weak_slot
from .workers import DockWorkers, quit_worker

BROWSE = "Browse..."
CHECKPOINT_FILTER = "PyTorch checkpoints (*.pt *.pth *.ckpt);;All files (*)"
READING = "reading the checkpoint..."
NO_MODEL = "no model yet: Browse... for a checkpoint (napari-rgmp's own or the authors' weights.pth)"
NO_MODEL_LINE = "no model yet: Browse..."


HINT_WIDTH = 200  # px: the width an ElidedLabel asks for at most


class ElidedLabel(QLabel):
    """One line that ends in "…" when it is wider than the label (never widens its dock);
    ``text()`` is the whole line."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setText(text)

    def text(self) -> str:  # the whole line, not the shortened one on screen
        return self._full

    def setText(self, text: str) -> None:
        self._full = str(text)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, max(self.width(), 24))
        super().setText(shown)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def minimumSizeHint(self) -> QSize:
        return QSize(24, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # the text never decides the dock's width
        return QSize(min(self.fontMetrics().horizontalAdvance(self._full) + 4, HINT_WIDTH), super().sizeHint().height())


class CheckpointPicker(QWidget):
    """Choose a checkpoint. ``changed(path or None)`` follows the choice; ``described(Description)``
    comes when the chosen checkpoint's description is known (see :mod:`.checkpoints`)."""

    changed = Signal(object)
    described = Signal(object)

    def __init__(self, title: str = "RGMP checkpoint", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from .checkpoints import registry  # imports torch: only when a widget opens

        self._title = title
        self._browsed: list[str] = []  # chosen files not (yet) in the registry
        self._pending: set[str] = set()  # paths being described by a worker
        self._current: str | None = None
        self._shown: Any = None  # the Description on display
        self.workers = DockWorkers(stop=quit_worker)  # descriptions being read: awaited, their result dropped
        self.combo = QComboBox()
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setMinimumContentsLength(12)
        self.info_label = ElidedLabel()  # one line; the whole description in details_label
        self.info_label.setToolTip("what the chosen model is: its encoder, validation score and working size")
        self.details_button = QToolButton(text="details", checkable=True)
        self.details_button.setToolTip("show what the model was trained on, all its validation scores and its file")
        self.details_label = QLabel()
        self.details_label.setWordWrap(True)
        self.details_label.setVisible(False)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        line = QHBoxLayout()
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.info_label, 1)
        line.addWidget(self.details_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.combo)
        layout.addLayout(line)
        layout.addWidget(self.details_label)
        self.details_button.toggled.connect(self.details_label.setVisible)
        self.combo.activated.connect(self._on_activated)
        self.combo.currentIndexChanged.connect(self._on_index_changed)
        # weakly: the registry outlives every picker, and a lambda on ``destroyed`` that disconnected
        # it ran in the middle of the garbage collection of a never-docked dock and crashed napari
        registry.changed.connect(weak_slot(self.refresh))
        self.refresh()

    # ---------------------------------------------------------------------------------- choice
    def path(self) -> str | None:
        """Full path of the chosen checkpoint, or None."""
        return self.combo.currentData()

    def set_path(self, path: str | Path) -> None:
        """Choose ``path`` (listed if it was not)."""
        path = str(Path(path).expanduser().resolve())
        if self.combo.findData(path) < 0:
            self._browsed.append(path)
            self.refresh()
        self.combo.setCurrentIndex(self.combo.findData(path))

    def description(self) -> Any:
        """The chosen checkpoint's Description when it was read (for its current file), else None."""
        from .checkpoints import cached_description

        path = self.path()
        return None if path is None else cached_description(path)

    def checked_path(self, what: str = "a model") -> str:
        """The chosen checkpoint when it exists and did not fail to read; else ValueError /
        FileNotFoundError saying what to do (``what``: "a model", "a base checkpoint", ...)."""
        path = self.path()
        if path is None:
            raise ValueError(f"choose {what}: {BROWSE} for a checkpoint (napari-rgmp's own or the authors' weights.pth)")
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist: choose another one ({BROWSE})")
        known = self.description()
        if known is not None and not known.ok:
            raise ValueError(known.text)
        return path

    def refresh(self, *_: Any) -> None:
        """Re-list the registry's checkpoints and the browsed ones, keeping the current choice."""
        from .checkpoints import registry

        current = self.path()
        paths = [str(p) for p in registry.paths()]
        self._browsed = [p for p in self._browsed if p not in paths]
        paths += self._browsed
        self.combo.blockSignals(True)
        self.combo.clear()
        for path in paths:
            self.combo.addItem(Path(path).name, path)
            self.combo.setItemData(self.combo.count() - 1, path, Qt.ItemDataRole.ToolTipRole)
        self.combo.addItem(BROWSE, None)
        self.combo.setCurrentIndex(paths.index(current) if current in paths else 0)
        self.combo.blockSignals(False)
        self._on_index_changed()

    def _on_activated(self, index: int) -> None:
        if self.combo.itemData(index) is not None:
            return
        start = str(Path(self._current).parent) if self._current else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, self._title, start, CHECKPOINT_FILTER)
        if path:
            self.set_path(path)
        else:  # back to the previous choice
            self.combo.setCurrentIndex(max(self.combo.findData(self._current), 0))

    def _on_index_changed(self, *_: Any) -> None:
        path = self.path()
        self.combo.setToolTip(f"{self._title}: {path}" if path else f"{self._title}: {BROWSE} to choose a file")
        if path != self._current:
            self._current = path
            self.changed.emit(path)
        self._describe(path)

    # ---------------------------------------------------------------------------------- description
    def _describe(self, path: str | None) -> None:
        from .checkpoints import cached_description, describe_checkpoint

        if path is None:
            self._shown = None
            self._set_text(NO_MODEL_LINE, NO_MODEL)
            self.info_label.setToolTip(NO_MODEL)
            return
        known = cached_description(path)
        if known is not None:
            self._show(known)
            return
        self._set_text(READING, READING)
        if path not in self._pending:
            self._pending.add(path)
            worker = self.workers.track(create_worker(describe_checkpoint, path, _start_thread=False))
            worker.returned.connect(self._on_described)
            worker.start()

    def _on_described(self, description: Any) -> None:
        from .checkpoints import registry

        try:
            self._pending.discard(description.path)
            if description.path == self.path():
                self._show(description)
            if description.ok and description.path in self._browsed:
                registry.add(description.path)  # the other docks list it too
        except RuntimeError:  # the picker was deleted while the worker read the file
            pass

    def _set_text(self, line: str, details: str) -> None:
        self.info_label.setText(line)
        self.details_label.setText(details)

    def _show(self, description: Any) -> None:
        details = f"{description.text}\n{description.path}" if description.ok else description.text
        self._set_text(description.line, details)
        self.info_label.setToolTip(description.details if description.ok else description.text)
        if description != self._shown:
            self._shown = description
            self.described.emit(description)
