"""Open a label file or a folder of label images as a Labels layer, on request.

napari offers napari-rgmp's reader only for names that say labels (see :mod:`.file_io`); every
other label file (a DAVIS annotation ``00000.png``, a folder ``Annotations/480p/<seq>``, a label
TIFF with any name) opens here: *File > IO Utilities > Open labels (file)...* / *(folder)...*
(commands in ``napari.yaml``) and the Propagate dock's "open..." button. The layer records its
file as its source, so exports never write over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from napari.utils.notifications import show_error
from qtpy.QtWidgets import QFileDialog, QWidget

from .file_io import label_file_formats, read_labels



def label_filter() -> str:
    """The file dialog's filter: the label file formats of the registry (see :func:`.file_io.label_file_formats`)."""
    names = " ".join(f"*{s}" for f in label_file_formats() for s in f.suffixes)
    return f"Label images ({names});;All files (*)"


def add_labels(viewer: Any, path: str | Path) -> Any:
    """Add the labels of ``path`` (see :func:`.file_io.read_labels`) to ``viewer`` as a Labels
    layer whose source is ``path``; returns the layer. ValueError / FileNotFoundError as read_labels."""
    data, meta, _ = read_labels(path)
    try:
        from napari.layers._source import layer_source
    except ImportError:  # another napari: the layer works, without its source path
        return viewer.add_labels(data, **meta)
    with layer_source(path=str(path), reader_plugin="napari-rgmp"):
        return viewer.add_labels(data, **meta)


def _start_folder() -> str:
    try:
        from napari.utils.history import get_open_history

        return str(get_open_history()[0])
    except (ImportError, IndexError):
        return str(Path.home())


def _remember(path: str) -> None:
    try:
        from napari.utils.history import update_open_history

        update_open_history(path)
    except ImportError:
        pass


def open_chosen_labels(viewer: Any, folder: bool, parent: QWidget | None = None) -> Any:
    """Ask for a label file (or a folder of label images when ``folder``) and add it; errors are
    notifications. Returns the new layer, or None."""
    if folder:
        path = QFileDialog.getExistingDirectory(parent, "Open a folder of label images as Labels", _start_folder())
    else:
        path, _ = QFileDialog.getOpenFileName(parent, "Open a label image or stack as Labels", _start_folder(),
                                              label_filter())
    if not path:
        return None
    _remember(path)
    try:
        return add_labels(viewer, path)
    except (ValueError, FileNotFoundError) as error:
        show_error(f"{Path(path).name} did not open as labels: {error}")
        return None


def open_label_file(viewer: napari.viewer.Viewer) -> None:
    """npe2 command (File > IO Utilities): a label image or stack as a Labels layer."""
    open_chosen_labels(viewer, folder=False)


def open_label_folder(viewer: napari.viewer.Viewer) -> None:
    """npe2 command (File > IO Utilities): a folder of label images (DAVIS annotations) as one
    (T, H, W) Labels layer."""
    open_chosen_labels(viewer, folder=True)
