"""A small line chart drawn with QPainter (no plotting library): live loss curves, per-frame scores.

    plot = LinePlot(title="loss", x_label="iteration")
    plot.append(1, 0.93)            # live: one point at a time
    plot.set_data(frames, scores)   # or all at once
    plot.set_marker(12)             # highlight x = 12
    plot.set_annotations([(17, "2 lost")])  # dashed line and a note at x = 17
    plot.clicked.connect(go_to)     # x under a click (or a drag)

Non-finite y values leave gaps. Curves with many more points than pixels are decimated to a
min/max envelope per pixel column, so thousands of points draw as fast as a few hundred.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFontMetrics, QMouseEvent, QPainter, QPaintEvent, QPalette, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

MIN_PLOT_HEIGHT = 120  # px: the axes, a title and a curve one can still read
LINE_COLOR = QColor(66, 165, 245)  # readable on napari's dark and light themes
MARKER_COLOR = QColor(255, 152, 0)
NOTE_COLOR = QColor(239, 83, 80)


def nice_ticks(low: float, high: float, count: int) -> list[float]:
    """About ``count`` (at most 1.3 x ``count`` + 1) round tick values, 1, 2 or 5 times a power of
    ten apart, in [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low or count < 1:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / count / 1.3
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9 and len(ticks) < 100:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def format_tick(value: float) -> str:
    """Short tick label: 3 significant digits, integers without a decimal point."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def envelope(px: np.ndarray, py: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Decimate points (``px`` in pixels, non-decreasing) to the min and max of ``py`` per pixel
    column when there are more than two points per column; otherwise return them unchanged."""
    if len(px) <= 2 * max(columns, 1) or np.any(np.diff(px) < 0):
        return px, py
    column = np.floor(px).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, column[1:] != column[:-1]])
    with np.errstate(invalid="ignore"):
        low = np.fmin.reduceat(py, starts)
        high = np.fmax.reduceat(py, starts)
    xs = np.repeat(column[starts].astype(float) + 0.5, 2)
    ys = np.stack([low, high], axis=1).reshape(-1)
    return xs, ys


