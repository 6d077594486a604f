"""Label images: reading (palette/grey/RGB PNGs, integer TIFFs) and writing (palette PNGs, TIFF stacks).

Label stacks are ``(T, H, W)`` integer array-likes read lazily like the image stacks of
:mod:`rgmp_model.io.stack_io`; :class:`LabelStackWriter` writes results frame by frame.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rgmp_model.io.label_checks import (  # noqa: F401 - re-exported: the rules that say what labels are
    LABEL_NAME_HINTS,
    MAX_COLOUR_IDS,
    _photo_refusal,
    check_label_values,
    looks_like_label_image,
)
from rgmp_model.io.formats import (
    DEFAULT_OUTPUT_FORMAT,
    FRAME_FOLDER_OUTPUT,
    file_formats,
    format_named,
    format_of,
    format_of_name,
    suffix_list,
)
from rgmp_model.io.stack_io import (
    FrameFolder,
    PathLike,
    Stack,
    _existing,
    open_tiff_stack,
    read_tiff_frame,
)
from rgmp_model.io.zarr_stacks import ZarrFrames


@lru_cache(maxsize=1)
def _palette() -> tuple[int, ...]:
    values: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        values += [r, g, b]
    return tuple(values)


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL-VOC colour map: 768 ints, ``[r0, g0, b0, r1, ...]`` (id 1 = (128,0,0))."""
    return list(_palette())


def _binary_to_01(grey: np.ndarray) -> np.ndarray:
    """Binary masks stored as 0/255 (or 0/65535 for 16-bit) -> 0/1; other grey labels unchanged."""
    values = np.unique(grey)
    for high in (255, 65535):
        if values.size and values[-1] == high and np.isin(values, (0, high)).all():
            return (grey == high).astype(grey.dtype)
    return grey


