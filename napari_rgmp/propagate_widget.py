"""The "Propagate labels" dock widget.

Pick an image stack and a Labels layer (every frame holding labels is a keyframe), or a Shapes
layer with one rectangle per object, and press Run. The work runs in a napari thread worker:
the viewer stays responsive, a progress bar shows frames done and frames/s, and the output Labels
layer "<labels> propagated" fills frame by frame. The input layers are never modified.

Correction loop: edit a frame of the output layer, press "Use this frame as a keyframe": the
frames between it and the neighbouring keyframes are propagated again from it, nothing else. The
widget keeps one library session per (image, model, options) between Runs and corrections, so
the keyframes that did not change are not encoded again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget,
)

from rgmp_model.inference.labels import labelled_frames
from rgmp_model.inference.options import MULTISCALE, PropagationOptions

from . import layers as layer_tools
from .checkpoint_picker import CheckpointPicker
from .checkpoints import file_key
from .devices import available_devices
from .export import ExportPanel, ExportSource
from .layer_combo import LayerCombo
from .output_store import OutputPolicy, prepare_output_layer
from .plots import LinePlot
from .working_size import WorkingSizeSpin
from .propagate_job import JobHandle, JobResult, PropagationJob, SessionKeeper, propagate_job

NEW_LAYER = "(new layer)"
NO_BOXES = "(use the labels)"


class PropagateWidget(QWidget):
    """Dock widget: propagate a Labels layer (or boxes) through an image stack with RGMP."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job = JobHandle()
        self.sessions = SessionKeeper()  # the session between jobs, and the corrected keyframes
        self.output_layer: Any = None
        self.confidence: dict[int, float] = {}  # lowest object confidence per frame
        self.keyframes: list[int] = []  # the input layer's keyframes (or boxes), as shown
        self._inputs_key: tuple[str, str, int] | None = None
        self._stack: tuple[Any, Any] | None = None  # (frames, labels) of the running job
        self.output_policy = OutputPolicy()  # outputs above its budget (2 GiB) go to a zarr store on disk
        self._build()
        self.destroyed.connect(self.job.abandon)
        self._on_model_changed()
        self._update_inputs()

    # ---------------------------------------------------------------------------------- layout
    def _build(self) -> None:
        form = QFormLayout()
        self.image_combo = LayerCombo(self.viewer, napari.layers.Image)
        self.axis_combo = QComboBox()
        self.labels_combo = LayerCombo(self.viewer, napari.layers.Labels)
        self.boxes_combo = LayerCombo(self.viewer, napari.layers.Shapes, none_text=NO_BOXES)
        self.keyframes_label = QLabel()
        self.keyframes_label.setWordWrap(True)
        self.direction_combo = QComboBox()
        self.direction_combo.addItems(["both", "forward", "backward"])
        self.picker = CheckpointPicker("RGMP checkpoint")
        self.checkpoint_combo, self.checkpoint_info = self.picker.combo, self.picker.info_label
        self.device_combo = QComboBox()
        self.device_combo.addItems(available_devices())
        self.max_size_spin = WorkingSizeSpin()  # the model's working size until the user sets one
        self.multiscale_check = QCheckBox("average scales 0.5, 0.75, 1")
        self.region_combo = QComboBox()  # region mode: one full-resolution crop per object
        self.region_combo.addItems(["auto", "on", "off"])
        self.split_check = QCheckBox("daughter cells get new ids")
        self.region_combo.currentTextChanged.connect(lambda text: self.split_check.setEnabled(text != "off"))
        self.output_combo = LayerCombo(self.viewer, napari.layers.Labels, none_text=NEW_LAYER)
        for label, widget in (("image", self.image_combo), ("propagate along axis", self.axis_combo),
                              ("labels", self.labels_combo), ("start from boxes", self.boxes_combo),
                              ("keyframes", self.keyframes_label), ("direction", self.direction_combo),
                              ("model", self.picker),
                              ("device", self.device_combo), ("working size (px)", self.max_size_spin),
                              ("multi-scale", self.multiscale_check), ("region mode", self.region_combo),
                              ("divisions", self.split_check), ("output", self.output_combo)):
            form.addRow(label, widget)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.status_label = QLabel()
        self.plot = LinePlot()
        self.plot.set_title("confidence per frame (lowest object)")
        self.plot.set_y_range((0.0, 1.0))
        self.least_button = QPushButton("Go to least confident frame")
        self.keyframe_button = QPushButton("Use this frame as a keyframe")
        self.export_panel = ExportPanel(self.export_source)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status_label)
        layout.addWidget(self.plot)
        layout.addWidget(self.least_button)
        layout.addWidget(self.keyframe_button)
        layout.addWidget(self.export_panel)
        layout.addStretch(1)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.least_button.clicked.connect(self.go_to_least_confident)
        self.keyframe_button.clicked.connect(self.use_current_frame_as_keyframe)
        self.plot.clicked.connect(lambda x: self.go_to_frame(int(round(x))))
        self.picker.changed.connect(self._on_model_changed)
        self.picker.described.connect(self.max_size_spin.show_model)
        for combo in (self.image_combo, self.labels_combo, self.axis_combo, self.boxes_combo):
            combo.currentIndexChanged.connect(self._update_inputs)
        self._enable_after_run(False)

    # ---------------------------------------------------------------------------------- inputs
    def _update_inputs(self, *_: Any) -> None:
        """Axis choices, excluded output layers and the keyframe list follow the chosen layers."""
        image = self.image_combo.layer()
        axes = layer_tools.stack_axes(image) if image is not None else []
        wanted = [str(a) for a in axes]
        if wanted != [self.axis_combo.itemText(i) for i in range(self.axis_combo.count())]:
            self.axis_combo.blockSignals(True)
            self.axis_combo.clear()
            self.axis_combo.addItems(wanted)
            self.axis_combo.blockSignals(False)
        self.axis_combo.setEnabled(len(axes) > 1)
        labels = self.labels_combo.layer()
        self.output_combo.excluded = {labels.name} if labels is not None else set()
        self.output_combo.refresh()
        inputs = (self.image_combo.currentText(), self.labels_combo.currentText(), self.axis)
        if inputs != self._inputs_key:  # corrections belong to one image, labels and axis
            self.sessions.forget()
            self._inputs_key = inputs
        try:
            frames, label_frames = self._inputs()
            if self.boxes_combo.layer() is not None:
                current = int(self.viewer.dims.current_step[self.axis])
                self.keyframes = sorted(layer_tools.boxes_from_shapes(self.boxes_combo.layer(), frames, current))
            else:
                self.keyframes = list(labelled_frames(label_frames))
            self._show_keyframes()
        except ValueError as error:
            self.keyframes = []
            self.keyframes_label.setText(str(error).split(":")[0])

    def _show_keyframes(self) -> None:
        text = ", ".join(str(t) for t in self.keyframes) or "none: paint labels on a frame"
        if self.boxes_combo.layer() is not None and self.keyframes:
            text = "boxes on " + text
        if self.corrections:
            text += "; corrected: " + ", ".join(str(t) for t in sorted(self.corrections))
        self.keyframes_label.setText(text)

    @property
    def axis(self) -> int:
        return int(self.axis_combo.currentText() or 0)

    def _inputs(self) -> tuple[Any, Any]:
        frames = layer_tools.image_frames(self.image_combo.layer(), self.axis, self.viewer.dims.current_step)
        labels = layer_tools.labels_frames(self.labels_combo.layer(), frames, f"Image layer '{self.image_combo.currentText()}'")
        return frames, labels

    @property
    def corrections(self) -> dict[int, np.ndarray]:
        """Keyframes taken from the output layer (kept with the session)."""
        return self.sessions.corrections

    @property
    def session(self) -> Any:
        """The library session kept between jobs (None before the first run)."""
        return self.sessions.session

    # ---------------------------------------------------------------------------------- model
    def set_checkpoint(self, path: str | Path) -> None:
        """Choose ``path`` (listed, and offered to the other docks once it reads)."""
        self.picker.set_path(path)

    def checkpoint(self) -> str | None:
        """Full path of the chosen checkpoint, or None."""
        return self.picker.path()

    def _on_model_changed(self, *_: Any) -> None:
        self.max_size_spin.follow_model(self.picker.description())

    def options(self) -> PropagationOptions:
        """The propagation options the controls say (checked by PropagationOptions)."""
        return PropagationOptions(
            direction=self.direction_combo.currentText(), device=self.device_combo.currentText(),
            scales=MULTISCALE if self.multiscale_check.isChecked() else None,
            max_size=self.max_size_spin.max_size(),
            region=self.region_combo.currentText(), split_divisions=self.split_check.isChecked(),
        )

    # ---------------------------------------------------------------------------------- running
    def run(self, *_: Any) -> None:
        """Validate the inputs and propagate through the whole stack."""
        self._start(from_keyframe=None)

    def use_current_frame_as_keyframe(self, *_: Any) -> None:
        """Take the output layer's current frame as a keyframe and re-propagate its stretch."""
        if self.output_layer is None or self.output_layer not in self.viewer.layers:
            show_error("run a propagation first: the keyframe is taken from its output layer")
            return
        t = int(self.viewer.dims.current_step[self.axis])
        frames, _ = self._inputs()
        labels = np.array(layer_tools.LayerFrames(self.output_layer.data, frames.selection)[t], copy=True)
        if not labels.any():
            show_error(f"frame {t} of '{self.output_layer.name}' is empty: paint the objects on it first")
            return
        self.corrections[t] = labels
        self._show_keyframes()
        self._start(from_keyframe=t)

    @property
    def worker(self) -> Any:
        """The running thread worker, or None."""
        return self.job.worker

    def _start(self, from_keyframe: int | None) -> None:
        if self.worker is not None:
            show_error("a propagation is already running: wait for it or press Cancel")
            return
        try:
            job = self._prepare(from_keyframe)
        except (ValueError, FileNotFoundError) as error:
            show_error(str(error))
            return
        worker = create_worker(propagate_job, job, self.sessions, _start_thread=False)
        worker.yielded.connect(self._on_result)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.job.worker = worker
        self.run_button.setEnabled(False)
        self.keyframe_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._started = time.perf_counter()
        self._done = 0
        self._failed = False
        QTimer.singleShot(0, worker.start)  # after run() returns: a slot connected to .worker sees every result

    def _prepare(self, from_keyframe: int | None) -> PropagationJob:
        """Everything the worker needs, validated; creates or clears the output layer."""
        frames, labels = self._inputs()
        checkpoint = self._checked_checkpoint()
        boxes: dict[int, np.ndarray] = {}
        keyframes: dict[int, np.ndarray] = {}
        if self.boxes_combo.layer() is not None:
            current = int(self.viewer.dims.current_step[self.axis])
            boxes = layer_tools.boxes_from_shapes(self.boxes_combo.layer(), frames, current)
            self.keyframes = sorted(boxes)
        else:
            self.keyframes = list(labelled_frames(labels))
            if not self.keyframes:
                raise ValueError(f"Labels layer '{self.labels_combo.currentText()}' has no labels on any frame: "
                                 f"paint at least one object on a frame (or choose a Shapes layer with boxes)")
            keyframes = {t: np.array(labels[t], copy=True) for t in self.keyframes}
        keyframes.update({t: v for t, v in self.corrections.items() if t not in boxes})
        options = self.options()
        image = self.image_combo.layer()
        key = (id(image), id(image.data), frames.selection, checkpoint, file_key(checkpoint), options)
        if from_keyframe is None:
            self._prepare_output(frames, labels)
            self.confidence = {}
        self.job.progress = progress(total=0, desc="RGMP propagation")
        self._stack = (frames, labels)
        self.status_label.setText("starting...")
        self._total = 0
        return PropagationJob(key, checkpoint, frames, options, keyframes, boxes,
                              None if from_keyframe is None else (from_keyframe,))

    def _checked_checkpoint(self) -> str:
        """The chosen checkpoint, when it exists and did not fail to read."""
        checkpoint = self.checkpoint()
        if checkpoint is None:
            raise ValueError("choose a model: browse for a checkpoint (napari-rgmp's own or the authors' weights.pth)")
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"checkpoint {checkpoint} does not exist: choose another model")
        known = self.picker.description()
        if known is not None and not known.ok:
            raise ValueError(known.text)
        return checkpoint

    def _prepare_output(self, frames: Any, labels: Any) -> None:
        """The chosen output layer, or a new "<labels> propagated" one; the stack's frames cleared."""
        self.output_layer = prepare_output_layer(self.viewer, self.labels_combo.layer(), self.output_combo.layer(),
                                                 frames, self.output_policy, NEW_LAYER)

    def export_source(self) -> ExportSource:
        """What the export buttons write: the output layer, its propagated stack, the divisions."""
        if self.worker is not None:
            raise ValueError("a propagation is running: export when it has finished")
        if self.output_layer is None or self.output_layer not in self.viewer.layers or self._stack is None:
            raise ValueError("run a propagation first: the export writes its output layer")
        selection = self._stack[0].selection
        parents = dict(getattr(self.session, "divisions", None) or {}) if self.session is not None else {}
        inputs = tuple(str(layer.source.path) for layer in self.viewer.layers if layer.source.path)
        return ExportSource(self.output_layer.data, layer_tools.LayerFrames(self.output_layer.data, selection),
                            self.output_layer.name, parents, inputs)

    # ---------------------------------------------------------------------------------- results
    def _on_result(self, result: JobResult) -> None:
        """Write one frame. State first: refreshing the layer or the progress bar may process
        pending events, including the worker's ``finished``."""
        frames, _ = self._stack
        t = result.frame
        self.confidence[t] = min(result.confidence.values()) if result.confidence else 0.0
        self._done += 1
        self._total = result.total  # the session's count for this job
        rate = self._done / max(time.perf_counter() - self._started, 1e-9)
        self.status_label.setText(f"{self._done} / {self._total} frames, {rate:.2f} frames/s")
        bar = self.job.progress
        self.output_layer.data[frames.selection.index(t)] = result.labels
        self.output_layer.refresh()
        if bar is not None:
            if bar.total != result.total:
                bar.total = result.total
            bar.set_description(f"RGMP propagation, {rate:.1f} frames/s")
            bar.update(1)

    def _on_returned(self, failure: str | None) -> None:
        if failure:
            self._failed = True
            show_error(failure)

    def _on_finished(self) -> None:
        if self.job.progress is not None:
            self.job.progress.close()
            self.job.progress = None
        self.job.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._update_plot()
        self._enable_after_run(bool(self.confidence))
        if not self._failed:
            show_info(f"RGMP: {self._done} frames propagated into '{self.output_layer.name}'")

    def _update_plot(self) -> None:
        frames = sorted(self.confidence)
        self.plot.set_data(frames, [self.confidence[t] for t in frames])

    def _enable_after_run(self, enabled: bool) -> None:
        self.least_button.setEnabled(enabled)
        self.keyframe_button.setEnabled(enabled)

    def cancel(self, *_: Any) -> None:
        """Stop after the current frame; the frames done so far stay in the output layer."""
        self.job.stop()

    # ---------------------------------------------------------------------------------- navigation
    def least_confident_frame(self) -> int | None:
        """The propagated (non-key) frame with the lowest confidence."""
        keys = set(self.keyframes) | set(self.corrections)
        candidates = {t: c for t, c in self.confidence.items() if t not in keys}
        return min(candidates, key=candidates.get) if candidates else None

    def go_to_frame(self, t: int) -> None:
        self.viewer.dims.set_current_step(self.axis, t)
        self.plot.set_marker(t)

    def go_to_least_confident(self, *_: Any) -> None:
        t = self.least_confident_frame()
        if t is None:
            show_info("no propagated frame yet")
            return
        self.go_to_frame(t)
