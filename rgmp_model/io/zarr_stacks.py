"""zarr stacks: zarr arrays and OME-Zarr groups as lazy (T,H,W[,C]) stacks (see
:func:`rgmp_model.io.stack_io.open_image_stack`), for stacks larger than memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rgmp_model.io.lazy_frames import LazyFrames, PathLike
from rgmp_model.io.lazy_frames import existing_path as _existing
from rgmp_model.io.lazy_frames import frames_layout as _frames_layout
from rgmp_model.io.lazy_frames import guess_axes as _guess_axes

__all__ = ["ZARR_MARKERS", "ZarrFrames", "has_zarr_metadata", "open_zarr_array"]


ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")


def has_zarr_metadata(path: PathLike) -> bool:
    """A folder holding zarr metadata (v2 or v3): a zarr store whatever its name (the format
    registry's probe; a ``*.zarr`` folder is one by its suffix)."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in ZARR_MARKERS)


def open_zarr_array(path: PathLike) -> tuple[Any, str]:
    """A zarr store -> (its array, or an OME-Zarr group's full-resolution array; the axes OME-Zarr
    metadata names, as capital letters, or "" when none are named)."""
    import zarr

    path = _existing(path)
    node = zarr.open(str(path), mode="r")
    axes = ""
    if hasattr(node, "array_keys"):  # a group: OME-Zarr's level "0", else its only array
        attrs = dict(node.attrs)
        scales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        keys = sorted(node.array_keys())
        if scales:
            name = scales[0]["datasets"][0]["path"]
            axes = "".join(str(a["name"] if isinstance(a, dict) else a)[0].upper() for a in scales[0].get("axes", []))
        elif len(keys) == 1:
            name = keys[0]
        else:
            raise ValueError(f"{path} is a zarr group with arrays {keys or 'none'}: give the path of one array")
        node = node[name]
    return node, axes


class ZarrFrames(LazyFrames):
    """Lazy (T,H,W) or (T,H,W,C) view of a zarr array (or the full-resolution array of an
    OME-Zarr group), one frame per read. Axes come from OME-Zarr metadata when present (else they
    are guessed as for TIFF); singleton axes are dropped; at most one stack axis."""

    def __init__(self, path: PathLike) -> None:
        self.path = _existing(path)
        node, axes = open_zarr_array(self.path)
        self.array = node
        shape = tuple(int(n) for n in node.shape)
        axes = axes.replace("Z", "Q").replace("T", "Q") if len(axes) == len(shape) else _guess_axes(shape)
        self.shape = _frames_layout(shape, axes.replace("Q", "T"), self.path.name)[2]
        stack = [i for i, (n, a) in enumerate(zip(shape, axes)) if n != 1 and a not in "YXSC"]
        self._index = [slice(None) if a in "YXSC" else 0 for a in axes]
        self._stack_axis = stack[0] if stack else None
        kept = [a for n, a in zip(shape, axes) if a in "YXSC" and (n != 1 or a in "YX")]
        self._order = [kept.index("Y"), kept.index("X"), *[i for i, a in enumerate(kept) if a in "SC"]]
        self._squeeze = tuple(i for i, (n, a) in enumerate((n, a) for n, a in zip(shape, axes) if a in "YXSC")
                              if n == 1 and a in "SC")
        self.dtype = np.dtype(node.dtype)

    def _read_frame(self, t: int) -> np.ndarray:
        index = list(self._index)
        if self._stack_axis is not None:
            index[self._stack_axis] = t
        data = np.asarray(self.array[tuple(index)])
        if self._squeeze:
            data = data.squeeze(self._squeeze)
        return data.transpose(self._order)
