"""An uncompressed TIFF stack written frame by frame with ordinary file writes (no memory map).

:class:`TiffFrameFile` creates the TIFF (its header, metadata and one contiguous data block) and
reserves the data block's space on disk at once, so that a disk too small for the output fails
at the start with a message instead of part-way; each frame is then written at its offset with
``os.pwrite``. With a memory map, a full disk (or a file system that cannot reserve space)
surfaces as a SIGBUS signal that kills the process without a message; a write gives an OSError
that the caller can report. Frames never written read as 0, and the file is a valid TIFF from
the moment it is created: closing it after a failure keeps the frames done.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

__all__ = ["TiffFrameFile"]


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


class TiffFrameFile:
    """``path``: a new TIFF holding ``shape`` (leading axes..., H, W) of ``dtype`` (native byte
    order), ``axes`` stored in its metadata. ``write(flat_index, frame)`` puts one (H, W) frame
    at its place (frames in C order of the leading axes); ``close()`` closes the file."""

    def __init__(self, path: Path, shape: Sequence[int], dtype: np.dtype, axes: str) -> None:
        self.path, self.shape, self.dtype = Path(path), tuple(int(s) for s in shape), np.dtype(dtype)
        self.frame_bytes = int(np.prod(self.shape[-2:])) * self.dtype.itemsize
        result = tifffile.imwrite(self.path, data=None, shape=self.shape, dtype=self.dtype, photometric="minisblack",
                                  metadata={"axes": axes}, returnoffset=True)
        if result is None:  # pragma: no cover - tifffile always stores uncompressed data contiguously
            raise ValueError(f"{self.path}: tifffile did not store the label stack contiguously")
        self.offset = int(result[0])
        self._fd: int | None = os.open(self.path, os.O_RDWR)
        try:
            self._reserve(int(np.prod(self.shape[:-2])) * self.frame_bytes)
        except BaseException:
            self.close()
            raise

    def _reserve(self, size: int) -> None:
        """Allocate the data block on disk now (where the file system can), so that a full disk is
        found before any frame is computed."""
        if not hasattr(os, "posix_fallocate") or size == 0:
            return
        assert self._fd is not None
        try:
            os.posix_fallocate(self._fd, self.offset, size)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                return  # this file system cannot reserve space: frames are written as they come
            free = shutil.disk_usage(self.path.parent).free
            raise OSError(errno.ENOSPC, f"not enough free space for the output: it needs {_size(size)}, "
                          f"{_size(free)} are free on that disk", str(self.path)) from None

    def write(self, index: int, frame: np.ndarray) -> None:
        """Frame number ``index`` (C order of the leading axes) <- (H, W) ``frame``."""
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = memoryview(np.ascontiguousarray(frame, dtype=self.dtype)).cast("B")
        position, done = self.offset + index * self.frame_bytes, 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], position + done)

    def close(self) -> None:
        """Close the file (idempotent); the TIFF holds every frame written."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
