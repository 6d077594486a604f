"""The Propagate dock's controls and their layout, top to bottom: the inputs and options (a form,
one row each: :meth:`PropagateControls.option_rows`), Run / Cancel, the progress bar, the status
line, the confidence plot, the correction buttons and the export. At 1280x800 all of it shows
without scrolling, with room for one more option row (tests/plugin/test_dock_layout.py). What the
controls do: :class:`napari_rgmp.propagate_widget.PropagateWidget`.
"""

from __future__ import annotations

import napari
from magicgui.widgets import CheckBox, ComboBox, Container
from qtpy.QtWidgets import (
    QComboBox, QFormLayout, QLabel, QMenu, QPushButton, QToolButton, QVBoxLayout, QWidget,
)

from rgmp_model.inference.choices import DEFAULT_DIRECTION, DEFAULT_REGION, DIRECTIONS, REGION_MODES, first

from .checkpoint_picker import CheckpointPicker
from .confidence_panel import ConfidencePanel
from .devices import available_devices
from .export import ExportPanel
from .layer_combo import LayerCombo
from .progress_panel import ProgressPanel
from .propagate_tips import TIPS
from .scroll_dock import ScrollDock, row
from .working_size import WorkingSizeSpin

NEW_LAYER = "(new layer)"
NO_BOXES = "(use the labels)"


RUN_OPTION_FIELDS = ("direction", "region", "device", "multiscale", "split_divisions", "adapt")


def run_options_form() -> Container:
    """The run's options as magicgui fields, named by :data:`RUN_OPTION_FIELDS` (their values:
    :meth:`napari_rgmp.propagate_widget.PropagateWidget.options`). Choices and defaults come from
    :mod:`rgmp_model.inference.choices`, devices from :func:`.devices.available_devices`; the dock
    pairs them on its form's rows (:meth:`PropagateControls.option_rows`) so that all of it fits 1280x800."""
    return Container(widgets=[
        ComboBox(name="direction", choices=first(DEFAULT_DIRECTION, DIRECTIONS)),
        ComboBox(name="region", choices=first(DEFAULT_REGION, REGION_MODES)),  # one full-resolution crop per object
        ComboBox(name="device", choices=available_devices()),
        CheckBox(name="multiscale", text="multi-scale"),
        CheckBox(name="split_divisions", text="daughter cells get new ids"),
        CheckBox(name="adapt", text="adapt to the keyframes"),  # test-time adaptation before the frames
    ], labels=False)


class PropagateControls(ScrollDock):
    """The dock's widgets, laid out, with their tooltips (:data:`.propagate_tips.TIPS`); the
    subclass connects them and provides ``export_source`` (what the export panel writes)."""

    viewer: napari.viewer.Viewer

    def _build(self) -> None:
        self.image_combo = LayerCombo(self.viewer, napari.layers.Image)
        self.axis_combo = QComboBox()
        self.labels_combo = LayerCombo(self.viewer, napari.layers.Labels)
        self.open_labels_button = QPushButton("open...")
        menu = QMenu(self.open_labels_button)
        self.open_file_action = menu.addAction("a label image or stack...")
        self.open_folder_action = menu.addAction("a folder of label images...")
        self.open_labels_button.setMenu(menu)
        self.boxes_combo = LayerCombo(self.viewer, napari.layers.Shapes, none_text=NO_BOXES)
        self.keyframes_label = QLabel()
        self.keyframes_label.setWordWrap(True)
        self.flat_frame_button = QToolButton(text="use frame shown")
        self.picker = CheckpointPicker("RGMP checkpoint")
        self.checkpoint_combo, self.checkpoint_info = self.picker.combo, self.picker.info_label
        self.run_options = run_options_form()  # magicgui fields; their Qt widgets below, laid out in rows
        (self.direction_combo, self.region_combo, self.device_combo, self.multiscale_check, self.split_check,
         self.adapt_check) = (self.run_options[name].native for name in RUN_OPTION_FIELDS)
        self.max_size_spin = WorkingSizeSpin()  # the model's working size until the user sets one
        self.output_combo = LayerCombo(self.viewer, napari.layers.Labels, none_text=NEW_LAYER)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        for label, widget in self.option_rows():
            form.addRow(label, widget)
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)
        self.progress_panel = ProgressPanel()
        self.confidence_panel = ConfidencePanel()
        self.plot = self.confidence_panel.plot
        self.least_button = QPushButton("Go to least confident")
        self.keyframe_button = QPushButton("Use frame as keyframe")
        self.export_panel = ExportPanel(self.export_source)
        layout = QVBoxLayout(self.body)
        layout.addLayout(form)
        for widget in (row(self.run_button, self.cancel_button), self.progress_panel, self.status_label,
                       self.confidence_panel, row(self.least_button, self.keyframe_button), self.export_panel):
            layout.addWidget(widget, 1 if widget is self.confidence_panel else 0)  # the plot takes the room left
        for name, tip in TIPS.items():
            getattr(self, name).setToolTip(tip)

    def option_rows(self) -> list[tuple[str, QWidget]]:
        """The form's rows, top to bottom: (label, field). One more option is one more row here
        (the dock has room for it at 1280x800, tests/plugin/test_dock_layout.py)."""
        return [
            ("image", self.image_combo),
            ("axis", self.axis_combo),
            ("labels", row(self.labels_combo, self.open_labels_button)),
            ("or boxes", self.boxes_combo),
            ("keyframes", row(self.keyframes_label, self.flat_frame_button)),
            ("model", self.picker),
            ("direction", row(self.direction_combo, QLabel("region mode"), self.region_combo)),
            ("device", row(self.device_combo, QLabel("working size"), self.max_size_spin)),
            ("", row(self.multiscale_check, self.split_check)),
            ("", self.adapt_check),
            ("output", self.output_combo),
        ]
