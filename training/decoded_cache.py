"""Decoded training samples kept on disk, so that a GPU is not left waiting for JPEG decoding.

``data.decoded_cache: FOLDER`` (default off) makes :func:`training.data.build_stage` wrap every
source: the first time a frame (video sources) or an image and its mask (still sources) is read,
the decoded array is written under FOLDER as ``.npy`` (uint8 when the values are uint8 or uint8
/ 255 exactly, else as read); later reads, by any DataLoader worker and by later runs, map that
file instead of decoding again (the page cache then holds the decoded data once for all
workers). Files are written atomically (a temporary file, then a rename), so workers racing on
one sample both write the same bytes and a reader never sees half a file. The folder of a source
is named by a hash of what identifies its data (its class, its root path or generator settings,
the sequence), so sources never share files; delete the folder to rebuild it.
Torch-free, like the sources.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["CachedImageSource", "CachedVideoSource", "DecodedFrames", "cached_array"]


def _identity(source: Any) -> str:
    """What names a source's data: its class and its settings (paths, seeds, sizes), not its caches."""
    settings = {k: v for k, v in sorted(vars(source).items()) if not k.startswith("_") and
                isinstance(v, (str, int, float, tuple, list, Path, type(None)))}
    return hashlib.sha1(f"{type(source).__module__}.{type(source).__name__}:{settings!r}".encode()).hexdigest()[:16]


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.save(stream, array, allow_pickle=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _compact(array: np.ndarray) -> tuple[np.ndarray, bool]:
    """The array to store and whether it was divided by 255: float values that are uint8 / 255
    exactly are stored as uint8 (a quarter of the bytes), anything else as it is."""
    if array.dtype.kind == "f" and array.size:
        scaled = np.round(array * 255.0)
        if scaled.min() >= 0 and scaled.max() <= 255:
            small = scaled.astype(np.uint8)
            if np.array_equal((small.astype(np.float32) * np.float32(1.0 / 255.0)).astype(array.dtype), array):
                return small, True
    return array, False


def cached_array(path: Path, read: Callable[[], np.ndarray]) -> np.ndarray:
    """``read()``'s array, kept at ``path`` (an ``.npy``; ``.u8.npy`` beside it for the uint8 / 255
    form of a float array): read from there when it exists."""
    scaled = path.with_suffix(".u8.npy")
    if scaled.is_file():
        return np.load(scaled, mmap_mode="r").astype(np.float32) * np.float32(1.0 / 255.0)
    if path.is_file():
        return np.array(np.load(path, mmap_mode="r"))  # a writable copy: augmentation may write
    array = np.asarray(read())
    stored, divided = _compact(array)
    _write(scaled if divided else path, stored)
    return array


class DecodedFrames:
    """A lazy (T, H, W[, C]) stack whose frames are read once and then mapped from ``folder``."""

    def __init__(self, frames: Any, folder: Path) -> None:
        self._frames, self.folder = frames, Path(folder)
        self.shape, self.dtype = tuple(frames.shape), np.dtype(frames.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if not isinstance(index, (int, np.integer)):
            return np.stack([self[int(t)] for t in np.arange(self.shape[0])[index]])
        t = int(index) % self.shape[0]
        return cached_array(self.folder / f"{t}.npy", lambda: np.asarray(self._frames[t]))


class CachedVideoSource:
    """A video source whose sequences' frames and labels go through :class:`DecodedFrames`."""

    def __init__(self, source: Any, folder: Path) -> None:
        self.source, self.folder = source, Path(folder) / _identity(source)
        self.names = source.names

    def __len__(self) -> int:
        return len(self.source)

    def annotated(self, i: int) -> tuple[int, ...]:
        return self.source.annotated(i)

    def sequence(self, i: int) -> Any:
        sequence = self.source.sequence(i)
        where = self.folder / f"{i}-{hashlib.sha1(sequence.name.encode()).hexdigest()[:8]}"
        return replace(sequence, frames=DecodedFrames(sequence.frames, where / "frames"),
                       labels=DecodedFrames(sequence.labels, where / "labels"))

    def __getattr__(self, name: str) -> Any:  # anything else a caller asks of the source
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)


class CachedImageSource:
    """A still source whose (image, mask) pairs are read once and then mapped from a folder."""

    def __init__(self, source: Any, folder: Path) -> None:
        self.source, self.folder = source, Path(folder) / _identity(source)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        pair: list[np.ndarray] = []

        def read(part: int) -> np.ndarray:
            if not pair:
                pair.extend(self.source[index])
            return pair[part]

        index = int(index)
        return (cached_array(self.folder / f"{index}-image.npy", lambda: read(0)),
                cached_array(self.folder / f"{index}-mask.npy", lambda: read(1)))

    def __getattr__(self, name: str) -> Any:
        if name == "source":
            raise AttributeError(name)
        return getattr(self.source, name)