def smallest_label_dtype(max_id: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds ids 0..``max_id`` (uint8, uint16 or uint32)."""
    return np.dtype(np.uint8 if max_id <= 255 else np.uint16 if max_id <= 65535 else np.uint32)


def _rgb_to_labels(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3|4) uint8 colours -> (H,W) ids: DAVIS colours get their index, others the next free id."""
    if rgb.shape[-1] == 4:
        rgb = np.where(rgb[..., 3:] == 0, 0, rgb)
    rgb = rgb[..., :3]
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return _binary_to_01(np.ascontiguousarray(rgb[..., 0]))
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    colours, first, inverse = np.unique(packed.ravel(), return_index=True, return_inverse=True)
    pal = _palette()
    lookup = {(pal[3 * i] << 16) | (pal[3 * i + 1] << 8) | pal[3 * i + 2]: i for i in range(255, -1, -1)}
    known = [lookup.get(int(c)) for c in colours]
    ids = np.zeros(len(colours), dtype=np.int64)
    next_id = max((k for k in known if k is not None), default=0) + 1
    for j in np.argsort(first, kind="stable"):  # unknown colours numbered in raster order
        if known[j] is None:
            ids[j], next_id = next_id, next_id + 1
        else:
            ids[j] = known[j]
    return ids.astype(smallest_label_dtype(int(ids.max())))[inverse.ravel()].reshape(packed.shape)


def _check_label_dtype(dtype: np.dtype, name: str) -> None:
    if dtype.kind not in "biu":
        raise ValueError(
            f"labels must be integers, but {name} holds {dtype} values: save the labels as an integer "
            "TIFF (e.g. uint16) or a palette PNG"
        )


def _not_labels(name: str, shape: tuple[int, ...]) -> ValueError:
    return ValueError(
        f"{name} has shape {shape} ({shape[-1]} channels) that is not a palette/label image: "
        "save the labels as a palette PNG or an integer TIFF"
    )


def read_label_image(path: PathLike) -> np.ndarray:
    """One label image -> (H,W) integer ids.

    Palette PNG -> its indices (uint8). Grey PNG/BMP -> its values, binary 0/255 masks -> 0/1.
    RGB(A) -> ids by colour (grey if all channels are equal; DAVIS palette colours get their
    index, other colours the next free ids after the largest palette id found, numbered in
    raster order of first appearance; transparent = 0). TIFF -> the integers as stored.
    """
    p = _existing(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder: pass one label image, or use open_label_stack for a folder")
    fmt = format_of(p)
    reader = fmt.load("read_label_frame") if fmt is not None else None
    return (reader or read_pillow_labels)(p)


def read_tiff_labels(p: Path) -> np.ndarray:
    """One label TIFF -> (H,W) ids as stored (an RGB(A) uint8 TIFF: ids by colour)."""
    data = read_tiff_frame(p, planar_as_frames=True)
    _check_label_dtype(data.dtype, p.name)
    if data.ndim == 3:
        if data.dtype == np.uint8 and data.shape[-1] in (3, 4):
            return _rgb_to_labels(data)
        raise _not_labels(p.name, data.shape)
    return data.astype(np.uint8) if data.dtype == bool else data


def read_pillow_labels(p: Path) -> np.ndarray:
    """One label image Pillow reads (PNG, BMP; JPEG refused) -> (H,W) ids (see :func:`read_label_image`)."""
    try:
        with Image.open(p) as im:
            fmt, mode = im.format, im.mode
            if fmt == "JPEG":  # lossy: a mask saved as JPEG has artefacts all over its edges
                count = len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0))
                raise _photo_refusal(p.name, count, "JPEG is lossy, its compression artefacts would become objects")
            if mode in ("P", "PA"):
                return np.array(im.getchannel(0))
            if mode == "F":
                _check_label_dtype(np.dtype(np.float32), p.name)
            if mode in ("1", "L", "LA"):
                return _binary_to_01(np.array(im.getchannel(0)).astype(np.uint8))
            if mode.startswith("I"):
                grey = np.array(im)
                grey = grey.astype(grey.dtype.newbyteorder("="))
                return _binary_to_01(grey.astype(np.uint16) if fmt == "PNG" else grey)
            rgba = "A" in mode or "transparency" in im.info
            rgb = np.array(im.convert("RGBA" if rgba else "RGB"))
    except UnidentifiedImageError as err:
        raise ValueError(f"{p.name} is not an image file that Pillow can read") from err
    except (OSError, SyntaxError) as err:  # truncated or corrupt data (PIL raises these)
        raise ValueError(f"{p} cannot be read ({err}): the file is damaged or truncated; copy or export "
                         "it again") from err
    colours = len(np.unique(rgb.reshape(-1, rgb.shape[-1]), axis=0))
    if colours > MAX_COLOUR_IDS:
        raise _photo_refusal(p.name, colours, f"a colour label image has at most {MAX_COLOUR_IDS} colours")
    return _rgb_to_labels(rgb)


def open_label_stack(path: PathLike) -> Stack:
    """TIFF stack, zarr store, folder of label images or one label image -> (T,H,W) integer array-like.

    A TIFF opens lazily as in :func:`open_image_stack` (a 2-D TIFF gives T = 1); a folder is a
    :class:`FrameFolder` reading each file with :func:`read_label_image`.
    """
    p = _existing(path)
    fmt = format_of(p)
    if fmt is not None and fmt.open_label_stack is not None:
        return fmt.load("open_label_stack")(p)  # type: ignore[misc,no-any-return]
    if p.is_dir():
        return FrameFolder(p, reader=read_label_image)
    return read_label_image(p)[np.newaxis]


def open_zarr_labels(p: Path) -> ZarrFrames:
    """A zarr store of integer (T,H,W) labels, read lazily."""
    stack = ZarrFrames(p)
    _check_label_dtype(stack.dtype, p.name)
    if stack.ndim != 3:
        raise _not_labels(p.name, stack.shape)
    return stack


def open_tiff_labels(p: Path) -> Stack:
    """A TIFF of integer labels -> (T,H,W), read lazily (a planar 3- or 4-frame stack as frames)."""
    stack = open_tiff_stack(p, planar_as_frames=True)
    if stack.ndim == 4:
        if len(stack) == 1:
            return read_label_image(p)[np.newaxis]
        raise _not_labels(p.name, stack.shape)
    _check_label_dtype(stack.dtype, p.name)
    return stack


