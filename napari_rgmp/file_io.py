"""napari reader and writer contributions, and opening label files as Labels layers on request.

napari asks a reader only for the file names its manifest patterns match (npe2 matches the name
alone, never the content), and offers a choice (File > Open's reader dialog) whenever two readers
match a path. So the reader claims only names that say "labels" (:func:`label_file_patterns`,
also in ``napari.yaml``): an ordinary photo, TIFF stack or folder of frames reaches napari's own
reader alone, exactly as without this plugin.

Reader (File > Open, drag and drop) for those names: a label image (an integer TIFF, see
:func:`rgmp_model.io.label_io.looks_like_label_image`, or a palette PNG) -> a Labels layer with its
ids; anything else -> napari's own reader, so choosing napari-rgmp never fails.
Any other label file or folder (a DAVIS annotation ``00000.png``, ``Annotations/480p/<seq>``):
:func:`read_labels` (File > IO Utilities > Open labels..., or the Propagate dock's "open..."
button, see :mod:`napari_rgmp.open_labels`).
Writer (File > Save Selected Layers): a Labels layer to a label TIFF stack (``.tif``), or to DAVIS
palette PNGs (``.png``: one file for a 2-D layer, a folder named like the file, with
``00000.png``..., for a stack).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]

LABEL_NAME_STEMS = ("*label*", "*mask*", "*annotation*", "*truth*", "man_seg*", "man_track*", "*_rgmp")
"""Names that say labels (label, mask: Cell Tracking Challenge results and cellpose's *_masks,
annotation, truth, man_seg / man_track: CTC ground truth) and ``rgmp propagate``'s default output."""


def label_file_formats() -> tuple[Any, ...]:
    """The formats of :mod:`rgmp_model.io.formats` whose files the reader may open as labels: files
    (not folders) that hold label ids losslessly (TIFF, PNG, BMP; never JPEG)."""
    from rgmp_model.io.formats import file_formats

    return tuple(f for f in file_formats() if f.holds_labels and not f.folder)


def label_file_patterns() -> tuple[str, ...]:
    """The reader's filename_patterns in napari.yaml (a test keeps both equal): each name of
    :data:`LABEL_NAME_STEMS` with each suffix of :func:`label_file_formats`."""
    return tuple(f"{stem}{suffix}" for stem in LABEL_NAME_STEMS for f in label_file_formats() for suffix in f.suffixes)


def _is_palette_image(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return image.mode in ("P", "PA")


def _is_label_file(path: Path) -> bool:
    """A palette image (PNG, BMP), or an integer grey image that looks like labels (see
    looks_like_label_image): the first frame of a stack format (TIFF), or a frame format's image."""
    from rgmp_model.io.formats import format_of
    from rgmp_model.io.label_io import looks_like_label_image, open_label_stack
    from rgmp_model.io.stack_io import read_image

    fmt = format_of(path)
    if fmt is None or fmt not in label_file_formats():
        return False
    try:
        if fmt.open_label_stack is not None:
            first = np.asarray(open_label_stack(path)[0])  # integer stacks only (else ValueError)
        elif _is_palette_image(path):
            return True
        else:
            first = read_image(path)
        return looks_like_label_image(first, path.name)
    except (ValueError, OSError):
        return False


def _napari_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari's own reader for ``path``: what napari does without this plugin."""
    from napari_builtins.io import napari_get_reader

    return napari_get_reader(path)


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader (called for the names of :func:`label_file_patterns`): a label file -> a Labels
    layer; anything else -> napari's own reader (never refused: choosing this reader in napari's
    dialog, or remembering that choice, always opens the file)."""
    if isinstance(path, (str, Path)) and Path(path).is_file() and _is_label_file(Path(path)):
        return _read_label_file
    return _napari_reader([str(p) for p in path] if not isinstance(path, (str, Path)) else str(path))


def read_labels(path: str | Path) -> LayerData:
    """A label image, label stack (TIFF, zarr) or folder of label images (DAVIS palette PNGs) ->
    Labels layer data ``(ids, {"name": ...}, "labels")``, ids (H, W) for one image, else (T, H, W).
    ValueError / FileNotFoundError saying what the file holds instead."""
    from rgmp_model.io.label_io import open_label_stack

    p = Path(path)
    data = np.asarray(open_label_stack(p))
    name = f"{p.name} labels" if p.is_dir() else p.stem
    return (data[0] if len(data) == 1 and not p.is_dir() else data), {"name": name}, "labels"


def _read_label_file(path: Any) -> list[LayerData]:
    return [read_labels(path)]


def write_labels_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a Labels layer -> one label TIFF ((T,) H, W), the smallest unsigned dtype
    holding its ids."""
    import tifffile

    from rgmp_model.io.label_io import smallest_label_dtype

    array = np.asarray(data)
    if array.dtype.kind not in "iub" or (array.size and array.min() < 0):
        raise ValueError(f"cannot write {path}: labels must be non-negative integers")
    dtype = smallest_label_dtype(int(array.max()) if array.size else 0)
    axes = "TYX" if array.ndim == 3 else "YX" if array.ndim == 2 else None
    tifffile.imwrite(path, array.astype(dtype), photometric="minisblack", metadata={"axes": axes} if axes else {})
    return [path]


def write_labels_png(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer: a 2-D Labels layer -> one DAVIS palette PNG; a (T, H, W) layer -> a folder
    named like ``path`` without ``.png`` holding ``00000.png``, ``00001.png``, ... (ids 0..255)."""
    from rgmp_model.io.label_io import LabelStackWriter, write_palette_png

    array = np.asarray(data)
    if array.ndim == 2:
        write_palette_png(path, array)
        return [path]
    if array.ndim != 3:
        raise ValueError(f"cannot write {path}: DAVIS PNGs hold 2-D frames or a (T, H, W) stack, got {array.shape}")
    folder = Path(path).with_suffix("")
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: choose another name, so that no file is overwritten")
    with LabelStackWriter(folder, array.shape, np.uint8) as writer:
        for t, frame in enumerate(array):
            writer[t] = frame
    return [str(folder)]


WRITERS: dict[str, Callable[[str, Any, dict[str, Any]], list[str]]] = {
    "tif": write_labels_tiff, "png": write_labels_png}
"""The npe2 writer of each format of :mod:`rgmp_model.io.formats` napari saves Labels layers to (a
test checks napari.yaml's writers' filename_extensions against the formats' suffixes)."""
