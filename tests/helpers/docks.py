"""Driving the docks in a real viewer (xvfb): the Propagate dock opened and run, its result
compared with the engine's, the errors it notified, and every control of a dock."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QProgressBar, QWidget

from napari_rgmp.plots import LinePlot
from rgmp_model import PropagationSession, load_checkpoint


def run_and_wait(qtbot, widget, action=None) -> None:
    (action or widget.run)()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)


def engine_output(checkpoint, frames, keyframes, direction="both", **options):
    model = load_checkpoint(checkpoint)[0]
    session = PropagationSession(model, frames, device="cpu", **options)
    for t, labels in keyframes.items():
        session.add_keyframe(t, labels)
    return {t: labels for t, labels, _ in session.propagate(direction)}


def errors_since(count: int) -> list[str]:
    return [str(n.message) for n in notification_manager.records[count:] if n.severity.name == "ERROR"]


def labels_on(truth: np.ndarray, frames=(0,)) -> np.ndarray:
    """A labels stack like ``truth`` (T, H, W) holding its labels on ``frames`` only, uint16: what a
    user painted on the keyframes."""
    labels = np.zeros(truth.shape, np.uint16)
    for t in frames:
        labels[t] = truth[t]
    return labels


def propagate_dock_with(viewer, frames: np.ndarray, labels: np.ndarray, checkpoint, image: str = "clip",
                        shown_frame: int | None = None):
    """The Propagate widget docked in ``viewer`` beside ``frames`` (image layer ``image``; napari takes
    a last axis of 3 as RGB) and ``labels`` ('objects'), with the tiny ``checkpoint`` on the CPU; the
    viewer on ``shown_frame`` (of axis 0) when the dock opens, if given; the dock widget kept as
    ``widget.test_dock`` (its close button: ``remove_dock_widget``)."""
    from napari_rgmp.propagate_widget import PropagateWidget

    viewer.add_image(frames, name=image)
    viewer.add_labels(labels, name="objects")
    if shown_frame is not None:
        viewer.dims.set_current_step(0, shown_frame)
    widget = PropagateWidget(viewer)
    widget.test_dock = viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    return widget


def docked_propagate(make_napari_viewer, checkpoint, num_frames: int, seed: int):
    """(viewer, dock, Propagate widget): a synthetic clip labelled on frame 0, the dock opened from
    the manifest with the tiny ``checkpoint`` on the CPU."""
    from rgmp_model.data.synthetic import synthetic_video

    sequence = synthetic_video(num_frames=num_frames, height=48, width=64, num_objects=1, seed=seed)
    viewer = make_napari_viewer()
    viewer.add_image(sequence.frames, name="clip", rgb=True)
    viewer.add_labels(labels_on(sequence.labels), name="objects")
    dock, widget = viewer.window.add_plugin_dock_widget("napari-rgmp", "Propagate labels")
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    return viewer, dock, widget


def controls(widget: QWidget) -> list[QWidget]:
    """Everything a user can set or press in ``widget`` (a spin box's or combo's inner line edit
    belongs to it)."""
    found: list[QWidget] = []
    for kind in (QComboBox, QAbstractSpinBox, QAbstractButton, QLineEdit, QProgressBar, LinePlot):
        for child in widget.findChildren(kind):
            if isinstance(child, QLineEdit) and isinstance(child.parent(), (QAbstractSpinBox, QComboBox)):
                continue
            found.append(child)
    return found
