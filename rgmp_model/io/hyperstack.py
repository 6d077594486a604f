"""Stacks with named axes: time and z (TZYX, ZTYX), a channel axis (TCYX), read lazily.

    stack = open_hyperstack("embryo.tif")              # axes "TZYX", shape (40, 30, 512, 512)
    view = stack.along("z")                            # propagate along z, once per t
    for i in range(view.count):                        # every index of the other axis
        frames = view.frames(i)                        # (30, 512, 512) array-like, read per frame
        ...                                            # results go to out[view.out_index(i, z)]

Axes come from the file: OME-TIFF, ImageJ hyperstacks and tifffile's own metadata, OME-Zarr. When
the file does not name them, the guess is the one of :mod:`rgmp_model.io.stack_io` (the last two
axes are Y, X; a last axis of 3 or 4 is colour), then one stack axis is T and two are T then Z
(TZYX); ``axes="ZTYX"`` overrides it. Axes of size 1 are ignored. The engine takes (T, H, W)
grey or (T, H, W, 3) colour frames: a channel axis of size 3 (or 4, last, as RGBA) is colour,
any other number of channels needs one to be chosen (``channel=``).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from rgmp_model.io.formats import format_of
from rgmp_model.io.stack_io import (
    LazyFrames,
    PathLike,
    _check_tiff_complete,
    _existing,
    _guess_axes,
    open_image_stack,
)

__all__ = ["AXES", "Hyperstack", "PlaneFrames", "StackView", "open_hyperstack"]

AXES = "TZCYX"  # the axis letters a hyperstack may have, each at most once
STACK_AXES = "TZ"


class PlaneFrames(LazyFrames):
    """(T, H, W) or (T, H, W, C) frames of an N-D array: frame t is the plane at index t of axis
    ``along``, with the axes in ``fixed`` ({axis: index}) held; what is left must be Y, X (and C)."""

    def __init__(self, data: Any, axes: str, along: int, fixed: dict[int, int], name: str = "the stack") -> None:
        self.data, self.along, self.fixed, self.name = data, along, dict(fixed), name
        kept = [a for a in range(len(axes)) if a != along and a not in self.fixed]
        letters = [axes[a] for a in kept]
        self._order = [letters.index("Y"), letters.index("X"), *([letters.index("C")] if "C" in letters else [])]
        if len(self._order) != len(kept):
            raise ValueError(f"axes {axes}: every axis but Y, X and C must be held or propagated along")
        self.shape = (int(data.shape[along]), *(int(data.shape[kept[k]]) for k in self._order))
        self.dtype = np.dtype(data.dtype)

    def _read_frame(self, t: int) -> np.ndarray:
        index = tuple(t if a == self.along else self.fixed.get(a, slice(None)) for a in range(len(self.data.shape)))
        try:
            plane = np.asarray(self.data[index])
        except (OSError, RuntimeError, tifffile.TiffFileError) as error:  # a damaged page (codecs raise RuntimeErrors)
            raise ValueError(f"{self.name}: frame {t} cannot be read, its data do not decode: the file is damaged; "
                             "copy or export it again") from error
        return plane.transpose(self._order)


@dataclass(frozen=True)
class StackView:
    """A hyperstack seen as one (T, H, W[, C]) stack per index of its other stack axis.

    ``along``/``other``: the data axes propagated along and iterated over (``other`` None for a
    single stack); ``fixed``: the axes held (size-1 axes at 0, a chosen channel). The output holds
    the labels of every non-channel axis of size > 1 in the input's order (``out_axes``,
    ``out_shape``; at least one stack axis)."""

    stack: Hyperstack
    along: int
    other: int | None
    fixed: tuple[tuple[int, int], ...]

    @property
    def count(self) -> int:
        """Number of stacks: the size of the other stack axis (1 when there is none)."""
        return 1 if self.other is None else int(self.stack.shape[self.other])

    @property
    def num_frames(self) -> int:
        return int(self.stack.shape[self.along])

    @property
    def along_name(self) -> str:
        return self.stack.axes[self.along]

    @property
    def other_name(self) -> str | None:
        return None if self.other is None else self.stack.axes[self.other]

    def _stack_axes(self) -> list[int]:
        return sorted(a for a in (self.along, self.other) if a is not None)

    @property
    def out_axes(self) -> str:
        return "".join(self.stack.axes[a] for a in self._stack_axes()) + "YX"

    @property
    def out_shape(self) -> tuple[int, ...]:
        spatial = tuple(int(self.stack.shape[self.stack.axes.index(a)]) for a in "YX")
        return tuple(int(self.stack.shape[a]) for a in self._stack_axes()) + spatial

    def out_index(self, i: int, t: int) -> int | tuple[int, int]:
        """Where frame ``t`` of stack ``i`` goes in the output: ``t`` or a pair in the output's order."""
        if self.other is None:
            return int(t)
        return (int(t), int(i)) if self.along < self.other else (int(i), int(t))

    def frames(self, i: int = 0) -> PlaneFrames:
        """The (T, H, W[, C]) frames of stack ``i``, read one at a time."""
        fixed = dict(self.fixed)
        if self.other is not None:
            if not 0 <= i < self.count:
                raise ValueError(f"index {i} is outside the {self.other_name} axis (0..{self.count - 1})")
            fixed[self.other] = int(i)
        return PlaneFrames(self.stack.data, self.stack.axes, self.along, fixed, self.stack.name)

    def label_frames(self, labels: Hyperstack, i: int = 0) -> PlaneFrames:
        """The (T, H, W) frames of stack ``i`` of a label hyperstack shaped like the output (in the
        same axis order; axes of size 1 ignored)."""
        big = [a for a, n in enumerate(labels.shape) if n > 1 and labels.axes[a] not in "YX"]
        if labels.squeezed_shape != self.out_shape or "C" in (labels.axes[a] for a in big):
            raise ValueError(
                f"the labels {labels.name} have shape {labels.squeezed_shape} (axes of size 1 left out) but the "
                f"output is {self.out_shape} ({self.out_axes}): give a label stack with the image's axes, without "
                "channels, or one label stack or image for one index (--at)"
            )
        position = self._stack_axes()
        along = big[position.index(self.along)]
        fixed = {a: 0 for a, n in enumerate(labels.shape) if n == 1 and labels.axes[a] not in "YX"}
        if self.other is not None:
            fixed[big[position.index(self.other)]] = int(i)
        if np.dtype(labels.dtype).kind not in "biu":
            raise ValueError(f"labels must be integers, but {labels.name} holds {labels.dtype} values: save them "
                             "as an integer TIFF or zarr array")
        return PlaneFrames(labels.data, labels.axes, along, fixed, labels.name)


