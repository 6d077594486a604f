"""Fine-tune widget: adapt a checkpoint to the user's stack from the frames labelled so far.

The widget checks the layers (through :mod:`napari_rgmp.layers`), then runs ONE call,
``training.finetune.finetune_on_stack``, in a napari worker thread. Progress (iteration, total,
loss) comes back through a Qt signal; Stop, closing the widget or closing the viewer end the run
after the current iteration (the checkpoint is still written). The labels choice never defaults to
a layer the Propagate dock produced (and warns when one is chosen); the new checkpoint goes to the
user model folder as ``<image>-finetuned-<date>.pt`` and the run's training folder to the cache
(:mod:`training.run_folders`). torch and ``training`` are imported only when needed, so importing
this module is cheap.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils import progress
from magicgui.widgets import ComboBox, Container, LineEdit, SpinBox
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import (
    QComboBox, QFileDialog, QFormLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout,
    QWidget,
)

from rgmp_model.inference.labels import labelled_frames
from training.run_folders import finetune_run_folder

from .checkpoint_picker import CheckpointPicker
from .devices import available_devices
from .finetune_defaults import OWN_OUTPUT_WARNING, TIPS, checked_learning_rate, checked_output, default_output
from .finetune_job import error_message, run_finetune, snapshot_labels
from .run_guard import JobFailed, guarded_call
from .weak_slots import weak_slot
from .layer_combo import LayerCombo
from .layers import LayerFrames, axis_choices, image_frames, labels_frames
from .output_store import is_propagated
from .plots import LinePlot
from .scroll_dock import ScrollDock, row
from .workers import DockWorkers

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

_SHOWN_FRAMES = 12  # training frames listed before "..."
NO_LABELS = "(choose a Labels layer)"


TRAINING_FIELDS = ("iterations", "learning_rate", "batch_size", "crop_size", "device")


def training_form() -> Container:
    """The training options, a magicgui form with one labelled row per field of
    :data:`TRAINING_FIELDS`, at fine-tuning's defaults (``training/configs/finetune.yaml``, the
    one owner: ``rgmp-train finetune`` starts from the same values); devices from
    :func:`.devices.available_devices`."""
    from training.config import CONFIG_DIR, load_config

    defaults = load_config(CONFIG_DIR / "finetune.yaml")
    form = Container(widgets=[
        SpinBox(name="iterations", min=1, max=1_000_000, step=50, value=defaults.optim.iterations),
        LineEdit(name="learning_rate", label="learning rate", value=f"{defaults.optim.lr:g}"),
        SpinBox(name="batch_size", label="batch size", min=1, max=256, value=defaults.data.batch_size),
        SpinBox(name="crop_size", label="crop size (px)", min=32, max=2048, step=32, value=defaults.data.crop_size[0]),
        ComboBox(name="device", choices=available_devices()),  # auto, cpu, cuda:N, mps
    ], labels=True)
    form.margins = (0, 0, 0, 0)
    return form


class ProgressRelay(QObject):
    """Carries (iteration, total, loss) from the worker thread to the GUI thread (a queued
    connection). It has no parent, so it outlives a widget deleted during a run."""

    progressed = Signal(int, int, float)


def _note() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    return label


# ---------------------------------------------------------------------------------- widget
class FinetuneWidget(ScrollDock):
    """Dock widget: fine-tune a checkpoint on the frames of a Labels layer."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.workers = DockWorkers()  # this dock's fine-tuning runs: stopped by stop(), then awaited
        self.pbar: progress | None = None
        self._stop_event = threading.Event()
        self._output_edited = False
        self._watched: list[Any] = []
        self._data_slot = weak_slot(self._on_layer_data)  # viewer and layer events: weakly (weak_slots.py)
        self._warned: Any = None  # the propagated layer last warned about
        self._options: dict[str, Any] = {}  # the running job's options, for its messages
        self._last_progress: tuple[int, int, float] | None = None
        self._frames_timer = QTimer(self, singleShot=True, interval=200)  # debounces edits
        self._frames_timer.timeout.connect(self.update_training_frames)
        self._relay = ProgressRelay()
        self.progressed = self._relay.progressed  # (iteration, total, loss), in the GUI thread
        self.progressed.connect(self._on_progress)
        self._build()

        stop = self._stop_event
        # A run stops when the widget goes: its dock or viewer closed (ScrollDock: stopped and
        # awaited), or deleted by Qt or garbage-collected without either.
        self.destroyed.connect(lambda *_: stop.set())
        weakref.finalize(self, stop.set)
        self.viewer.dims.events.point.connect(weak_slot(self._on_point))
        self._on_base_changed()
        self._on_image_changed()

    # ------------------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.image_combo = LayerCombo(self.viewer, Image)
        self.labels_combo = LayerCombo(self.viewer, Labels, none_text=NO_LABELS, prefer=lambda layer: not is_propagated(layer))
        self.axis_combo, self.axis_label = QComboBox(), QLabel("stack axis")
        self.frames_label, self.status_label, self.labels_note = _note(), _note(), _note()
        self.labels_note.setVisible(False)
        self.picker = CheckpointPicker("Base checkpoint")
        self.checkpoint_info = self.picker.info_label
        self.training_form = training_form()  # a magicgui form; its fields' Qt widgets below
        self.iterations, self.learning_rate, self.batch_size, self.crop_size, self.device = (
            self.training_form[name].native for name in TRAINING_FIELDS)
        validator = QDoubleValidator(0.0, 1.0, 12, self.learning_rate)
        validator.setNotation(QDoubleValidator.Notation.ScientificNotation)
        self.learning_rate.setValidator(validator)
        self.output_path = QLineEdit(placeholderText="where to save the fine-tuned checkpoint")
        self.output_button = QPushButton("...", toolTip="choose where to save the fine-tuned checkpoint")
        self.run_button, self.stop_button = QPushButton("Run"), QPushButton("Stop", enabled=False)
        self.loss_plot = LinePlot(title="training loss", x_label="iteration")
        self.loss_plot.setMinimumHeight(150)
        self.loss_plot.setMaximumHeight(320)
        for combo in (self.image_combo, self.labels_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        for combo in (self.image_combo, self.labels_combo):  # follow renamed layers too
            self.viewer.layers.events.renamed.connect(weak_slot(combo.refresh))

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for label, field in [
            ("image", self.image_combo), ("labels", self.labels_combo), (None, self.labels_note),
            (self.axis_label, self.axis_combo), (None, self.frames_label), ("base", self.picker),
            (None, self.training_form.native), ("output", row(self.output_path, self.output_button)),
        ]:
            if label is None:
                form.addRow(field)
            else:
                form.addRow(label, field)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        for widget in (row(self.run_button, self.stop_button), self.status_label, self.loss_plot):
            layout.addWidget(widget)
        layout.addStretch(1)
        self._inputs: list[QWidget] = [
            self.image_combo, self.labels_combo, self.axis_combo, self.picker, self.iterations, self.learning_rate,
            self.batch_size, self.crop_size, self.device, self.output_path, self.output_button,
        ]
        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.labels_combo.currentIndexChanged.connect(self._on_labels_changed)
        self.axis_combo.currentIndexChanged.connect(self.schedule_frames_update)
        self.picker.changed.connect(self._on_base_changed)
        self.output_button.clicked.connect(self._browse_output)
        self.output_path.textEdited.connect(self._on_output_edited)
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.viewer.dims.events.axis_labels.connect(weak_slot(self._fill_axes))
        for name, tip in TIPS.items():
            getattr(self, name).setToolTip(tip)

    # ------------------------------------------------------------------------------ layers
    def _watch(self, layers: list[Any]) -> None:
        """Follow data edits (new data, painting) of the chosen layers."""
        for emitter in self._watched:
            emitter.disconnect(self._data_slot)
        self._watched = [getattr(layer.events, name) for layer in layers if layer is not None
                         for name in ("data", "paint") if hasattr(layer.events, name)]
        for emitter in self._watched:
            emitter.connect(self._data_slot)

    def _on_image_changed(self, *_: Any) -> None:
        self._fill_axes()
        self._refresh_output()
        self._on_labels_changed()

    def _on_labels_changed(self, *_: Any) -> None:
        labels = self.labels_combo.layer()
        self._watch([self.image_combo.layer(), labels])
        own_output = labels is not None and is_propagated(labels)
        self.labels_note.setText(f"warning: training on the model's own output ('{labels.name}')" if own_output else "")
        self.labels_note.setVisible(own_output)
        if own_output and self._warned is not labels:
            show_warning(OWN_OUTPUT_WARNING.format(name=labels.name))
        self._warned = labels if own_output else None
        self.schedule_frames_update()

    def _on_layer_data(self, *_: Any) -> None:
        self._fill_axes()
        self.schedule_frames_update()

    def _on_point(self, *_: Any) -> None:
        if self.axis_combo.count() > 1:  # the other axes are fixed at the viewer's position
            self.schedule_frames_update()

    def _fill_axes(self) -> None:
        choices = axis_choices(self.viewer, self.image_combo.layer())
        current = self.axis_combo.currentData()
        self.axis_combo.blockSignals(True)
        self.axis_combo.clear()
        for text, axis in choices:
            self.axis_combo.addItem(text, axis)
        axes = [axis for _, axis in choices]
        self.axis_combo.setCurrentIndex(max(self.axis_combo.findData(current), 0) if axes else -1)
        self.axis_combo.blockSignals(False)
        self.axis_combo.setVisible(len(axes) > 1)
        self.axis_label.setVisible(len(axes) > 1)

    def _current_step(self, layer: Any) -> tuple[int, ...]:
        try:
            return tuple(int(round(float(c))) for c in layer.world_to_data(self.viewer.dims.point))
        except Exception:  # a layer without world coordinates: first index
            return ()

    def stacks(self) -> tuple[LayerFrames, LayerFrames, tuple[int, ...]]:
        """The image and label stacks and the labelled frames; ValueError says what is missing."""
        image = self.image_combo.layer()
        axis = self.axis_combo.currentData()
        images = image_frames(image, 0 if axis is None else int(axis), self._current_step(image) if image else ())
        labels_layer = self.labels_combo.layer()
        labels = labels_frames(labels_layer, images, f"Image layer '{image.name}'")
        frames = labelled_frames(labels)
        if not frames:
            raise ValueError(f"Labels layer '{labels_layer.name}' has no labels: paint the objects on at least "
                             f"one frame (the labelled frames are the training frames)")
        return images, labels, frames

    def schedule_frames_update(self, *_: Any) -> None:
        self._frames_timer.start()

    def update_training_frames(self) -> None:
        """Show the training frames (or why there are none) under the layer choices."""
        try:
            frames = self.stacks()[2]
        except ValueError as error:
            self.frames_label.setText(f"training frames: none ({error})")
            return
        shown = ", ".join(map(str, frames[:_SHOWN_FRAMES]))
        more = f", ... ({len(frames)} frames)" if len(frames) > _SHOWN_FRAMES else ""
        self.frames_label.setText(f"training frames: {shown}{more}")

    # ------------------------------------------------------------------------------ checkpoints
    def set_base_checkpoint(self, path: str | os.PathLike) -> None:
        """Choose ``path`` as the base checkpoint (listed if it was not)."""
        self.picker.set_path(path)

    def base_checkpoint(self) -> Path | None:
        path = self.picker.path()
        return Path(path) if path else None

    def _on_base_changed(self, *_: Any) -> None:
        self._refresh_output()

    def _refresh_output(self) -> None:
        """The default output (until the user sets one): named from the image layer and the date."""
        if not self._output_edited:
            self.output_path.setText(str(default_output(self.image_combo.currentText() or None)))

    # ------------------------------------------------------------------------------ output
    def set_output(self, path: str | os.PathLike) -> None:
        """Save the fine-tuned checkpoint to ``path`` (no longer derived from the base)."""
        self.output_path.setText(str(path))
        self._output_edited = True

    def _on_output_edited(self, text: str) -> None:
        self._output_edited = bool(text.strip())

    def _browse_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the fine-tuned checkpoint as",
                                              self.output_path.text(), "PyTorch checkpoint (*.pt)")
        if path:
            self.set_output(path)

    # ------------------------------------------------------------------------------ run
    def request(self) -> dict[str, Any]:
        """The arguments of the library call, after checking every input (ValueError /
        FileNotFoundError with a message saying what to do)."""
        images, labels, frames = self.stacks()
        base = Path(self.picker.checked_path("a base checkpoint"))
        lr = checked_learning_rate(self.learning_rate.text())
        if self.crop_size.value() % 32:
            raise ValueError(f"crop size {self.crop_size.value()} px is not a multiple of 32: use e.g. "
                             f"{max(32, self.crop_size.value() // 32 * 32)} px")
        out = checked_output(self.output_path.text(), base)
        options = {"iterations": self.iterations.value(), "lr": lr, "batch_size": self.batch_size.value(),
                   "crop_size": (self.crop_size.value(),) * 2, "device": self.device.currentText() or "auto"}
        return {"images": images, "labels": snapshot_labels(labels, frames), "base": str(base), "out": str(out),
                "options": options, "work": str(finetune_run_folder(out))}

    def run(self) -> Any:
        """Check the inputs and start the fine-tuning worker; returns it (None when refused)."""
        if self.worker is not None:
            show_info("fine-tuning is already running: Stop it first")
            return None
        try:
            request = self.request()
        except (ValueError, FileNotFoundError) as error:
            show_error(str(error))
            return None
        stop = self._stop_event
        stop.clear()
        relay = self._relay

        def on_progress(iteration: int, total: int, loss: float) -> None:
            relay.progressed.emit(iteration, total, loss)

        worker_box: list[Any] = []
        what = (f"fine-tuning {Path(request['base']).name} on '{self.image_combo.currentText()}' and "
                f"'{self.labels_combo.currentText()}'")
        worker = self.workers.track(create_worker(
            guarded_call, what, run_finetune, **request, on_progress=on_progress,
            should_stop=lambda: stop.is_set() or any(w.abort_requested for w in worker_box),
            _start_thread=False,
            _connect={"returned": self._on_returned, "errored": self._on_errored, "finished": self._on_finished},
        ))
        worker_box.append(worker)
        self.worker = worker
        self._last_progress = None
        self._options, self._work = request["options"], Path(request["work"])
        total = request["options"]["iterations"]
        self.loss_plot.clear()
        self.loss_plot.set_x_range((0, total))
        self.pbar = progress(total=total, desc="fine-tuning")
        self.status_label.setText(f"starting: {total} iterations on {request['options']['device']}...")
        self._set_running(True)
        worker.start()
        return worker

    def stop(self) -> None:
        """End the run after the current iteration (the checkpoint is still written)."""
        if self.worker is not None:
            self._stop_event.set()
            self.stop_button.setEnabled(False)
            self.status_label.setText("stopping after the current iteration...")

    def _set_running(self, running: bool) -> None:
        for widget in self._inputs:
            widget.setEnabled(not running)
        self.run_button.setEnabled(not running)
        self.stop_button.setEnabled(running)

    def _on_progress(self, iteration: int, total: int, loss: float) -> None:
        self._last_progress = (iteration, total, loss)
        self.loss_plot.append(iteration, loss)
        if self.pbar is not None:
            self.pbar.update(iteration - self.pbar.n)
            self.pbar.set_description(f"fine-tuning (loss {loss:.4f})")
        if not self._stop_event.is_set():
            self.status_label.setText(f"iteration {iteration} / {total}, loss {loss:.4f}")

    def _on_returned(self, path: Path) -> None:
        from .checkpoints import registry

        registry.add(path)
        done = self._last_progress
        early = f" (stopped after {done[0]} of {done[1]} iterations)" if done and done[0] < done[1] else ""
        kept = f"; training log and loss plot in {self._work}" if self._work.is_dir() else ""
        self.status_label.setText(f"saved {path}{early}{kept}")
        show_info(f"fine-tuned checkpoint saved to {path}{early}")

    def _on_errored(self, error: BaseException) -> None:
        if not isinstance(error, JobFailed):  # a JobFailed was logged with its traceback by run_guard
            logger.error("fine-tuning failed", exc_info=error)
        # a JobFailed is an unexpected error already worded by the dock jobs' boundary (run_guard)
        message = str(error) if isinstance(error, JobFailed) else error_message(error, self._options)
        self.status_label.setText(f"failed: {message}")
        show_error(message)

    def _on_finished(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        self.worker = None
        self._set_running(False)
        self._refresh_output()

    def worker_groups(self) -> list[DockWorkers]:
        return [self.workers, self.picker.workers]

    def stop_workers(self) -> None:
        self.stop()  # the run ends after its iteration, the checkpoint is still written
        super().stop_workers()

