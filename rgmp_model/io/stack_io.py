"""Lazy reading of image stacks: folders of frames, TIFF stacks (memory-mapped or page by page).

Stacks are ``(T, H, W)`` or ``(T, H, W, C)`` array-likes whose frames are read one at a time:
a folder of single-frame images (DAVIS ``JPEGImages/480p/<seq>``) becomes a :class:`FrameFolder`,
an uncompressed TIFF a ``numpy.memmap`` and a compressed TIFF a :class:`TiffFrames`.
Label images and label outputs live in :mod:`rgmp_model.io.label_io`.
"""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from rgmp_model.io.formats import format_of, frame_suffixes
from rgmp_model.io.lazy_frames import LazyFrames, PathLike  # noqa: F401 - importable from here too
from rgmp_model.io.lazy_frames import apply_layout as _apply_layout
from rgmp_model.io.lazy_frames import existing_path as _existing
from rgmp_model.io.lazy_frames import frames_layout as _frames_layout
from rgmp_model.io.lazy_frames import guess_axes as _guess_axes  # noqa: F401 - hyperstack imports it from here

if TYPE_CHECKING:
    from rgmp_model.io.zarr_stacks import ZarrFrames

__all__ = [
    "FrameFolder", "TiffFrames", "natural_sort_key", "open_image_stack", "open_tiff_stack", "read_image",
    "read_pillow_image", "read_tiff_frame",
]

Stack = Union["FrameFolder", "TiffFrames", "ZarrFrames", np.ndarray]


def natural_sort_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders digit runs by value: ``frame2`` before ``frame10``."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


class FrameFolder(LazyFrames):
    """Lazy (T,H,W) or (T,H,W,C) stack over a folder of single-frame image files.

    Files with a suffix in ``suffixes`` (default: the frame formats' of :mod:`rgmp_model.io.formats`;
    hidden files skipped) are sorted in natural order;
    shape and dtype come from the first file, and indexing reads only the files it needs.
    ``reader(path) -> (H,W) or (H,W,C) array`` defaults to :func:`read_image`
    (pass :func:`read_label_image` for label files).
    """

    def __init__(
        self,
        folder: PathLike,
        reader: Callable[[Path], np.ndarray] | None = None,
        suffixes: Sequence[str] | None = None,
    ) -> None:
        self.folder = _existing(folder)
        if not self.folder.is_dir():
            raise ValueError(f"{self.folder} is a file, not a folder of frames")
        wanted = tuple(s.lower() for s in (frame_suffixes() if suffixes is None else suffixes))
        files = [
            p for p in self.folder.iterdir()
            if p.suffix.lower() in wanted and not p.name.startswith(".") and p.is_file()
        ]
        if not files:
            raise ValueError(_no_frames_message(self.folder, wanted))
        self.files: tuple[Path, ...] = tuple(sorted(files, key=lambda p: natural_sort_key(p.name)))
        self.reader = reader if reader is not None else read_image
        first = np.asarray(self.reader(self.files[0]))
        if first.ndim not in (2, 3):
            raise ValueError(
                f"{self.files[0].name} has shape {first.shape}: frames must be 2-D images (H,W) or (H,W,C)"
            )
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype

    def _read_frame(self, t: int) -> np.ndarray:
        frame = np.asarray(self.reader(self.files[t]))
        if frame.shape != self.shape[1:] or frame.dtype != self.dtype:
            raise ValueError(
                f"{self.files[t].name} is {frame.shape} {frame.dtype} but the first frame "
                f"{self.files[0].name} is {self.shape[1:]} {self.dtype}: all frames in {self.folder} "
                "must have the same size, channels and type; re-export or remove the odd file"
            )
        return frame


def _no_frames_message(folder: Path, suffixes: Sequence[str]) -> str:
    msg = f"{folder} contains no image files ({', '.join(suffixes)})"
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if "JPEGImages" in subdirs or "Annotations" in subdirs:
        return msg + ": for a DAVIS dataset pass the sequence folder, e.g. JPEGImages/480p/<sequence>"
    if subdirs:
        return msg + f": pass one of its sub-folders ({', '.join(subdirs[:5])}) or a folder of frames"
    return msg + ": pass a folder of single-frame images, a TIFF stack or an image file"


