"""Label images: validation and the mapping between object ids and network channels."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np


def validate_label_frame(labels: Any, shape: tuple[int, int], frame_index: int) -> np.ndarray:
    """Check one annotated frame: an integer (or boolean) (H, W) array with ids >= 0.

    Returns it as a numpy array (bool becomes uint8); the caller's array is never modified.
    """
    array = np.asarray(labels)
    if array.dtype.kind not in "uib":
        raise ValueError(
            f"labels of frame {frame_index} have dtype {array.dtype}: labels must be integer ids "
            f"(0 = background); convert them, e.g. labels.astype(np.int32)"
        )
    if array.shape != tuple(shape):
        raise ValueError(
            f"labels of frame {frame_index} have shape {array.shape} but the frames are "
            f"{tuple(shape)} (H, W): the labels must be painted on the same image grid"
        )
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ValueError(f"labels of frame {frame_index} contain negative ids: ids must be >= 0")
    return array


def labelled_frames(label_stack: Any) -> tuple[int, ...]:
    """Indices of the frames of a (T, H, W) label stack that hold any non-zero label.

    ``label_stack`` is any array-like with ``shape`` and ``__getitem__`` (numpy, dask, zarr, a lazy
    stack); it is read one frame at a time, so a large stack is never loaded whole.
    """
    shape = tuple(label_stack.shape)
    if len(shape) < 1:
        raise ValueError(
            f"labels have shape {shape}: give a (T, H, W) stack of label frames, one per image"
        )
    return tuple(t for t in range(shape[0]) if np.any(np.asarray(label_stack[t])))


class ObjectIds:
    """The objects of a session: sorted non-zero ids and their channels 1..K (0 = background)."""

    def __init__(self, ids: Iterable[int], dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.ids = np.array(sorted({int(i) for i in ids if int(i) != 0}), dtype=self.dtype)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_frames(cls, frames: Iterable[np.ndarray]) -> "ObjectIds":
        """The union of the ids of several label frames, in their common dtype."""
        frames = list(frames)
        dtype = np.result_type(*(f.dtype for f in frames))
        if dtype.kind == "f":  # uint64 mixed with signed ids: ids are >= 0, keep them exact
            dtype = np.dtype(np.uint64)
        ids: set[int] = set()
        for frame in frames:
            ids.update(int(i) for i in np.unique(frame))
        return cls(ids, dtype)

    def channels(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) ids -> (H, W) int64 channel indices (0 = background, k = k-th id)."""
        labels = labels.astype(self.dtype, copy=False)  # exact comparisons, even for uint64
        channels = np.searchsorted(self.ids, labels) + 1
        known = (channels <= len(self.ids)) & (
            self.ids[np.minimum(channels, len(self.ids)) - 1] == labels
        )
        return np.where(known & (labels != 0), channels, 0).astype(np.int64)

    def one_hot(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) ids -> (K, H, W) float32 masks, one per object id."""
        channels = self.channels(labels)
        return (channels[None] == np.arange(1, len(self.ids) + 1)[:, None, None]).astype(np.float32)

    def to_ids(self, channels: np.ndarray) -> np.ndarray:
        """(H, W) channel indices -> (H, W) labels with the original ids, in the ids' dtype."""
        lookup = np.concatenate([np.zeros(1, dtype=self.dtype), self.ids])
        return lookup[channels]


def object_boxes(channels: np.ndarray, active: list[int]) -> dict[int, tuple[int, int, int, int]]:
    """(H, W) channel map -> {channel: (top, left, bottom, right)} boxes (exclusive ends) of the
    active channels that are present."""
    from scipy import ndimage

    boxes = {}
    slices = ndimage.find_objects(channels.astype(np.int32), max_label=max(active, default=0))
    for c in active:
        s = slices[c - 1] if c - 1 < len(slices) else None
        if s is not None:
            boxes[c] = (s[0].start, s[1].start, s[0].stop, s[1].stop)
    return boxes


def object_sides(labels: np.ndarray) -> list[int]:
    """The longer side (px) of each object's bounding box in the (H, W) ``labels``."""
    if not np.any(labels):
        return []
    objects = ObjectIds.from_frames([labels])
    boxes = object_boxes(objects.channels(labels), list(range(1, len(objects) + 1)))
    return [max(bottom - top, right - left) for top, left, bottom, right in boxes.values()]


class KeyframeLabels:
    """A (T, H, W) label stack of ``shape`` holding ``keyframes`` ({frame: (H, W) labels}) and 0 on
    every other frame, without storing the empty frames (keyframes are checked where they are used):
    the labels ``rgmp-train finetune`` reads and the Fine-tune dock's snapshot of a Labels layer
    (painting during a run does not change its training data). ``dtype``: the stack's (default:
    the keyframes' common type)."""

    def __init__(self, keyframes: Mapping[int, np.ndarray], shape: Sequence[int], dtype: Any = None) -> None:
        self.keyframes = {int(t): np.asarray(k) for t, k in keyframes.items()}
        self.dtype = np.dtype(dtype) if dtype is not None else np.result_type(*(k.dtype for k in self.keyframes.values()))
        self.shape = tuple(int(n) for n in shape)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        if not -self.shape[0] <= int(t) < self.shape[0]:
            raise IndexError(f"frame {t} is outside a stack of {self.shape[0]} frames (0..{self.shape[0] - 1})")
        found = self.keyframes.get(int(t) % self.shape[0])
        return found if found is not None else np.zeros(self.shape[1:], self.dtype)