def finite_runs(py: np.ndarray) -> list[slice]:
    """Slices of consecutive finite values (the pieces of a curve with gaps)."""
    finite = np.isfinite(py)
    edges = np.flatnonzero(np.diff(np.r_[False, finite, False].astype(np.int8)))
    return [slice(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


class LinePlot(QWidget):
    """Line chart with a title, axis ticks, an optional fixed y range and a highlighted x.

    ``clicked(x)`` is emitted with the x value under a left click (and while dragging).
    """

    clicked = Signal(float)

    def __init__(
        self,
        title: str = "",
        x_label: str = "",
        y_label: str = "",
        y_range: tuple[float, float] | None = None,
        x_range: tuple[float, float] | None = None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._xs: list[float] = []
        self._ys: list[float] = []
        self._title = title
        self._x_label = x_label
        self._y_label = y_label
        self._y_range = y_range
        self._x_range = x_range
        self._marker: float | None = None
        self._notes: list[tuple[float, str]] = []
        self.setMinimumHeight(MIN_PLOT_HEIGHT)
        self.setMinimumWidth(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    # ------------------------------------------------------------------------------ data
    def set_data(self, xs: Iterable[float], ys: Iterable[float]) -> None:
        """Replace the curve; ``xs`` and ``ys`` must have the same length."""
        xs, ys = [float(x) for x in xs], [float(y) for y in ys]
        if len(xs) != len(ys):
            raise ValueError(f"set_data needs as many x as y values, got {len(xs)} and {len(ys)}")
        self._xs, self._ys = xs, ys
        self.update()

    def append(self, x: float, y: float) -> None:
        """Add one point at the end of the curve (for live curves)."""
        self._xs.append(float(x))
        self._ys.append(float(y))
        self.update()

    def clear(self) -> None:
        """Remove every point (the marker stays)."""
        self.set_data([], [])

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the curve's x and y values."""
        return np.array(self._xs, dtype=float), np.array(self._ys, dtype=float)

    def __len__(self) -> int:
        return len(self._xs)

    # ------------------------------------------------------------------------------ look
    def set_axis_labels(self, x_label: str = "", y_label: str = "") -> None:
        self._x_label, self._y_label = x_label, y_label
        self.update()

    def set_y_range(self, y_range: tuple[float, float] | None) -> None:
        """Fix the y axis to (low, high), or None to fit the data."""
        if y_range is not None and not y_range[0] < y_range[1]:
            raise ValueError(f"y range must be (low, high) with low < high, got {y_range}")
        self._y_range = y_range
        self.update()

    def set_x_range(self, x_range: tuple[float, float] | None) -> None:
        """Fix the x axis to (low, high) (e.g. 0 to the number of iterations of a live curve), or
        None to fit the data."""
        if x_range is not None and not x_range[0] < x_range[1]:
            raise ValueError(f"x range must be (low, high) with low < high, got {x_range}")
        self._x_range = x_range
        self.update()

    def set_marker(self, x: float | None) -> None:
        """Draw a vertical marker at ``x`` (None removes it)."""
        self._marker = None if x is None else float(x)
        self.update()

    def marker(self) -> float | None:
        return self._marker

    def set_annotations(self, notes: Iterable[tuple[float, str]]) -> None:
        """Dashed vertical lines with a short note each, e.g. where an object was lost."""
        self._notes = [(float(x), str(text)) for x, text in notes]
        self.update()

    def annotations(self) -> list[tuple[float, str]]:
        return list(self._notes)

    def sizeHint(self) -> QSize:
        """As high as the least it needs: it grows into the room a layout leaves (Expanding). A
        taller hint made a dock's body taller than the dock at 1280x800 once labels wrapped (a
        wrapping label makes the layout add up preferred heights, not least ones)."""
        return QSize(300, self.minimumHeight())

    # ------------------------------------------------------------------------------ geometry
    def x_range(self) -> tuple[float, float] | None:
        """The x axis' (low, high): the fixed range, else the data's; None without data."""
        if not self._xs:
            return None
        if self._x_range is not None:
            return self._x_range
        low, high = min(self._xs), max(self._xs)
        return (low - 0.5, high + 0.5) if low == high else (low, high)

    def y_range(self) -> tuple[float, float]:
        """The y axis' (low, high): the fixed range, else the finite data's range."""
        if self._y_range is not None:
            return self._y_range
        finite = [y for y in self._ys if math.isfinite(y)]
        if not finite:
            return (0.0, 1.0)
        low, high = min(finite), max(finite)
        if low == high:
            pad = abs(low) * 0.1 or 0.5
            return (low - pad, high + pad)
        pad = (high - low) * 0.05
        return (low - pad, high + pad)

    def plot_rect(self) -> QRectF:
        """The area inside the axes, in widget pixels."""
        metrics = QFontMetrics(self.font())
        low, high = self.y_range()
        labels = [format_tick(v) for v in nice_ticks(low, high, 4)] or ["0"]
        left = max(metrics.horizontalAdvance(s) for s in labels) + 8 + (metrics.height() if self._y_label else 0)
        top = metrics.height() + 6 if self._title else 8
        bottom = metrics.height() * (2 if self._x_label else 1) + 8
        return QRectF(left, top, max(self.width() - left - 10, 1), max(self.height() - top - bottom, 1))

    def pixel_of(self, x: float) -> float:
        """Widget x coordinate of data value ``x`` (needs data)."""
        rect, (low, high) = self.plot_rect(), self.x_range() or (0.0, 1.0)
        return rect.left() + (x - low) / (high - low) * rect.width()

    def x_at(self, pixel: float) -> float | None:
        """Data x under widget x coordinate ``pixel``, clamped to the axis; None without data."""
        span = self.x_range()
        if span is None:
            return None
        rect = self.plot_rect()
        fraction = min(max((pixel - rect.left()) / rect.width(), 0.0), 1.0)
        return span[0] + fraction * (span[1] - span[0])

    # ------------------------------------------------------------------------------ events
    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._emit_at(event):
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton and self._emit_at(event):
            event.accept()
            return
        super().mouseMoveEvent(event)

    def _emit_at(self, event: QMouseEvent) -> bool:
        x = self.x_at(event.position().x() if hasattr(event, "position") else event.x())
        if x is None:
            return False
        self.clicked.emit(x)
        return True

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        try:
            painter.setRenderHint(QPainter.RenderHint.Antialiasing)
            self._paint(painter)
        finally:
            painter.end()

    # ------------------------------------------------------------------------------ drawing
    def _paint(self, painter: QPainter) -> None:
        text = self.palette().color(QPalette.ColorRole.WindowText)
        faint = QColor(text)
        faint.setAlpha(50)
        metrics = QFontMetrics(self.font())
        rect = self.plot_rect()
        if self._title:
            painter.setPen(text)
            painter.drawText(QRectF(0, 0, self.width(), rect.top()), Qt.AlignmentFlag.AlignCenter, self._title)
        self._paint_y_axis(painter, rect, text, faint, metrics)
        span = self.x_range()
        painter.setPen(QPen(text, 1))
        painter.drawRect(rect)
        if span is None:
            painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, "no data")
            return
        self._paint_x_axis(painter, rect, span, text, faint, metrics)
        painter.save()
        painter.setClipRect(rect.adjusted(-2, -2, 2, 2))
        self._paint_curve(painter, rect, span)
        self._paint_notes(painter, rect, span, metrics)
        if self._marker is not None and span[0] <= self._marker <= span[1]:
            painter.setPen(QPen(MARKER_COLOR, 1.5))
            px = self.pixel_of(self._marker)
            painter.drawLine(QPointF(px, rect.top()), QPointF(px, rect.bottom()))
        painter.restore()

    def _paint_y_axis(self, painter: QPainter, rect: QRectF, text: QColor, faint: QColor,
                      metrics: QFontMetrics) -> None:
        low, high = self.y_range()
        for value in nice_ticks(low, high, max(2, int(rect.height() // 30))):
            py = rect.bottom() - (value - low) / (high - low) * rect.height()
            painter.setPen(faint)
            painter.drawLine(QPointF(rect.left(), py), QPointF(rect.right(), py))
            painter.setPen(text)
            label = format_tick(value)
            painter.drawText(QPointF(rect.left() - 4 - metrics.horizontalAdvance(label),
                                     py + metrics.ascent() / 2 - 1), label)
        if self._y_label:
            painter.save()
            painter.translate(metrics.ascent(), rect.center().y())
            painter.rotate(-90)
            painter.setPen(text)
            painter.drawText(QRectF(-rect.height() / 2, -metrics.ascent(), rect.height(), metrics.height()),
                             Qt.AlignmentFlag.AlignCenter, self._y_label)
            painter.restore()

    def _paint_x_axis(self, painter: QPainter, rect: QRectF, span: tuple[float, float], text: QColor,
                      faint: QColor, metrics: QFontMetrics) -> None:
        for value in nice_ticks(span[0], span[1], max(2, int(rect.width() // 70))):
            px = self.pixel_of(value)
            painter.setPen(faint)
            painter.drawLine(QPointF(px, rect.top()), QPointF(px, rect.bottom()))
            painter.setPen(text)
            label = format_tick(value)
            width = metrics.horizontalAdvance(label)
            left = min(max(px - width / 2, 0.0), self.width() - width)  # keep edge labels inside
            painter.drawText(QPointF(left, rect.bottom() + 3 + metrics.ascent()), label)
        if self._x_label:
            painter.setPen(text)
            painter.drawText(QRectF(rect.left(), rect.bottom() + metrics.height() + 4, rect.width(), metrics.height()),
                             Qt.AlignmentFlag.AlignCenter, self._x_label)

    def _paint_curve(self, painter: QPainter, rect: QRectF, span: tuple[float, float]) -> None:
        xs, ys = self.data()
        low, high = self.y_range()
        px = rect.left() + (xs - span[0]) / (span[1] - span[0]) * rect.width()
        py = rect.bottom() - (ys - low) / (high - low) * rect.height()
        px, py = envelope(px, py, int(rect.width()))
        painter.setPen(QPen(LINE_COLOR, 1.5))
        painter.setBrush(LINE_COLOR)
        for run in finite_runs(py):
            points = [QPointF(float(a), float(b)) for a, b in zip(px[run], py[run])]
            if len(points) == 1:
                painter.drawEllipse(points[0], 2.0, 2.0)
            else:
                painter.drawPolyline(QPolygonF(points))

    def _paint_notes(self, painter: QPainter, rect: QRectF, span: tuple[float, float], metrics: QFontMetrics) -> None:
        pen = QPen(NOTE_COLOR, 1.2)
        pen.setStyle(Qt.PenStyle.DashLine)
        for row, (x, text) in enumerate(n for n in self._notes if span[0] <= n[0] <= span[1]):
            px = self.pixel_of(x)
            painter.setPen(pen)
            painter.drawLine(QPointF(px, rect.top()), QPointF(px, rect.bottom()))
            painter.setPen(NOTE_COLOR)
            width = metrics.horizontalAdvance(text)
            left = px + 3 if px + 3 + width <= rect.right() else px - 3 - width
            painter.drawText(QPointF(left, rect.top() + metrics.ascent() + 2 + (row % 3) * metrics.height()), text)
