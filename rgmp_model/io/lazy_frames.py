"""Frames read on demand, and the axis rules of a stack's files: the base that the TIFF and
folder readers (:mod:`rgmp_model.io.stack_io`) and the zarr reader (:mod:`rgmp_model.io.zarr_stacks`)
build on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np

__all__ = ["LazyFrames", "PathLike", "apply_layout", "existing_path", "frames_layout", "guess_axes"]

PathLike = Union[str, "os.PathLike[str]"]


def existing_path(path: PathLike) -> Path:
    """``path`` as a Path, or a FileNotFoundError that says to check it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist: check the path (a folder of frames, a TIFF or an image file)")
    return p


class LazyFrames:
    """Array-like over frames read on demand; subclasses set ``shape``/``dtype`` and ``_read_frame``."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def _read_frame(self, t: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, key: Any) -> np.ndarray:
        """``stack[t]`` -> one frame (H,W[,C]); ``stack[a:b]`` or ``stack[[i, j]]`` -> (n,H,W[,C]).

        Only the frames selected by the first index are read; further indices (a tuple, as dask
        passes) are applied to what was read.
        """
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if key is Ellipsis:
            key, rest = slice(None), (Ellipsis, *rest)
        n = len(self)
        if isinstance(key, (int, np.integer)):
            t = int(key) + n if int(key) < 0 else int(key)
            if not 0 <= t < n:
                raise IndexError(f"frame index {int(key)} is out of range for a stack of {n} frames")
            frame = self._read_frame(t)
            return frame[rest] if rest else frame
        if isinstance(key, slice):
            idx = list(range(n)[key])
        else:
            arr = np.asarray(key)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"boolean frame index has shape {arr.shape}, expected ({n},)")
                arr = np.flatnonzero(arr)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise TypeError(f"cannot index frames with {key!r}: use an int, a slice or a list of ints")
            idx = [int(i) + n if i < 0 else int(i) for i in arr]
            if any(not 0 <= i < n for i in idx):
                raise IndexError(f"frame indices {arr.tolist()} are out of range for a stack of {n} frames")
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        for j, t in enumerate(idx):
            out[j] = self._read_frame(t)
        return out[(slice(None), *rest)] if rest else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


def guess_axes(shape: tuple[int, ...]) -> str:
    """Axis letters for an array whose file names none: (..., Y, X[, S]) with Q for the unknown axes."""
    if len(shape) >= 3 and shape[-1] in (3, 4):
        return "Q" * (len(shape) - 3) + "YXS"
    return "Q" * (len(shape) - 2) + "YX"


def frames_layout(shape: tuple[int, ...], axes: str, name: str) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
    """(squeezed shape, axis order, output shape) that turn a TIFF series into (T,H,W[,C])."""
    shape = tuple(int(s) for s in shape)
    if len(axes) != len(shape) or "Y" not in axes or "X" not in axes:
        axes = guess_axes(shape)
    keep = [i for i, (n, a) in enumerate(zip(shape, axes)) if n != 1 or a in "YX"]
    sq_shape = tuple(shape[i] for i in keep)
    sq_axes = "".join(axes[i] for i in keep)
    chan = [i for i, a in enumerate(sq_axes) if a in "SC"]
    stack = [i for i, a in enumerate(sq_axes) if a not in "YXSC"]
    if len(chan) > 1 or len(stack) > 1:
        raise ValueError(
            f"{name} has axes {axes} with shape {shape}: more than one stack axis (e.g. time and z) "
            "or channel axis; save a single (T,Y,X) or (T,Y,X,C) series"
        )
    perm = [*stack, sq_axes.index("Y"), sq_axes.index("X"), *chan]
    out = tuple(sq_shape[i] for i in perm)
    return sq_shape, perm, out if stack else (1, *out)


def apply_layout(data: np.ndarray, layout: tuple[tuple[int, ...], list[int], tuple[int, ...]]) -> np.ndarray:
    """``data`` in the (T,H,W[,C]) order of a :func:`frames_layout`."""
    sq_shape, perm, out = layout
    view = data.reshape(sq_shape).transpose(perm)
    return view if view.shape == out else view[np.newaxis]
