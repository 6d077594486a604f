"""From napari layers to the engine's stacks, with the checks a widget runs before any work.

Everything here reads layer data lazily (one frame at a time) and never writes to a layer.
Errors are ValueErrors whose message tells the user what to do; the widgets show them as
notifications.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from rgmp_model.io.hyperstack import STACK_AXES

# The stack axes' names when the viewer has none of its own (napari names sliders "0", "-3", ...):
# the files' rule (rgmp_model.io.hyperstack): one stack axis is time, two are time then z.
STACK_AXIS_NAMES = {"T": "time", "Z": "z"}


@dataclass(frozen=True)
class StackSelection:
    """Which 2-D frames of an N-D layer form the stack: the frames along ``axis``, every other
    non-spatial axis fixed at its index in ``fixed``. ``ndim`` counts the layer's axes without
    the colour channel."""

    ndim: int
    axis: int
    fixed: tuple[tuple[int, int], ...] = ()

    def index(self, t: int) -> tuple[Any, ...]:
        """Index of frame ``t`` in the layer's data (spatial axes and channels left whole)."""
        index: list[Any] = [slice(None)] * self.ndim
        index[self.axis] = int(t)
        for axis, position in self.fixed:
            index[axis] = int(position)
        return tuple(index)


class OneFrameLabels:
    """(T, H, W) labels of a stack along ``frames.selection`` holding a 2-D Labels layer's data on
    frame ``frame`` and nothing elsewhere (the layer is read when that frame is)."""

    def __init__(self, data: Any, frame: int, frames: "LayerFrames") -> None:
        if not 0 <= int(frame) < len(frames):
            raise ValueError(f"frame {frame} is outside the stack of {len(frames)} frames")
        self.data = data
        self.frame = int(frame)
        self.selection = frames.selection
        self.shape = (len(frames), *(int(n) for n in data.shape))
        self.dtype = np.dtype(data.dtype)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= int(t) < self.shape[0]:
            raise IndexError(f"frame {t} is outside a stack of {self.shape[0]} frames")
        return np.asarray(self.data) if int(t) == self.frame else np.zeros(self.shape[1:], self.dtype)


class LayerFrames:
    """(T, H, W) or (T, H, W, C) array-like over a layer's data along a :class:`StackSelection`;
    ``frames[t]`` reads that frame only."""

    def __init__(self, data: Any, selection: StackSelection) -> None:
        self.data = data
        self.selection = selection
        shape = tuple(int(n) for n in data.shape)
        self.shape = (shape[selection.axis], *shape[selection.ndim - 2 : selection.ndim], *shape[selection.ndim :])
        self.dtype = np.dtype(data.dtype)
        self.ndim = len(self.shape)  # a colour axis, when present, stays last

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= int(t) < self.shape[0]:
            raise IndexError(f"frame {t} is outside a stack of {self.shape[0]} frames")
        return np.asarray(self.data[self.selection.index(t)])


def _layer_data(layer: Any) -> Any:
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def stack_axes(layer: Any) -> list[int]:
    """The axes a stack can run along: every non-spatial, non-channel axis of the layer."""
    ndim = _layer_data(layer).ndim - (1 if getattr(layer, "rgb", False) else 0)
    return list(range(max(0, ndim - 2)))


def viewer_axis(viewer: Any, layer: Any, axis: int) -> int:
    """The viewer's dimension (slider) showing ``axis`` of ``layer``: napari aligns a layer's axes
    with the viewer's last ones."""
    ndim = int(getattr(layer, "ndim", 0) or 0)
    return int(axis) + max(int(viewer.dims.ndim) - ndim, 0)


def axis_name(viewer: Any, layer: Any, axis: int) -> str:
    """The name of ``axis`` of ``layer``: the viewer's for its slider (``viewer.dims.axis_labels``)
    when one was given, else by :data:`STACK_AXIS_NAMES` ("time", then "z"; "axis N" beyond)."""
    labels = list(viewer.dims.axis_labels)
    dim = viewer_axis(viewer, layer, axis)
    label = str(labels[dim]) if dim < len(labels) else ""
    if label and not re.fullmatch(r"-?\d+", label):
        return label
    axes = stack_axes(layer)
    position = axes.index(axis) if axis in axes else len(STACK_AXES)
    letter = STACK_AXES[position] if position < len(STACK_AXES) else ""
    return STACK_AXIS_NAMES.get(letter, f"axis {axis}")


def axis_choices(viewer: Any, layer: Any) -> list[tuple[str, int]]:
    """(text, axis) for each axis a stack of ``layer`` can run along: its name (:func:`axis_name`)
    and its number of frames, e.g. "time, 40 frames"."""
    if layer is None:
        return []
    shape = tuple(int(n) for n in _layer_data(layer).shape)
    return [(f"{axis_name(viewer, layer, axis)}, {shape[axis]} frames", axis) for axis in stack_axes(layer)]