def write_palette_png(path: PathLike, labels: np.ndarray) -> None:
    """Write (H,W) ids 0..255 as a mode "P" PNG with the DAVIS palette."""
    data = np.asarray(labels)
    if data.ndim != 2:
        raise ValueError(f"labels for {Path(path).name} have shape {data.shape}: expected one (H,W) frame")
    _check_label_dtype(data.dtype, Path(path).name)
    if data.size and (int(data.min()) < 0 or int(data.max()) > 255):
        raise ValueError(
            f"labels for {Path(path).name} have ids {int(data.min())}..{int(data.max())}, but a palette PNG "
            "holds ids 0..255 only: write the labels as a TIFF instead (e.g. LabelStackWriter('labels.tif', ...))"
        )
    image = Image.fromarray(np.ascontiguousarray(data, dtype=np.uint8))
    image.putpalette(davis_palette())
    image.save(path, format="PNG")


def frame_names(source: object, count: int) -> list[str]:
    """Output file stems: the files' stems of a :class:`FrameFolder`, else ``00000``, ``00001``, ..."""
    if count < 0:
        raise ValueError(f"frame count must be >= 0, got {count}")
    if isinstance(source, FrameFolder):
        if count != len(source.files):
            raise ValueError(f"{count} output frames requested but {source.folder} has {len(source.files)} frames")
        stems = [f.stem for f in source.files]
        return stems if len(set(stems)) == len(stems) else [f.name.replace(".", "_") for f in source.files]
    return [f"{i:05d}" for i in range(count)]


