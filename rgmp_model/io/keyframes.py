"""Keyframes from a label file: which frames of which stack hold the labels to propagate from.

``rgmp propagate``, ``rgmp batch``'s checks and ``rgmp-train finetune`` all read LABELS with
:func:`read_keyframes`: a label image for one frame (``reference_frame``, default 0), a label stack
whose labelled frames are all keyframes (unless ``reference_frame`` picks one), or for a stack with
time and z a label hyperstack with the same axes (each index of the other axis propagated from its
own keyframes; a 2-D or 3-D label file then belongs to index ``at``). The messages name the
command-line options (``--reference-frame``, ``--at``) that set these parameters.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Keyframes", "label_hyperstack", "read_keyframes"]

Keyframes = dict[int, dict[int, np.ndarray]]
"""{index of the other axis: {frame: (H, W) labels}}."""


def label_hyperstack(path: str | os.PathLike) -> Any:
    """``path`` as a :class:`~rgmp_model.io.hyperstack.Hyperstack` when it has two stack axes (time
    and z), else None (a label image or stack: :func:`~rgmp_model.io.label_io.open_label_stack`)."""
    from rgmp_model.io.formats import format_of
    from rgmp_model.io.hyperstack import open_hyperstack

    path = Path(path)
    fmt = format_of(path)
    if fmt is None or fmt.open_axes is None:  # a format without named axes holds one stack
        return None
    try:
        labels = open_hyperstack(path)
        planar = labels.axes.find("C")
        free = [a for a in "TZ" if a not in labels.axes]
        if 0 <= planar < len(labels.axes) - 1 and free:  # tifffile's planar "RGB" for an axis of 3 or 4: frames
            labels = open_hyperstack(path, labels.axes.replace("C", free[0]))
    except ValueError:
        return None  # not a hyperstack: read as a label stack or image (open_label_stack says what is wrong)
    return labels if len(labels.stack_axes) == 2 else None


def read_keyframes(labels: str | os.PathLike, view: Any, *, images: str | os.PathLike | None = None,
                   reference_frame: int | None = None, at: int | None = None) -> Keyframes:
    """The keyframes of the label file ``labels`` for the images' ``view`` (a
    :class:`~rgmp_model.io.hyperstack.StackView`; ``images`` names them in messages), each checked
    to hold object ids, not a photograph's grey levels (``label_io.check_label_values``)."""
    from rgmp_model.io.label_io import check_label_values

    labels = Path(labels)
    keyframes = _read(labels, view, images, reference_frame, at)
    for i, keys in keyframes.items():
        for t, frame in keys.items():
            where = [f"{view.other_name} {i}"] if view.count > 1 else []
            where += [f"frame {t}"] if len(keys) > 1 or t != 0 else []
            check_label_values(frame, f"{labels.name} ({', '.join(where)})" if where else labels.name)
    return keyframes


def _from_hyperstack(labels: Path, hyper: Any, view: Any, ref: int | None, at: int | None) -> Keyframes:
    """The labelled frames (or frame ``ref``) of each index (or index ``at``) of a label hyperstack."""
    from rgmp_model.inference.labels import labelled_frames

    n = view.num_frames
    if ref is not None and not 0 <= ref < n:
        raise ValueError(f"--reference-frame {ref} is outside the {view.along_name} axis (0..{n - 1})")
    found: Keyframes = {}
    for i in [at] if at is not None else range(view.count):
        frames = view.label_frames(hyper, i)
        for t in [ref] if ref is not None else labelled_frames(frames):
            frame = np.asarray(frames[t])
            if frame.any():
                found.setdefault(i, {})[t] = frame
    if not found:
        raise ValueError(f"the labels {labels} have no labels on any frame: paint at least one object")
    return found


def _read(labels: Path, view: Any, images: Any, ref: int | None, at: int | None) -> Keyframes:
    from rgmp_model.inference.labels import labelled_frames
    from rgmp_model.io.label_io import open_label_stack

    n, other = view.num_frames, view.other_name
    if at is not None and other is None and at != 0:
        raise ValueError(f"--at picks an index of the other axis of a stack with time and z, but {images} "
                         f"is one {view.along_name} stack: leave --at out")
    if at is not None and not 0 <= at < view.count:
        raise ValueError(f"--at {at} is outside the {other} axis (0..{view.count - 1})")
    hyper = label_hyperstack(labels) if view.count > 1 else None
    if hyper is not None:
        return _from_hyperstack(labels, hyper, view, ref, at)
    if view.count > 1 and at is None:
        raise ValueError(f"{labels} holds labels for one {view.along_name} stack but {images} has "
                         f"{view.count} along {other}: say which with --at I, or give labels with the image's axes")
    stack = open_label_stack(labels)
    if len(stack) == 1 or ref is not None:
        source = 0 if len(stack) == 1 else ref
        if not 0 <= source < len(stack):
            raise ValueError(f"--reference-frame {ref} is outside the label stack (0..{len(stack) - 1})")
        return {at or 0: {0 if ref is None else ref: np.asarray(stack[source])}}
    if len(stack) != n:
        raise ValueError(f"the label stack {labels} has {len(stack)} frames but the images have {n} along "
                         f"{view.along_name}: give one label image per frame, or one image with --reference-frame")
    keys = {t: np.asarray(stack[t]) for t in labelled_frames(stack)}
    if not keys:
        raise ValueError("the label stack has no labels on any frame: paint at least one object")
    return {at or 0: keys}
