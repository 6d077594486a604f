"""The file formats: one entry per format, the one place that knows suffixes and what each format can do.

Every reader and writer asks this registry instead of testing suffixes itself:
:func:`~rgmp_model.io.stack_io.open_image_stack`, :func:`~rgmp_model.io.stack_io.read_image`,
:func:`~rgmp_model.io.label_io.open_label_stack`, :func:`~rgmp_model.io.label_io.read_label_image`,
:class:`~rgmp_model.io.label_io.LabelStackWriter`, :func:`~rgmp_model.io.hyperstack.open_hyperstack`,
:mod:`~rgmp_model.io.keyframes`, :mod:`~rgmp_model.io.outputs`, ``rgmp evaluate`` and the napari
reader and writer (whose ``napari.yaml`` patterns a test checks against this table).

A format's readers and writers are callables, or ``"module:name"`` references that are imported
on first use (the reading modules consult this table, so it cannot import them). Adding a format
is one :class:`FileFormat` (in :data:`BUILTIN_FORMATS`, or at run time with :func:`register_format`)::

    register_format(FileFormat(
        name="npy", suffixes=(".npy",), description="NumPy array",
        open_stack=lambda p: np.load(p, mmap_mode="r"), open_label_stack=lambda p: np.load(p, mmap_mode="r"),
        create_store=NpyStore, holds_labels=True,
    ))
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

__all__ = [
    "BUILTIN_FORMATS", "DEFAULT_OUTPUT_FORMAT", "FRAME_FOLDER_OUTPUT", "FileFormat", "file_formats", "format_named",
    "format_of", "format_of_name", "frame_suffixes", "register_format", "registered", "suffix_list",
    "unregister_format",
]

Ref = Union[Callable[..., Any], str, None]
"""A callable, or ``"module:name"`` imported on first use."""


@dataclass(frozen=True)
class FileFormat:
    """One file format and what the readers and writers do with it.

    ``suffixes``: lower-case, with the dot, the first one the format's usual one. ``folder``: the
    format is a folder (a zarr store), found by ``probe(path) -> bool`` (a folder with metadata) or by
    its suffix. ``frame_file``: one file can be a frame of a folder of frames (DAVIS JPEGImages).
    ``holds_labels``: stores label ids losslessly (offered as a label file: napari's reader, the
    Open labels dialog). Readers (path -> array): ``read_frame`` one image (H, W[, C]),
    ``read_label_frame`` one label image (H, W), ``open_stack`` a lazy (T, H, W[, C]) stack and
    ``open_label_stack`` (T, H, W) labels (None: one frame, T = 1), ``open_axes`` the N-D data
    and its axis letters ("" when the file names none) for stacks with time and z. Writers:
    ``create_store(path, shape, dtype, axes)`` a label stack store (``write(index, frame)``,
    ``close()``) written under a temporary name and renamed into place; ``write_label_frame(path,
    labels)`` one label frame of an output folder (the output of a path of no stack format).
    """

    name: str
    suffixes: tuple[str, ...]
    description: str
    folder: bool = False
    probe: Ref = None
    frame_file: bool = False
    holds_labels: bool = False
    read_frame: Ref = None
    read_label_frame: Ref = None
    open_stack: Ref = None
    open_label_stack: Ref = None
    open_axes: Ref = None
    create_store: Ref = None
    write_label_frame: Ref = None

    def __post_init__(self) -> None:
        if not self.suffixes or any(not s.startswith(".") or s != s.lower() for s in self.suffixes):
            raise ValueError(f"format {self.name!r}: suffixes must be lower-case and start with a dot, "
                             f"got {self.suffixes}")

    def load(self, role: str) -> Callable[..., Any] | None:
        """The callable for ``role`` (a field name such as "open_stack"), imported when named by a string."""
        ref = getattr(self, role)
        if isinstance(ref, str):
            module, _, name = ref.partition(":")
            return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
        return ref  # type: ignore[no-any-return]

    def matches(self, path: Path) -> bool:
        """Whether the existing ``path`` is a file (or store) of this format: by its suffix, or by
        the format's probe of its content."""
        if path.suffix.lower() in self.suffixes and (path.is_dir() if self.folder else path.is_file()):
            return True
        return self.probe is not None and bool(self.load("probe")(path))  # type: ignore[misc]