class TiffFrames(LazyFrames):
    """Lazy (T,H,W) or (T,H,W,C) view of a TIFF series with one page per frame.

    ``stack[t]`` decodes only page ``t`` (compressed stacks that cannot be memory-mapped).
    The file stays open until :meth:`close`; reading is thread-safe.
    """

    def __init__(self, path: PathLike, series: int = 0) -> None:
        self.path = _existing(path)
        self.series = series
        self._lock = threading.Lock()
        self._tif: tifffile.TiffFile | None = None
        tif = self._open()
        s = tif.series[series]
        self.shape = _frames_layout(s.shape, s.axes, self.path.name)[2]
        key = s.keyframe
        self._page_layout = _frames_layout(key.shape, key.axes, self.path.name)
        if len(s.pages) != self.shape[0] or self._page_layout[2][1:] != self.shape[1:]:
            self.close()
            raise ValueError(f"{self.path.name}: the pages of its first series are not one frame each")
        self.dtype = np.dtype(s.dtype).newbyteorder("=")

    def _open(self) -> tifffile.TiffFile:
        if self._tif is None:
            self._tif = tifffile.TiffFile(self.path)
        return self._tif

    def _read_frame(self, t: int) -> np.ndarray:
        try:
            with self._lock:
                page = self._open().series[self.series].pages[t]
                data = page.asarray()
        except (ValueError, OSError, RuntimeError, IndexError) as error:
            raise ValueError(f"{self.path.name}: frame {t} (page {t}) cannot be read ({error}); the file may be "
                             "damaged: copy or export it again") from error
        return _apply_layout(data, self._page_layout)[0].astype(self.dtype, copy=False)

    def close(self) -> None:
        """Close the file handle (it is reopened on the next read)."""
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> TiffFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tif"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _check_tiff_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Refuse a truncated TIFF (a cut copy or download) instead of reading fewer frames: every
    page's data must lie inside the file, and a shape recorded by the writer (tifffile or
    ImageJ metadata) must match the pages found, and the last page must end the chain of pages."""
    from rgmp_model.io.tiff_checks import check_page_chain

    size = path.stat().st_size
    pages = tif.pages
    for i, page in enumerate(pages):
        ends = [o + c for o, c in zip(getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ()))]
        if ends and max(ends) > size:
            raise ValueError(f"{path.name} is truncated: page {i} needs {max(ends)} bytes but the file has {size}; "
                             "copy or export the file again")
    expected, values = None, 0  # frames and values the writer recorded
    if tif.is_shaped and tif.shaped_metadata:
        shape = tuple(tif.shaped_metadata[0].get("shape", ()))
        values = int(np.prod(shape))
        per_page = int(np.prod(pages[0].shape)) if len(pages) else 0  # a page may hold samples (planar or RGB)
        expected = values // per_page if len(shape) > 2 and per_page else None
    elif tif.is_imagej and tif.imagej_metadata:
        expected = tif.imagej_metadata.get("images")
        values = int(expected or 0) * int(np.prod(pages[0].shape))
    # one page may hold them all (tifffile's truncate=True, ImageJ files over 4 GB, samples): its series says so
    whole = len(pages) == 1 and int(np.prod(tif.series[0].shape)) >= values
    if expected and len(pages) < expected and not whole:
        raise ValueError(f"{path.name} is truncated: its metadata says {expected} frames but it holds {len(pages)}; "
                         "copy or export the file again")
    series = tif.series[0]
    if series.dataoffset is not None and series.dataoffset + series.nbytes > size:  # contiguous data, cut short
        raise ValueError(f"{path.name} is truncated: its {series.shape} {series.dtype} data need "
                         f"{series.dataoffset + series.nbytes} bytes but the file has {size}; copy or export "
                         "the file again")
    check_page_chain(tif, path)  # a break right after a complete page, where no metadata says how many


def open_tiff_stack(path: Path, planar_as_frames: bool = False) -> np.ndarray | TiffFrames:
    """TIFF series 0 -> (T,H,W[,C]) memmap, TiffFrames or in-memory array (see open_image_stack).

    ``planar_as_frames``: read a planar "RGB" image (axes SYX, which is how tifffile stores a
    3- or 4-frame stack written without ``photometric``) as frames, for label stacks.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError(f"{path.name} holds no image data")
            _check_tiff_complete(tif, path)
            s = tif.series[0]
            axes = "QYX" if planar_as_frames and s.axes == "SYX" else s.axes
            layout = _frames_layout(s.shape, axes, path.name)
            mappable = s.dataoffset is not None
            key = s.keyframe
            per_page = len(s.pages) == layout[2][0] and _frames_layout(key.shape, key.axes, path.name)[2][1:] == layout[2][1:]
    except (tifffile.TiffFileError, struct.error) as err:  # struct.error: tifffile on a page cut inside its entry
        raise ValueError(f"{path.name} is not a readable TIFF file ({err or 'a page is cut short'}); the file "
                         "may be truncated: copy or export it again") from err
    if mappable:
        try:
            return _apply_layout(tifffile.memmap(path, mode="r"), layout)
        except ValueError:
            pass
    if per_page:
        return TiffFrames(path)
    return _apply_layout(tifffile.imread(path), layout)