def image_frames(layer: Any, axis: int = 0, current_step: Sequence[int] = ()) -> LayerFrames:
    """The frames of an Image layer along ``axis``: (T, Y, X) grey or (T, Y, X, C) RGB(A).
    Other non-spatial axes (e.g. Z of a TZYX stack) are fixed at ``current_step``."""
    if layer is None:
        raise ValueError("choose an Image layer: open an image stack first (File > Open, or a sample)")
    data = _layer_data(layer)
    rgb = bool(getattr(layer, "rgb", False))
    ndim = data.ndim - (1 if rgb else 0)
    if ndim < 3:
        raise ValueError(
            f"Image layer '{layer.name}' is a single 2-D image: propagation needs a stack such as "
            f"(T, Y, X), (Z, Y, X) or (T, Y, X, RGB)"
        )
    if axis not in range(ndim - 2):
        raise ValueError(f"choose the axis to propagate along among {list(range(ndim - 2))} for '{layer.name}'")
    others = [a for a in range(ndim - 2) if a != axis]
    steps = list(current_step) + [0] * ndim
    fixed = tuple((a, min(max(int(steps[a]), 0), data.shape[a] - 1)) for a in others)
    return LayerFrames(data, StackSelection(ndim, axis, fixed))


def labels_frames(layer: Any, frames: LayerFrames, image_name: str = "the image",
                  frame: int | None = None) -> LayerFrames | OneFrameLabels:
    """The frames of a Labels layer matching ``frames`` (same selection, same size). With
    ``frame``, a 2-D layer of one frame's size is the labels of that frame (a keyframe)."""
    if layer is None:
        raise ValueError("choose a Labels layer: paint the objects on a frame of a Labels layer first")
    data = _layer_data(layer)
    expected = tuple(frames.data.shape[: frames.selection.ndim])
    one_frame = data.ndim == 2 and tuple(data.shape) == tuple(frames.shape[1:3])
    if one_frame and frame is not None:
        if np.dtype(data.dtype).kind not in "uib":
            raise ValueError(f"Labels layer '{layer.name}' holds {data.dtype} values: labels must be integers")
        return OneFrameLabels(data, frame, frames)
    if tuple(data.shape) != expected:
        raise ValueError(
            f"Labels layer '{layer.name}' has shape {tuple(data.shape)} but {image_name} is {expected} "
            f"(without colour channels): the labels must cover the same frames and pixels"
        )
    if np.dtype(data.dtype).kind not in "uib":
        raise ValueError(f"Labels layer '{layer.name}' holds {data.dtype} values: labels must be integers")
    return LayerFrames(data, frames.selection)


def boxes_from_shapes(layer: Any, frames: LayerFrames, current_frame: int) -> dict[int, np.ndarray]:
    """Box labels per frame from a Shapes layer: each shape's bounding box, filled with its own
    id (1, 2, ... in drawing order). Shapes drawn in N-D belong to the frame they lie on; 2-D
    shapes to ``current_frame``. Returns {frame: (H, W) uint16}."""
    if layer is None or len(layer.data) == 0:
        raise ValueError("the Shapes layer has no rectangles: draw one rectangle per object on the keyframe")
    selection = frames.selection
    height, width = frames.shape[1:3]
    boxes: dict[int, np.ndarray] = {}
    for object_id, vertices in enumerate(layer.data, start=1):
        vertices = np.asarray(vertices, dtype=float)
        if vertices.shape[1] == 2:
            frame = current_frame
        elif vertices.shape[1] == selection.ndim:
            frame = int(round(vertices[:, selection.axis].mean()))
            vertices = vertices[:, selection.ndim - 2 :]
        else:
            raise ValueError(f"shape {object_id} has {vertices.shape[1]} dimensions; the image has {selection.ndim}")
        if not 0 <= frame < len(frames):
            raise ValueError(f"shape {object_id} lies on frame {frame}, outside the stack")
        (top, left), (bottom, right) = vertices.min(0), vertices.max(0)
        top, left = max(int(np.floor(top)), 0), max(int(np.floor(left)), 0)
        bottom, right = min(int(np.ceil(bottom)) + 1, height), min(int(np.ceil(right)) + 1, width)
        if bottom <= top or right <= left:
            raise ValueError(f"shape {object_id} lies outside the image")
        labels = boxes.setdefault(frame, np.zeros((height, width), np.uint16))
        labels[top:bottom, left:right] = object_id
    return boxes
