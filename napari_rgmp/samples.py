"""Sample data of the napari plugin: generated stacks with only the first frame labelled.

Each sample is a deterministic :class:`~rgmp_model.data.synthetic.SyntheticSequence` (fixed
parameters and seed, generated in well under a second) opened as an Image layer plus a Labels
layer that holds the ground truth of frame 0 only, i.e. the starting point of a propagation.
The full sequences, with the labels of every frame, are public so that tests and scripts can
score a propagation against the ground truth::

    seq = sample_video_sequence()       # seq.frames (T, H, W, 3) uint8, seq.labels (T, H, W)
    seq = sample_microscopy_sequence()  # seq.frames (T, H, W) uint16, seq.labels (T, H, W)

The sample functions (named in ``napari.yaml``) return napari layer data tuples
``(data, kwargs, layer_type)`` and, in a running viewer, fit its view to the data once napari has
added them (napari fits the view only to a viewer's first layer). Nothing is generated at import
time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rgmp_model.data.synthetic import SyntheticSequence

__all__ = [
    "MICROSCOPY_PARAMS",
    "VIDEO_PARAMS",
    "first_frame_labels",
    "sample_microscopy_sequence",
    "sample_video_sequence",
    "synthetic_microscopy_sample",
    "synthetic_video_sample",
]

LayerDataTuple = tuple[Any, dict[str, Any], str]

# Fixed generation parameters: the samples (and their ground truth) are the same on every call.
VIDEO_PARAMS: dict[str, int] = {"num_frames": 40, "height": 240, "width": 320, "num_objects": 3, "seed": 0}
MICROSCOPY_PARAMS: dict[str, int] = {"num_frames": 40, "height": 256, "width": 256, "num_cells": 8, "seed": 0}
# Contrast limits of the microscopy image: these percentiles of all its pixels.
MICROSCOPY_CONTRAST_PERCENTILES = (0.5, 99.8)


def sample_video_sequence() -> SyntheticSequence:
    """The full sequence behind the "Synthetic video clip" sample: frames (T, H, W, 3) uint8 and
    ground-truth labels (T, H, W) uint16 of every frame (a new copy on every call)."""
    from rgmp_model.data.synthetic import synthetic_video

    return synthetic_video(**VIDEO_PARAMS)


def sample_microscopy_sequence() -> SyntheticSequence:
    """The full sequence behind the "Synthetic microscopy time-lapse" sample: frames (T, H, W)
    uint16 and ground-truth labels (T, H, W) uint16 of every frame (a new copy on every call)."""
    from rgmp_model.data.synthetic_microscopy import synthetic_microscopy

    return synthetic_microscopy(**MICROSCOPY_PARAMS)


def first_frame_labels(labels: np.ndarray) -> np.ndarray:
    """A (T, H, W) array like ``labels`` with frame 0 copied and every other frame 0."""
    out = np.zeros_like(labels)
    out[0] = labels[0]
    return out


def fit_view_once_added() -> None:
    """In a running napari, fit the current viewer's view to its layers once the pending events
    (napari adding the sample's layers) are done; nothing without a viewer."""
    import sys

    if "napari" not in sys.modules:
        return
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.current_viewer()
    if viewer is not None:
        QTimer.singleShot(0, viewer.reset_view)


def synthetic_video_sample() -> list[LayerDataTuple]:
    """napari sample: an RGB clip (Image layer) and its frame-0 ground truth (Labels layer)."""
    fit_view_once_added()
    seq = sample_video_sequence()
    image = (seq.frames, {"name": "synthetic video", "rgb": True}, "image")
    labels = (first_frame_labels(seq.labels), {"name": "synthetic video labels"}, "labels")
    return [image, labels]


def synthetic_microscopy_sample() -> list[LayerDataTuple]:
    """napari sample: a uint16 fluorescence time-lapse (Image layer, contrast limits from
    percentiles) and its frame-0 ground truth (Labels layer)."""
    fit_view_once_added()
    seq = sample_microscopy_sequence()
    lo, hi = (float(v) for v in np.percentile(seq.frames, MICROSCOPY_CONTRAST_PERCENTILES))
    if hi <= lo:
        hi = lo + 1.0
    image = (seq.frames, {"name": "synthetic microscopy", "colormap": "gray", "contrast_limits": [lo, hi]}, "image")
    labels = (first_frame_labels(seq.labels), {"name": "synthetic microscopy labels"}, "labels")
    return [image, labels]