def read_tiff_frame(path: Path, planar_as_frames: bool = False) -> np.ndarray:
    stack = open_tiff_stack(path, planar_as_frames)
    try:
        if len(stack) != 1:
            raise ValueError(
                f"{path.name} holds {len(stack)} frames, not one: open it as a stack "
                "(open_image_stack / open_label_stack) or save one frame per file"
            )
        return np.array(stack[0])
    finally:
        if isinstance(stack, TiffFrames):
            stack.close()


def read_image(path: PathLike) -> np.ndarray:
    """One image file -> (H,W) or (H,W,C) array (palette images become RGB, 16-bit PNGs uint16)."""
    p = _existing(path)
    fmt = format_of(p)
    reader = fmt.load("read_frame") if fmt is not None else None
    return (reader or read_pillow_image)(p)


def read_pillow_image(p: Path) -> np.ndarray:
    """One image file Pillow reads -> (H,W) or (H,W,C) array (see :func:`read_image`)."""
    try:
        with Image.open(p) as im:
            fmt, mode = im.format, im.mode
            if mode in ("P", "PA"):
                im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
            elif mode == "1":
                im = im.convert("L")
            elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            data = np.array(im)
    except UnidentifiedImageError as err:
        raise ValueError(f"{p.name} is not an image file that Pillow can read") from err
    except (OSError, SyntaxError) as err:  # truncated or corrupt data (PIL raises these)
        raise ValueError(f"{p} cannot be read ({err}): the file is damaged or truncated; copy or export "
                         "it again") from err
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if fmt == "PNG" and mode == "I":
        data = data.astype(np.uint16)
    return data


def open_image_stack(path: PathLike) -> Stack:
    """Folder of frames, zarr store, TIFF or single image -> (T,H,W) or (T,H,W,C) array-like,
    read lazily.

    The path's format (:mod:`rgmp_model.io.formats`) says how. Zarr array or OME-Zarr group ->
    :class:`~rgmp_model.io.zarr_stacks.ZarrFrames`; other folder -> :class:`FrameFolder`;
    uncompressed contiguous TIFF -> read-only ``numpy.memmap``; other TIFF with one page per
    frame -> :class:`TiffFrames`; otherwise the TIFF in memory; any other image file -> array
    with T = 1.
    """
    p = _existing(path)
    fmt = format_of(p)
    if fmt is not None and fmt.open_stack is not None:
        return fmt.load("open_stack")(p)  # type: ignore[misc,no-any-return]
    if p.is_dir():
        return FrameFolder(p)
    return read_image(p)[np.newaxis]

