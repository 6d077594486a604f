"""Writing synthetic sequences to disk: DAVIS layout (for the CLI and training) and TIFF stacks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from rgmp_model.io.label_io import write_palette_png
from rgmp_model.data.synthetic import SyntheticSequence


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    """Scale a whole stack to uint8 between its 0.5 and 99.5 percentiles."""
    lo, hi = np.percentile(frames, [0.5, 99.5])
    scaled = (frames.astype(np.float32) - lo) / max(float(hi - lo), 1e-6)
    return np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8)


def save_davis_layout(sequence: SyntheticSequence, root: str | os.PathLike) -> Path:
    """Write ``sequence`` in the DAVIS layout under ``root`` and return the image folder.

    Images go to ``root/JPEGImages/480p/<name>/00000.jpg, ...`` (RGB uint8, JPEG quality 95).
    Grey or non-uint8 stacks (e.g. uint16 microscopy) are written as 8-bit PNGs
    (``00000.png, ...``) instead, scaled between the stack's 0.5 and 99.5 percentiles (uint8 grey
    is written unscaled). Labels go to ``root/Annotations/480p/<name>/00000.png, ...`` as palette
    PNGs with the DAVIS palette (ids must be <= 255).
    """
    labels = np.asarray(sequence.labels)
    if labels.size and int(labels.max()) > 255:
        raise ValueError("palette PNG annotations hold ids up to 255: use save_tiff for larger ids")
    root = Path(root)
    image_dir = root / "JPEGImages" / "480p" / sequence.name
    label_dir = root / "Annotations" / "480p" / sequence.name
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(sequence.frames)
    rgb = frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8
    if not rgb and frames.dtype != np.uint8:
        frames = _to_uint8(frames)
    for k in range(frames.shape[0]):
        if rgb:
            Image.fromarray(frames[k]).save(image_dir / f"{k:05d}.jpg", quality=95)
        else:
            Image.fromarray(frames[k]).save(image_dir / f"{k:05d}.png")
        write_palette_png(label_dir / f"{k:05d}.png", labels[k])
    return image_dir


def save_tiff(sequence: SyntheticSequence, images_path: str | os.PathLike, labels_path: str | os.PathLike) -> None:
    """Write frames (T, H, W[, 3]) and labels (T, H, W) as two TIFF stacks."""
    frames = np.asarray(sequence.frames)
    photometric = "rgb" if frames.ndim == 4 and frames.shape[-1] == 3 else "minisblack"
    for path, data, phot in ((images_path, frames, photometric), (labels_path, sequence.labels, "minisblack")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, np.asarray(data), photometric=phot)