@dataclass(frozen=True)
class Hyperstack:
    """An N-D image (or label) array-like read lazily, and its axes: one letter of ``AXES`` per
    axis, Y and X always among them."""

    data: Any
    axes: str
    name: str = "the stack"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def stack_axes(self) -> list[int]:
        """The T and Z axes of size > 1."""
        return [a for a, letter in enumerate(self.axes) if letter in STACK_AXES and self.shape[a] > 1]

    @property
    def squeezed_shape(self) -> tuple[int, ...]:
        return tuple(n for a, n in enumerate(self.shape) if n > 1 or self.axes[a] in "YX")

    def along(self, axis: str | int | None = None, channel: int | None = None) -> StackView:
        """The stacks to propagate: along ``axis`` ("t", "z" or a data axis number; None: the only
        stack axis, else T), one per index of the other stack axis; ``channel``: the channel
        to use (needed when there are channels other than 1 or 3)."""
        stacks = self.stack_axes
        if len(stacks) > 2:
            raise ValueError(f"{self.name} has axes {self.axes} {self.shape}: more than two stack axes")
        if axis is None:
            along = stacks[0] if len(stacks) == 1 else self.axes.index("T") if stacks else self.axes.index(
                next(a for a in self.axes if a in STACK_AXES))
        else:
            along = self._axis(axis)
        fixed = {a: 0 for a, n in enumerate(self.shape) if n == 1 and a != along and self.axes[a] not in "YXC"}
        others = [a for a in stacks if a != along]
        fixed.update(self._channel(channel))
        return StackView(self, along, others[0] if others else None, tuple(sorted(fixed.items())))

    def _axis(self, axis: str | int) -> int:
        text = str(axis).strip()
        if text.lstrip("-").isdigit():
            along = int(text)
            if not 0 <= along < len(self.axes) or self.axes[along] not in STACK_AXES:
                stack = [a for a, letter in enumerate(self.axes) if letter in STACK_AXES]
                raise ValueError(f"axis {axis} of {self.name} ({self.axes}, shape {self.shape}) is not a stack "
                                 f"axis: choose one of {stack} or a letter (t, z)")
            return along
        letter = text.upper()
        if letter not in STACK_AXES or letter not in self.axes:
            raise ValueError(f"{self.name} has axes {self.axes} (shape {self.shape}), no {text!r} axis to propagate "
                             "along: choose t or z among its axes (name the axes with --axes when the file does not)")
        return self.axes.index(letter)

    def _channel(self, channel: int | None) -> dict[int, int]:
        if "C" not in self.axes:
            if channel not in (None, 0):
                raise ValueError(f"{self.name} has no channel axis ({self.axes}): leave the channel out")
            return {}
        c = self.axes.index("C")
        n = self.shape[c]
        if channel is not None:
            if not 0 <= channel < n:
                raise ValueError(f"channel {channel} is outside the {n} channels of {self.name}: choose 0..{n - 1}")
            return {c: int(channel)}
        if n == 1:
            return {c: 0}
        if n == 3 or (n == 4 and c == len(self.axes) - 1):
            return {}  # colour
        raise ValueError(f"{self.name} has {n} channels (axes {self.axes}): choose the one to propagate on "
                         f"(--channel 0..{n - 1}); 3 channels are used as colour")


