"""Label stack stores: where :class:`~rgmp_model.io.label_io.LabelStackWriter` puts frames of the
stack formats (the ``create_store`` of :mod:`rgmp_model.io.formats`).

A store is created at a temporary path as ``Store(path, shape, dtype, axes)`` for ``shape``
(leading axes..., H, W); ``write(index, frame)`` puts one (H, W) frame at the tuple ``index`` of
the leading axes, ``close()`` finishes the store (the writer then renames it into place).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rgmp_model.io.tiff_out import TiffFrameFile

__all__ = ["TiffStore", "ZarrStore"]


class TiffStore:
    """An uncompressed TIFF, its space reserved at once, written with ordinary writes
    (:class:`~rgmp_model.io.tiff_out.TiffFrameFile`: a full disk is an OSError, never a signal)."""

    def __init__(self, path: Path, shape: Sequence[int], dtype: np.dtype, axes: str) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.file = TiffFrameFile(path, self.shape, dtype, axes)

    def write(self, index: tuple[int, ...], frame: np.ndarray) -> None:
        """Frame ``index`` (one index per leading axis) <- (H, W) ``frame``."""
        self.file.write(int(np.ravel_multi_index(index, self.shape[:-2])), frame)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self.file.close()


class ZarrStore:
    """A zarr array with one chunk per frame, so that stacks larger than memory stream to disk."""

    def __init__(self, path: Path, shape: Sequence[int], dtype: np.dtype, axes: str) -> None:
        import zarr

        shape = tuple(int(n) for n in shape)
        self.array = zarr.create_array(str(path), shape=shape, chunks=(1,) * (len(shape) - 2) + shape[-2:],
                                       dtype=dtype, fill_value=0)

    def write(self, index: tuple[int, ...], frame: np.ndarray) -> None:
        """Frame ``index`` (one index per leading axis) <- (H, W) ``frame``."""
        self.array[index] = frame

    def close(self) -> None:
        """Nothing to close: every chunk is on disk once written."""