class LabelStackWriter:
    """Preallocated (T,H,W) label output, written frame by frame in any order: ``writer[t] = labels``.

    The path's format (:mod:`rgmp_model.io.formats`) decides the output. A stack format (one with a
    ``create_store``: ``*.tif``/``*.tiff``, an uncompressed TIFF, its space reserved at once
    (:mod:`rgmp_model.io.label_stores`); ``*.zarr``, one chunk per frame, so stacks larger than memory
    stream to disk) is written under a temporary name in the same folder and renamed into place by
    :meth:`close`; it may have more leading axes, e.g. (T,Z,H,W) with ``axes="TZYX"`` (stored in the
    TIFF's metadata): then ``writer[t, z] = labels``. Any other path is a folder that gets
    ``<frame_names[t]>.png`` palette PNGs (default ``00000.png`` ...) as soon as each frame is set.
    Use as a context manager; on an exception the temporary TIFF is removed (:meth:`abort`); a caller
    that wants the frames done after a failure calls :meth:`close` (``rgmp propagate`` does).
    """

    def __init__(
        self,
        path: PathLike,
        shape: Sequence[int],
        dtype: Any = np.uint8,
        frame_names: Sequence[str] | None = None,
        axes: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.shape = tuple(int(s) for s in shape)
        fmt = format_of_name(self.path)
        self.format = fmt if fmt is not None and fmt.create_store is not None else None
        if len(self.shape) < 3 or min(self.shape) <= 0 or (len(self.shape) > 3 and self.format is None):
            raise ValueError(f"shape must be (T,H,W) with positive sizes (or (A,B,...,H,W) for a {_store_suffixes()} "
                             f"output), got {tuple(shape)}")
        self.axes = axes if axes is not None else "TYX" if len(self.shape) == 3 else "Q" * (len(self.shape) - 2) + "YX"
        if len(self.axes) != len(self.shape):
            raise ValueError(f"axes {self.axes!r} do not name the {len(self.shape)} axes of shape {self.shape}")
        self.dtype = np.dtype(np.uint8) if np.dtype(dtype) == bool else np.dtype(dtype)
        _check_label_dtype(self.dtype, "the output")
        self._written: set[Any] = set()
        self._closed = False
        self._data: Any = None
        names = list(frame_names) if frame_names is not None else [f"{i:05d}" for i in range(self.shape[0])]
        if len(names) != self.shape[0] or len(set(names)) != len(names):
            raise ValueError(f"frame_names must be {self.shape[0]} distinct names, got {len(names)}")
        self.frame_names = names
        if self.format is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.partial{self.format.suffixes[0]}")
            try:
                self._data = self.format.load("create_store")(self._tmp, self.shape, self.dtype, self.axes)
            except BaseException:
                self._remove_tmp()
                raise
        else:
            frames = format_named(FRAME_FOLDER_OUTPUT)
            self._frame_suffix, self._write_frame = frames.suffixes[0], frames.load("write_label_frame")
            if self.path.is_file():
                raise ValueError(f"{self.path} is a file: give a folder for {frames.name.upper()} output or a "
                                 f"{format_named(DEFAULT_OUTPUT_FORMAT).suffixes[0]} path")
            self.path.mkdir(parents=True, exist_ok=True)

    def _remove_tmp(self) -> None:
        if self._tmp.is_dir():
            shutil.rmtree(self._tmp, ignore_errors=True)
        else:
            self._tmp.unlink(missing_ok=True)

    @property
    def written(self) -> list[Any]:
        """Sorted indices of the frames written so far (tuples when there are several leading axes)."""
        return sorted(self._written)

    def _frame_index(self, key: Any) -> tuple[int, ...]:
        """``t`` or ``(t, z, ...)`` -> one index per leading axis, negative ones counted from the end."""
        keys = tuple(key) if isinstance(key, tuple) else (key,)
        leading = self.shape[:-2]
        if len(keys) != len(leading):
            raise IndexError(f"frame index {key} needs {len(leading)} integer(s) for an output of shape {self.shape}")
        index = tuple(int(k) + n if int(k) < 0 else int(k) for k, n in zip(keys, leading))
        if any(not 0 <= k < n for k, n in zip(index, leading)):
            raise IndexError(f"frame index {key} is out of range for {leading[0] if len(leading) == 1 else leading} frames")
        return index

    def __setitem__(self, t: Any, labels: np.ndarray) -> None:
        if self._closed:
            raise ValueError(f"the writer for {self.path} is closed")
        frame = self._frame_index(t)
        index = frame[0] if len(frame) == 1 else frame
        data = np.asarray(labels)
        if data.shape != self.shape[-2:]:
            raise ValueError(f"frame {t} has shape {data.shape}, expected {self.shape[-2:]}")
        _check_label_dtype(data.dtype, f"frame {t}")
        if data.size and not np.can_cast(data.dtype, self.dtype):
            info = np.iinfo(self.dtype)
            lo, hi = int(data.min()), int(data.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"frame {t} has ids {lo}..{hi} that do not fit {self.dtype}: use a wider dtype")
        if self._data is not None:
            try:
                self._data.write(frame, data)
            except OSError as error:  # named after the output, not its temporary file
                raise OSError(error.errno, error.strerror or str(error), str(self.path)) from error
        else:
            target = self.path / f"{self.frame_names[index]}{self._frame_suffix}"
            try:
                self._write_frame(target, data)
            except (OSError, KeyboardInterrupt):
                target.unlink(missing_ok=True)  # never leave a half-written frame (a full disk)
                raise
        self._written.add(index)

    def close(self) -> None:
        """Move the TIFF or zarr store into place (folder output needs nothing); idempotent. After
        a failure this keeps the frames written so far (``written``): the others read as 0."""
        if self._closed:
            return
        self._closed = True
        if self._data is not None:
            self._data.close()
            self._data = None
            if self._tmp.is_dir() and self.path.exists():
                shutil.rmtree(self.path)  # a store that is a folder (zarr): os.replace cannot replace it
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Stop without producing the TIFF or zarr store: the temporary one is removed (PNGs
        written stay). To keep the frames done after a failure, call :meth:`close` instead."""
        self._closed = True
        if self._data is not None:
            self._data.close()
            self._data = None
            self._remove_tmp()

    def __enter__(self) -> LabelStackWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _store_suffixes() -> str:
    """".tif or .zarr": the outputs that hold any number of leading axes."""
    return suffix_list(f for f in file_formats() if f.create_store is not None)
