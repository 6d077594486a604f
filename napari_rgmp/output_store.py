"""Where the Propagate widget's output labels live: in memory, or, for an output above a memory
budget (default 2 GiB), a zarr store on disk that the Labels layer reads and writes lazily.

The stores go to ``outputs/`` beside the user model folder (``~/.cache/napari-rgmp/outputs`` on
Linux, see :func:`rgmp_model.nn.models.user_models_dir`) and are deleted when their layer is
removed from the viewer. Everything here runs on the GUI thread.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUTPUT_BUDGET = 2 * 1024**3  # bytes of output labels held in memory before they go to disk
STORE_KEY = "rgmp_output_store"  # layer.metadata entry naming the layer's on-disk store
PROPAGATED_KEY = "rgmp_propagated"  # layer.metadata entry: the layer holds this plugin's output
PROPAGATED_SUFFIX = " propagated"  # the name of a new output layer: "<labels> propagated"


@dataclass(frozen=True)
class OutputPolicy:
    """``budget``: largest output (bytes) kept in memory; ``folder``: where larger outputs are
    stored (None: :func:`output_cache_dir`)."""

    budget: int = DEFAULT_OUTPUT_BUDGET
    folder: Path | None = None


def output_cache_dir() -> Path:
    """``outputs/`` beside the user model folder (``~/.cache/napari-rgmp/outputs`` on Linux)."""
    from rgmp_model.nn.models import user_models_dir

    return user_models_dir().parent / "outputs"


def new_output_data(shape: tuple[int, ...], dtype: Any, policy: OutputPolicy) -> tuple[Any, Path | None]:
    """Zeros of ``shape``: a numpy array within the budget, else a zarr array on disk with one chunk
    per 2-D frame. Returns (data, store path or None)."""
    dtype = np.dtype(dtype)
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize <= policy.budget:
        return np.zeros(shape, dtype), None
    import zarr

    folder = policy.folder if policy.folder is not None else output_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"labels-{uuid.uuid4().hex[:12]}.zarr"
    chunks = (1,) * (len(shape) - 2) + tuple(shape[-2:])
    return zarr.create_array(str(path), shape=shape, chunks=chunks, dtype=dtype, fill_value=0), path


def is_propagated(layer: Any) -> bool:
    """Whether ``layer`` holds the Propagate dock's output: marked in its metadata when the dock
    wrote it, or named "<labels> propagated" (e.g. saved and opened again)."""
    metadata = getattr(layer, "metadata", None) or {}
    return bool(metadata.get(PROPAGATED_KEY)) or str(getattr(layer, "name", "")).endswith(PROPAGATED_SUFFIX)


def discard_store(event: Any) -> None:
    """``viewer.layers.events.removed`` handler: delete the on-disk store of a removed output layer."""
    layer = getattr(event, "value", None)
    path = getattr(layer, "metadata", {}).get(STORE_KEY)
    if path:
        shutil.rmtree(path, ignore_errors=True)


def prepare_output_layer(viewer: Any, source: Any, chosen: Any, frames: Any, policy: OutputPolicy,
                         new_layer_text: str, image: Any = None) -> Any:
    """The chosen output layer, or a "<labels> propagated" one (reused when it fits, else new, on
    disk above the budget), with the frames of the stack about to be propagated cleared; the layer
    is marked as propagated output (:func:`is_propagated`). The output has the image's shape
    without colour channels (``frames``' layer); a 2-D ``source`` (one frame's labels) takes the
    ``image`` layer's scale and translation."""
    shape = tuple(int(n) for n in frames.data.shape[: frames.selection.ndim])
    if chosen is not None:
        if tuple(chosen.data.shape) != shape:
            raise ValueError(f"output layer '{chosen.name}' has shape {chosen.data.shape}, "
                             f"not {shape}: choose {new_layer_text}")
        layer = chosen
    else:
        name = f"{source.name}{PROPAGATED_SUFFIX}"
        layer = viewer.layers[name] if name in viewer.layers else None
        if layer is None or tuple(layer.data.shape) != shape:
            data, store = new_output_data(shape, np.result_type(source.data.dtype, np.uint16), policy)
            placed = source if source.ndim == len(shape) or image is None else image
            layer = viewer.add_labels(data, name=name, scale=placed.scale, translate=placed.translate,
                                      metadata={STORE_KEY: str(store)} if store else {})
            viewer.layers.events.removed.connect(discard_store)
    layer.metadata = {**layer.metadata, PROPAGATED_KEY: True}
    for t in range(len(frames)):
        layer.data[frames.selection.index(t)] = 0
    layer.refresh()
    return layer
