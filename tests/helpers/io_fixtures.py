"""Small image files shared by the stack and label I/O tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def grey_frames(folder: Path, count: int = 4, shape: tuple[int, int] = (6, 8), fmt: str = "{:05d}.png") -> np.ndarray:
    """Write ``count`` random grey PNG frames into ``folder``; returns them (count, *shape)."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = RNG.integers(0, 256, size=(count, *shape), dtype=np.uint8)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / fmt.format(i))
    return frames


def palette_png(path: Path, ids: np.ndarray, palette: list[int]) -> None:
    """Write (H, W) ids as a mode "P" PNG with ``palette``."""
    image = Image.fromarray(ids.astype(np.uint8))
    image.putpalette(palette)
    image.save(path)
