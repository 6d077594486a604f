"""A small PNG plot of the training loss and validation J&F (drawn with Pillow, no plotting
library needed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

_SIZE = (900, 420)
_MARGIN = 50


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
           points: Sequence[tuple[float, float]], colour: tuple[int, int, int], y_range: tuple[float, float] | None) -> None:
    left, top, right, bottom = box
    draw.text((left, top - 16), title, fill=(0, 0, 0))
    if not points:
        draw.text((left + 10, top + 10), "no data yet", fill=(120, 120, 120))
        return
    xs = [p[0] for p in points]
    ys = [p[1] for p in points if math.isfinite(p[1])]
    if not ys:
        return
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = y_range if y_range else (min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1)

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left),
                bottom - (min(max(y, y0), y1) - y0) / (y1 - y0) * (bottom - top))

    for fraction in (0.0, 0.5, 1.0):
        y = y0 + fraction * (y1 - y0)
        _, py = to_pixel(x0, y)
        draw.line([(left, py), (right, py)], fill=(225, 225, 225))
        draw.text((left - _MARGIN + 4, py - 6), f"{y:.3g}", fill=(0, 0, 0))
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((left, bottom + 4), f"{x0:g}", fill=(0, 0, 0))
    draw.text((right - 40, bottom + 4), f"{x1:g} it", fill=(0, 0, 0))
    pixels = [to_pixel(x, y) for x, y in points if math.isfinite(y)]
    if len(pixels) > 1:
        draw.line(pixels, fill=colour, width=2)
    for px, py in pixels if len(pixels) < 40 else pixels[-1:]:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)


def binned(points: Sequence[tuple[float, float]], bins: int = 300) -> list[tuple[float, float]]:
    """At most ``bins`` (mean x, mean y) points of consecutive runs: a readable loss curve."""
    if len(points) <= bins:
        return list(points)
    size = math.ceil(len(points) / bins)
    chunks = [points[i : i + size] for i in range(0, len(points), size)]
    return [(sum(p[0] for p in c) / len(c), sum(p[1] for p in c) / len(c)) for c in chunks]


def plot_training(path: str | Path, losses: Sequence[tuple[float, float]],
                  validation: Sequence[tuple[float, float]]) -> Path:
    """Write a PNG with two panels: the loss per iteration (bin means beyond 300 points) and the
    validation J&F per iteration."""
    losses = binned(losses)
    image = Image.new("RGB", _SIZE, "white")
    draw = ImageDraw.Draw(image)
    half = _SIZE[0] // 2
    _panel(draw, (_MARGIN, 30, half - 20, _SIZE[1] - 30), "training loss", losses, (31, 119, 180), None)
    _panel(draw, (half + _MARGIN, 30, _SIZE[0] - 20, _SIZE[1] - 30), "validation J&F", validation, (214, 39, 40), (0.0, 1.0))
    path = Path(path)
    image.save(path)
    return path
