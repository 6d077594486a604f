"""Export the propagated labels from the Propagate dock: a label TIFF (the whole output layer) or
the Cell Tracking Challenge result layout (the propagated stack: ``mask000.tif`` ...,
``res_track.txt`` with the divisions as parents).

The panel asks for the target with a file dialog, checks that it is no input file, and writes in
a napari thread worker; the worker reads the array it is given, never the layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QWidget

from .workers import DockWorkers

KINDS = ("tiff", "ctc")


@dataclass(frozen=True)
class ExportSource:
    """What can be exported: ``labels`` the output layer's data (N-D), ``stack`` its propagated
    (T, H, W) frames, ``parents`` {daughter id: mother id}, ``inputs`` the files the viewer's layers
    came from (never written), ``name`` the output layer's name."""

    labels: Any
    stack: Any
    name: str
    parents: Mapping[int, int] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportJob:
    kind: str  # "tiff" or "ctc"
    target: str
    source: ExportSource


def write_label_tiff(path: str, labels: Any) -> None:
    """An N-D (..., H, W) label array -> one label TIFF, written one 2-D frame at a time."""
    from rgmp_model.io.outputs import open_writer

    shape = tuple(int(n) for n in labels.shape)
    with open_writer(path, "tif", shape, labels.dtype) as writer:
        for index in np.ndindex(*shape[:-2]):
            writer[index] = np.asarray(labels[index])


def run_export(job: ExportJob) -> str | None:
    """The worker: write the export; returns the failure message (None when it worked)."""
    from rgmp_model.io.ctc_export import write_ctc

    try:
        if job.kind == "ctc":
            write_ctc(job.target, job.source.stack, parents=job.source.parents)
        else:
            write_label_tiff(job.target, job.source.labels)
    except (ValueError, OSError) as error:
        return f"export to {job.target} failed: {error}"
    return None


class ExportPanel(QWidget):
    """Two buttons: "Export label TIFF..." and "Export CTC result...". ``provider()`` returns the
    :class:`ExportSource`, or raises ValueError saying what to do first."""

    def __init__(self, provider: Callable[[], ExportSource]) -> None:
        super().__init__()
        self.provider = provider
        self.worker: Any = None
        self.workers = DockWorkers()  # awaited when the dock closes (an export is never cut short)
        self.tiff_button = QPushButton("Export label TIFF...")
        self.ctc_button = QPushButton("Export CTC result...")
        self.tiff_button.setToolTip("save the output layer as one label TIFF (every frame, the ids as they are)")
        self.ctc_button.setToolTip("save the propagated stack in the Cell Tracking Challenge result layout "
                                   "(mask000.tif ..., res_track.txt with the divisions as parents)")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tiff_button)
        layout.addWidget(self.ctc_button)
        self.tiff_button.clicked.connect(lambda *_: self.export("tiff"))
        self.ctc_button.clicked.connect(lambda *_: self.export("ctc"))

    def _ask(self, kind: str, name: str) -> str:
        if kind == "ctc":
            return QFileDialog.getExistingDirectory(self, "Cell Tracking Challenge result folder (an empty one)")
        from rgmp_model.io.formats import format_named

        suffixes = format_named("tif").suffixes
        path, _ = QFileDialog.getSaveFileName(self, "Save the labels as a TIFF", f"{name}{suffixes[0]}",
                                              f"Label TIFF ({' '.join('*' + s for s in suffixes)})")
        return path if not path or path.lower().endswith(suffixes) else path + suffixes[0]

    def export(self, kind: str) -> None:
        """Ask for the target and write ``kind`` ("tiff" or "ctc") in a worker."""
        from rgmp_model.io.outputs import check_not_input

        if self.worker is not None:
            show_error("an export is running: wait for it to finish")
            return
        try:
            source = self.provider()
            target = self._ask(kind, source.name)
            if not target:
                return
            check_not_input(target, source.inputs, "the export")
        except ValueError as error:
            show_error(str(error))
            return
        worker = self.workers.track(create_worker(run_export, ExportJob(kind, str(target), source), _start_thread=False))
        worker.returned.connect(lambda failure: show_error(failure) if failure else show_info(f"RGMP: labels exported to {target}"))
        worker.finished.connect(self._finished)
        self.worker = worker
        self._enable(False)
        worker.start()

    def _finished(self) -> None:
        self.worker = None
        self._enable(True)

    def _enable(self, enabled: bool) -> None:
        self.tiff_button.setEnabled(enabled)
        self.ctc_button.setEnabled(enabled)
