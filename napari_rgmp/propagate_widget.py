"""The "Propagate labels" dock widget.

Pick an image stack and a Labels layer (every frame holding labels is a keyframe; a 2-D layer,
e.g. one DAVIS annotation, is the keyframe of the frame shown when it was chosen), or a Shapes
layer with one rectangle per object, and press Run. The work runs in a napari thread worker:
the viewer stays responsive, the dock's progress bar shows frames done, frames/s and the time
left, the viewer follows the frame being written ("follow progress", on by default), and the output
Labels layer "<labels> propagated" and the confidence plot fill frame by frame. Choosing a stack
moves the viewer to its (first) keyframe. The input layers are never modified.

Correction loop: edit a frame of the output layer, press "Use frame as keyframe": the
frames between it and the neighbouring keyframes are propagated again from it, nothing else. The
widget keeps one library session per (image, model, options) between Runs and corrections, so
the keyframes that did not change are not encoded again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer

from rgmp_model.inference.labels import labelled_frames
from rgmp_model.constants import ADAPT_ITERATIONS
from rgmp_model.inference.options import MULTISCALE, PropagationOptions

from . import layers as layer_tools
from .checkpoints import file_key
from .export import ExportSource
from .open_labels import open_chosen_labels
from .output_store import OutputPolicy, prepare_output_layer
from .propagate_controls import NEW_LAYER, PropagateControls
from .propagate_job import AdaptationStep, JobHandle, JobResult, PropagationJob, SessionKeeper, propagate_job
from .run_guard import guarded_generator
from .run_watch import RunWatch
from .weak_slots import weak_slot
from .workers import DockWorkers, quit_worker

STARTING = "starting: loading the model..."


class PropagateWidget(PropagateControls):
    """Dock widget: propagate a Labels layer (or boxes) through an image stack with RGMP."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.job = JobHandle()
        self.sessions = SessionKeeper()  # the session between jobs, and the corrected keyframes
        self.output_layer: Any = None
        self.keyframes: list[int] = []  # the input layer's keyframes (or boxes), as shown
        self._inputs_key: tuple[str, str, int] | None = None
        self._stack: tuple[Any, Any] | None = None  # (frames, labels) of the running job
        self.output_policy = OutputPolicy()  # outputs above its budget (2 GiB) go to a zarr store on disk
        self.workers = DockWorkers(stop=quit_worker)  # the propagations this dock started (export, model: their own)
        self.flat_frame: int | None = None  # the frame a 2-D Labels layer belongs to (see _update_inputs)
        self.watch: RunWatch | None = None  # the running job's layers under the user's hands (run_watch.py)
        self._build()
        self._connect()
        self.destroyed.connect(self.job.abandon)
        self._on_model_changed()
        self._update_inputs()

    def _connect(self) -> None:
        self.open_file_action.triggered.connect(lambda *_: self._open_labels(folder=False))
        self.open_folder_action.triggered.connect(lambda *_: self._open_labels(folder=True))
        self.flat_frame_button.clicked.connect(self.use_frame_shown_for_flat_labels)
        self.region_combo.currentTextChanged.connect(lambda text: self.split_check.setEnabled(text != "off"))
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.least_button.clicked.connect(self.go_to_least_confident)
        self.keyframe_button.clicked.connect(self.use_current_frame_as_keyframe)
        self.confidence_panel.clicked.connect(self.go_to_frame)
        self.progress_panel.show_frame.connect(self.go_to_frame)
        self.viewer.dims.events.axis_labels.connect(weak_slot(self._update_inputs))  # weakly: weak_slots.py
        self.picker.changed.connect(self._on_model_changed)
        self.device_combo.currentTextChanged.connect(lambda *_: self.watch and self.watch.model_changed("device"))
        self.picker.described.connect(self.max_size_spin.show_model)
        for combo in (self.image_combo, self.labels_combo, self.axis_combo, self.boxes_combo):
            combo.currentIndexChanged.connect(self._update_inputs)
        self._enable_after_run(False)

    def worker_groups(self) -> list[DockWorkers]:
        return [self.workers, self.export_panel.workers, self.picker.workers]

    def _open_labels(self, folder: bool) -> None:
        """The "open..." button: a label file or folder as a new Labels layer, chosen here."""
        layer = open_chosen_labels(self.viewer, folder, self)
        if layer is not None:
            self.labels_combo.set_layer(layer.name)

    # ---------------------------------------------------------------------------------- inputs
    def _update_inputs(self, *_: Any) -> None:
        """Axis choices, excluded output layers and the keyframe list follow the chosen layers."""
        image = self.image_combo.layer()
        choices = layer_tools.axis_choices(self.viewer, image)
        shown = [(self.axis_combo.itemText(i), self.axis_combo.itemData(i)) for i in range(self.axis_combo.count())]
        if choices != shown:
            current = self.axis_combo.currentData()
            self.axis_combo.blockSignals(True)
            self.axis_combo.clear()
            for text, axis in choices:
                self.axis_combo.addItem(text, axis)
            self.axis_combo.setCurrentIndex(max(self.axis_combo.findData(current), 0))
            self.axis_combo.blockSignals(False)
        self.axis_combo.setEnabled(len(choices) > 1)
        labels = self.labels_combo.layer()
        self.output_combo.excluded = {labels.name} if labels is not None else set()
        self.output_combo.refresh()
        inputs = (self.image_combo.currentText(), self.labels_combo.currentText(), self.axis)
        chosen = inputs != self._inputs_key
        if chosen:  # corrections belong to one image, labels and axis
            self.sessions.forget()
            self._inputs_key = inputs
            self.flat_frame = self.current_frame() if labels is not None and labels.ndim == 2 else None
        try:
            frames, label_frames = self._inputs()
            if self.boxes_combo.layer() is not None:
                self.keyframes = sorted(layer_tools.boxes_from_shapes(self.boxes_combo.layer(), frames,
                                                                      self.current_frame()))
            else:
                self.keyframes = list(labelled_frames(label_frames))
            self._show_keyframes()
        except ValueError as error:
            self.keyframes = []
            self.flat_frame_button.setVisible(False)
            self.keyframes_label.setText(str(error).split(":")[0])
        if chosen and self.keyframes and self.worker is None and self.current_frame() not in self.keyframes:
            self.go_to_frame(self.keyframes[0])  # a new stack: show the frame that holds the labels

    def use_frame_shown_for_flat_labels(self, *_: Any) -> None:
        """A 2-D Labels layer becomes the keyframe of the frame the viewer shows now."""
        self.flat_frame = self.current_frame()
        self._update_inputs()

    def _show_keyframes(self) -> None:
        text = ", ".join(str(t) for t in self.keyframes) or "none: paint labels on a frame"
        flat = self.flat_frame is not None and self.boxes_combo.layer() is None
        self.flat_frame_button.setVisible(flat)
        if flat:
            text = f"frame {self.flat_frame} (2-D labels: the frame shown when chosen)"
        if self.boxes_combo.layer() is not None and self.keyframes:
            text = "boxes on " + text
        if self.corrections:
            text += "; corrected: " + ", ".join(str(t) for t in sorted(self.corrections))
        self.keyframes_label.setText(text)

    @property
    def axis(self) -> int:
        """The image layer's axis the stack runs along."""
        axis = self.axis_combo.currentData()
        return 0 if axis is None else int(axis)

    def _viewer_axis(self) -> int:
        image = self.image_combo.layer()
        return self.axis if image is None else layer_tools.viewer_axis(self.viewer, image, self.axis)

    def current_frame(self) -> int:
        """The frame of the stack the viewer shows."""
        return int(self.viewer.dims.current_step[self._viewer_axis()])

    def _inputs(self) -> tuple[Any, Any]:
        image = self.image_combo.layer()
        offset = self._viewer_axis() - self.axis
        frames = layer_tools.image_frames(image, self.axis, self.viewer.dims.current_step[offset:])
        labels = layer_tools.labels_frames(self.labels_combo.layer(), frames,
                                           f"Image layer '{self.image_combo.currentText()}'", self.flat_frame)
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
        if self.watch is not None:
            self.watch.model_changed("model")
        self.max_size_spin.follow_model(self.picker.description())

    def options(self) -> PropagationOptions:
        """The propagation options the controls say (checked by PropagationOptions)."""
        chosen = self.run_options.asdict()  # the magicgui fields (propagate_controls.run_options_form)
        return PropagationOptions(
            direction=chosen["direction"], device=chosen["device"],
            scales=MULTISCALE if chosen["multiscale"] else None, max_size=self.max_size_spin.max_size(),
            region=chosen["region"], split_divisions=chosen["split_divisions"],
            adapt=ADAPT_ITERATIONS if chosen["adapt"] else 0,
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
        t = self.current_frame()
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
            show_info("a propagation is already running: wait for it or press Cancel (one run at a time)")
            return
        try:
            job = self._prepare(from_keyframe)
        except (ValueError, FileNotFoundError) as error:
            show_error(str(error))
            return
        what = (f"the propagation of '{self.image_combo.currentText()}' from '{self.labels_combo.currentText()}' "
                f"with {Path(job.checkpoint).name}")
        worker = self.workers.track(create_worker(guarded_generator, what, propagate_job(job, self.sessions),
                                                  _start_thread=False))
        worker.yielded.connect(self._on_result)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        self.job.worker = worker
        self.watch = RunWatch(self.viewer, self.image_combo.layer(), self.labels_combo.layer(), self.output_layer,
                              self._stack[0].selection.axis, weak_slot(self._cancel_for), show_info,
                              weak_slot(self.current_frame))
        self.run_button.setEnabled(False)
        self.keyframe_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress_panel.start(STARTING)
        self._done = 0
        self._failed = self._stopped = False
        QTimer.singleShot(0, worker.start)  # after run() returns: a slot connected to .worker sees every result

    def _prepare(self, from_keyframe: int | None) -> PropagationJob:
        """Everything the worker needs, validated; creates or clears the output layer."""
        frames, labels = self._inputs()
        checkpoint = self.picker.checked_path("a model")
        boxes: dict[int, np.ndarray] = {}
        keyframes: dict[int, np.ndarray] = {}
        if self.boxes_combo.layer() is not None:
            boxes = layer_tools.boxes_from_shapes(self.boxes_combo.layer(), frames, self.current_frame())
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
            self.confidence_panel.clear()
        self.job.progress = progress(total=0, desc="RGMP propagation")
        self._stack = (frames, labels)
        self.status_label.setText(STARTING)
        self._total = 0
        return PropagationJob(key, checkpoint, frames, options, keyframes, boxes,
                              None if from_keyframe is None else (from_keyframe,))

    def _prepare_output(self, frames: Any, labels: Any) -> None:
        """The chosen output layer, or a new "<labels> propagated" one; the stack's frames cleared."""
        self.output_layer = prepare_output_layer(self.viewer, self.labels_combo.layer(), self.output_combo.layer(),
                                                 frames, self.output_policy, NEW_LAYER, self.image_combo.layer())

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
    def _on_result(self, result: JobResult | AdaptationStep) -> None:
        """Write one frame (or show a step of adaptation). State first: refreshing the layer or the
        progress bar may process pending events, including the worker's ``finished``."""
        if self._closed or (self.watch is not None and self.watch.cancelled):  # closing, or cancelled
            return  # by a change to its layers (run_watch.py): no frame is written
        if isinstance(result, AdaptationStep):
            text = self.progress_panel.adapting(result.iteration, result.total)
            self.status_label.setText(f"adapting the model to the keyframes: {text}")
            return
        frames, _ = self._stack
        t = result.frame
        self.confidence_panel.add(t, result.confidence)
        self.max_size_spin.show_used(self.sessions.working_size)
        self._done += 1
        self._total = result.total  # the session's count for this job
        text = self.progress_panel.advance(self._done, self._total)
        self.status_label.setText(f"running: frame {t} written ({text.split(',')[0]})")
        rate = self.progress_panel.rate(self._done)
        bar = self.job.progress
        if self.watch is None or self.watch.may_write(t):  # not a frame the user painted during the run
            self.output_layer.data[frames.selection.index(t)] = result.labels
            self.output_layer.refresh()
        self.progress_panel.follow(t)
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
        watch, self.watch = self.watch, None
        if watch is not None:
            watch.close()
            if watch.kept:
                show_info(f"frames {sorted(watch.kept)} were painted during the propagation: kept as painted "
                          "(the run's results for them were not written)")
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.confidence_panel.redraw()
        self._enable_after_run(bool(self.confidence))
        name = self.output_layer.name if self.output_layer is not None else "the output layer"
        stopped = self._stopped or self._done < self._total  # Cancel (also before the first frame, while adapting)
        ended = ("failed after" if self._failed else "cancelled after" if watch is not None and watch.cancelled
                 else "stopped after" if stopped else "done:")
        self.status_label.setText(f"{ended} {self._done} / {self._total} frames propagated into '{name}'")
        self.progress_panel.finish()
        if not self._failed and (watch is None or watch.cancelled is None):
            show_info(f"RGMP: {self._done} frames propagated into '{name}'")

    @property
    def confidence(self) -> dict[int, float]:
        """{frame: the lowest confidence among the objects still tracked (NaN: none)} of the run."""
        return self.confidence_panel.values

    def _enable_after_run(self, enabled: bool) -> None:
        self.least_button.setEnabled(enabled)
        self.keyframe_button.setEnabled(enabled)

    def _cancel_for(self, reason: str) -> None:
        """The user changed the running job's layers so that it cannot go on (run_watch.py)."""
        self._stopped = True
        self.job.stop()
        self.status_label.setText("cancelled: " + reason.split(":")[0])
        show_warning(reason)

    def cancel(self, *_: Any) -> None:
        """Stop after the current frame; the frames done so far stay in the output layer."""
        self._stopped = self.worker is not None
        self.job.stop()

    # ---------------------------------------------------------------------------------- navigation
    def least_confident_frame(self) -> int | None:
        """The propagated (non-key) frame with the lowest confidence."""
        return self.confidence_panel.least_confident(set(self.keyframes) | set(self.corrections))

    def go_to_frame(self, t: int) -> None:
        """Show frame ``t`` of the stack in the viewer (and mark it on the plot)."""
        self.viewer.dims.set_current_step(self._viewer_axis(), int(t))
        self.confidence_panel.set_marker(int(t))

    def go_to_least_confident(self, *_: Any) -> None:
        t = self.least_confident_frame()
        if t is None:
            show_info("no propagated frame yet")
            return
        self.go_to_frame(t)
