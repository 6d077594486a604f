"""napari reader and writer contributions for the files this plugin reads and writes.

Reader (File > Open, drag and drop):
- a folder of DAVIS palette PNGs (``Annotations/480p/<seq>``) or of other label images -> one
  Labels layer (T, H, W) with the ids of the files; a folder of frames (``JPEGImages/480p/<seq>``,
  PNG or TIFF frames) -> one image stack;
- a label TIFF (integer ids; see :func:`rgmp_model.io.label_io.looks_like_label_image`) or a palette
  PNG -> a Labels layer. Other TIFFs and PNGs are left to napari's own reader (None is returned).
Writer (File > Save Selected Layers): a Labels layer to a label TIFF stack (``.tif``), or to DAVIS
palette PNGs (``.png``: one file for a 2-D layer, a folder named like the file, with
``00000.png``..., for a stack).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _is_palette_png(path: Path) -> bool:
    from PIL import Image

    if path.suffix.lower() != ".png":
        return False
    with Image.open(path) as image:
        return image.mode in ("P", "PA")


def _is_label_file(path: Path) -> bool:
    """Palette PNG, or an integer grey image that looks like labels (see looks_like_label_image)."""
    from rgmp_model.io.label_io import looks_like_label_image, open_label_stack
    from rgmp_model.io.stack_io import read_image

    if _is_palette_png(path):
        return True
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            first = np.asarray(open_label_stack(path)[0])  # integer stacks only (else ValueError)
        elif path.suffix.lower() == ".png":
            first = read_image(path)
        else:
            return False
        return looks_like_label_image(first, path.name)
    except (ValueError, OSError):
        return False


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader: a callable for the paths this plugin understands, None for the others."""
    if not isinstance(path, (str, Path)):
        return None  # several paths at once: left to napari
    p = Path(path)
    if p.is_dir():
        files = _frame_files(p)
        if not files or len({f.suffix.lower() for f in files}) > 1:
            return None
        return _read_label_folder if _is_label_file(files[0]) else _read_frame_folder
    if p.is_file() and _is_label_file(p):
        return _read_label_file
    return None


def _name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def _read_label_folder(path: Any) -> list[LayerData]:
    from rgmp_model.io.label_io import open_label_stack

    p = Path(path)
    return [(np.asarray(open_label_stack(p)), {"name": f"{_name(p)} labels"}, "labels")]


def _read_label_file(path: Any) -> list[LayerData]:
    from rgmp_model.io.label_io import open_label_stack

    p = Path(path)
    data = np.asarray(open_label_stack(p))
    return [(data[0] if len(data) == 1 else data, {"name": _name(p)}, "labels")]


def _read_frame_folder(path: Any) -> list[LayerData]:
    from rgmp_model.io.stack_io import open_image_stack

    p = Path(path)
    data = np.asarray(open_image_stack(p))
    return [(data, {"name": _name(p), "rgb": data.ndim == 4 and data.shape[-1] in (3, 4)}, "image")]


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