BUILTIN_FORMATS: tuple[FileFormat, ...] = (
    FileFormat(
        name="tif", suffixes=(".tif", ".tiff"), description="TIFF (plain, ImageJ or OME; one page per frame)",
        frame_file=True, holds_labels=True,
        read_frame="rgmp_model.io.stack_io:read_tiff_frame",
        read_label_frame="rgmp_model.io.label_io:read_tiff_labels",
        open_stack="rgmp_model.io.stack_io:open_tiff_stack",
        open_label_stack="rgmp_model.io.label_io:open_tiff_labels",
        open_axes="rgmp_model.io.hyperstack:tiff_array",
        create_store="rgmp_model.io.label_stores:TiffStore",
    ),
    FileFormat(
        name="zarr", suffixes=(".zarr",), description="zarr array or OME-Zarr group (a folder)",
        folder=True, holds_labels=True, probe="rgmp_model.io.zarr_stacks:has_zarr_metadata",
        open_stack="rgmp_model.io.zarr_stacks:ZarrFrames",
        open_label_stack="rgmp_model.io.label_io:open_zarr_labels",
        open_axes="rgmp_model.io.zarr_stacks:open_zarr_array",
        create_store="rgmp_model.io.label_stores:ZarrStore",
    ),
    FileFormat(
        name="png", suffixes=(".png",), description="PNG (palette PNGs for labels, as DAVIS)",
        frame_file=True, holds_labels=True,
        read_frame="rgmp_model.io.stack_io:read_pillow_image",
        read_label_frame="rgmp_model.io.label_io:read_pillow_labels",
        write_label_frame="rgmp_model.io.label_io:write_palette_png",
    ),
    FileFormat(
        name="jpeg", suffixes=(".jpg", ".jpeg"), description="JPEG (frames only: lossy, never labels)",
        frame_file=True,
        read_frame="rgmp_model.io.stack_io:read_pillow_image",
        read_label_frame="rgmp_model.io.label_io:read_pillow_labels",
    ),
    FileFormat(
        name="bmp", suffixes=(".bmp",), description="BMP",
        frame_file=True, holds_labels=True,
        read_frame="rgmp_model.io.stack_io:read_pillow_image",
        read_label_frame="rgmp_model.io.label_io:read_pillow_labels",
    ),
)

DEFAULT_OUTPUT_FORMAT = "tif"
"""The format of an output whose path is not given (``<images name>_rgmp.tif``)."""

FRAME_FOLDER_OUTPUT = "png"
"""The format of the frames of an output folder (a path of no stack format)."""

_registry: list[FileFormat] = list(BUILTIN_FORMATS)


def file_formats() -> tuple[FileFormat, ...]:
    """The registered formats, built-in ones first."""
    return tuple(_registry)


def format_named(name: str) -> FileFormat:
    """The registered format called ``name``; ValueError naming the known ones otherwise."""
    for fmt in _registry:
        if fmt.name == name:
            return fmt
    raise ValueError(f"unknown file format {name!r}: use one of {', '.join(f.name for f in _registry)}")


def format_of_name(path: str | os.PathLike[str]) -> FileFormat | None:
    """The format ``path``'s suffix names (the path need not exist: outputs), or None."""
    suffix = Path(path).suffix.lower()
    return next((f for f in _registry if suffix in f.suffixes), None)


def format_of(path: str | os.PathLike[str]) -> FileFormat | None:
    """The format of the existing ``path`` (by suffix, or a probe: a zarr folder without ``.zarr``),
    or None (a folder of frames, or a file of no registered format: Pillow reads it, or says why not)."""
    p = Path(path)
    return next((f for f in _registry if f.matches(p)), None)


def frame_suffixes() -> tuple[str, ...]:
    """The suffixes of the files a folder of frames is made of."""
    return tuple(s for f in _registry if f.frame_file for s in f.suffixes)


def suffix_list(formats: Iterable[FileFormat]) -> str:
    """``".tif or .zarr"``: the usual suffix of each format, for messages."""
    names = [f.suffixes[0] for f in formats]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def register_format(fmt: FileFormat) -> None:
    """Add ``fmt`` to the registry; ValueError when its name or one of its suffixes is taken."""
    taken = {s: f.name for f in _registry for s in f.suffixes}
    clash = [s for s in fmt.suffixes if s in taken]
    if clash or any(f.name == fmt.name for f in _registry):
        raise ValueError(f"format {fmt.name!r} clashes with a registered one (name or suffixes {clash}): "
                         "unregister that one first")
    _registry.append(fmt)


def unregister_format(name: str) -> None:
    """Remove the format called ``name`` (ValueError when there is none)."""
    _registry.remove(format_named(name))


@contextmanager
def registered(fmt: FileFormat) -> Iterator[FileFormat]:
    """``with registered(fmt):`` the format is registered inside the block only."""
    register_format(fmt)
    try:
        yield fmt
    finally:
        unregister_format(fmt.name)