def _name_axes(shape: tuple[int, ...], found: str, given: str | None, name: str) -> str:
    """One letter of AXES per axis: ``given``, else the file's (S -> C; unknown stack axes become
    T, then Z)."""
    if given is not None:
        axes = given.upper()
        if len(axes) != len(shape) or set(axes) - set(AXES) or len(set(axes)) != len(axes) or not {"Y", "X"} <= set(axes):
            raise ValueError(f"axes {given!r} do not fit {name} (shape {shape}): give one letter of {AXES} per axis, "
                             "each once, with Y and X, e.g. TZYX")
        return axes
    raw = found.upper() if len(found) == len(shape) and "Y" in found.upper() and "X" in found.upper() else _guess_axes(shape)
    letters = ["C" if a == "S" else a if a in AXES else "?" for a in raw]
    letters = [a if letters.count(a) == 1 else "?" for a in letters]
    free = [a for a in STACK_AXES if a not in letters]
    for i, a in enumerate(letters):
        if a == "?":
            if not free:
                raise ValueError(f"{name} has axes {found or raw} {shape}: more than two stack axes; name them with "
                                 f"--axes (letters of {AXES}) or save a (T, Z, Y, X) stack")
            letters[i] = free.pop(0)
    return "".join(letters)


class MappedPerRead:
    """An N-D array stored contiguously in a file (an uncompressed TIFF series), read by index:
    each read maps the file, copies the indexed values and unmaps it again, so the pages read do
    not stay resident in the process (a long stack read frame by frame with a lasting memory map
    grows the resident set by every frame touched: 4 GB for 2,000 frames of 1024x1024 uint16)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: Any) -> None:
        self.path, self.offset, self.shape, self.dtype = path, int(offset), tuple(shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        with open(self.path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            whole = np.ndarray(self.shape, self.dtype, buffer=mapped, offset=self.offset)
            values = np.array(whole[index])
            del whole  # no view may outlive the map: it is closed (unmapped) on leaving the block
        return values

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[...]
        return values if dtype is None else values.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def tiff_array(path: Path) -> tuple[Any, str]:
    """A TIFF's first series as an N-D array-like and its axes: read through a memory map per read
    (:class:`MappedPerRead`) when its data are contiguous and uncompressed, else a zarr view that
    decodes one page (plane) at a time."""
    try:
        tif = tifffile.TiffFile(path)
    except tifffile.TiffFileError as err:
        raise ValueError(f"{path.name} is not a readable TIFF file ({err})") from err
    try:
        if not tif.series:
            raise ValueError(f"{path.name} holds no image data")
        _check_tiff_complete(tif, path)  # never fewer frames than the file was written with
        series = tif.series[0]
    except (ValueError, tifffile.TiffFileError) as err:
        tif.close()
        if isinstance(err, tifffile.TiffFileError):
            raise ValueError(f"{path.name} is not a readable TIFF file ({err})") from err
        raise
    shape, axes = tuple(series.shape), series.axes
    if series.dataoffset is not None and series.dtype.itemsize > 0:
        tif.close()
        return MappedPerRead(path, series.dataoffset, shape, np.dtype(tif.byteorder + series.dtype.char)), axes
    import zarr

    return zarr.open(series.aszarr(), mode="r"), axes  # keeps the file open while the stack is used


def open_hyperstack(path: PathLike, axes: str | None = None) -> Hyperstack:
    """A TIFF (OME, ImageJ hyperstack, plain), a zarr array or OME-Zarr group, a folder of frames or
    an image -> :class:`Hyperstack`, read lazily. ``axes`` names the axes when the file does not
    (or names them wrongly), e.g. "ZTYX"."""
    p = _existing(path)
    fmt = format_of(p)
    if fmt is not None and fmt.open_axes is not None:  # a format that names axes (TIFF, zarr)
        data, found = fmt.load("open_axes")(p)  # type: ignore[misc]
    else:
        data = open_image_stack(p)
        found = "TYXC" if data.ndim == 4 else "TYX"
    shape = tuple(int(n) for n in data.shape)
    if len(shape) < 2:
        raise ValueError(f"{p.name} has shape {shape}: not an image")
    named = _name_axes(shape, found, axes, p.name)
    if not any(a in STACK_AXES for a in named):  # one image: a stack of one frame
        data, named = np.asarray(data)[np.newaxis], "T" + named
    return Hyperstack(data, named, p.name)
