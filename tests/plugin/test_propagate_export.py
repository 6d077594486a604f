"""The Propagate dock's region choice, its exports (label TIFF, Cell Tracking Challenge layout) and
its on-disk output layer above the memory budget, in a real viewer (xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from napari.utils.notifications import notification_manager

from napari_rgmp import export as export_module
from napari_rgmp.output_store import DEFAULT_OUTPUT_BUDGET, OutputPolicy
from rgmp_model import PropagationOptions
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
from rgmp_model.io.ctc_export import read_ctc
from tests.helpers.ctc_checks import assert_valid_ctc
from tests.helpers.docks import engine_output, errors_since, propagate_dock_with, run_and_wait


@pytest.fixture(scope="module")
def cells():
    """A grey uint16 time-lapse of 6 frames, labels on frame 0."""
    sequence = synthetic_microscopy(num_frames=6, height=64, width=64, num_cells=3, seed=2)
    labels = np.zeros(sequence.labels.shape, np.uint16)
    labels[0] = sequence.labels[0]
    return sequence.frames, labels


def open_cells(make_napari_viewer, checkpoint, cells):
    viewer = make_napari_viewer()
    return viewer, propagate_dock_with(viewer, *cells, checkpoint, image="cells")


def test_the_region_choice_reaches_the_session_options(make_napari_viewer, qtbot, checkpoint, cells) -> None:
    viewer, widget = open_cells(make_napari_viewer, checkpoint, cells)
    assert widget.region_combo.currentText() == "auto" and widget.options().region == "auto"
    widget.region_combo.setCurrentText("off")
    assert not widget.split_check.isEnabled()  # divisions are split in region mode only
    run_and_wait(qtbot, widget)
    assert widget.session.options.region == "off" and not widget.session.options.split_divisions
    widget.region_combo.setCurrentText("on")
    widget.split_check.setChecked(True)
    assert widget.options() == PropagationOptions(direction="both", device="cpu", region="on", split_divisions=True)
    run_and_wait(qtbot, widget)
    assert widget.session.options.region == "on" and widget.session.options.split_divisions
    assert viewer.layers["objects propagated"].data[1:].any()


def test_export_writes_a_ctc_folder_and_a_label_tiff(make_napari_viewer, qtbot, checkpoint, cells, tmp_path, monkeypatch) -> None:
    viewer, widget = open_cells(make_napari_viewer, checkpoint, cells)
    start = len(notification_manager.records)
    widget.export_panel.ctc_button.click()
    assert "run a propagation first" in " ".join(errors_since(start))
    run_and_wait(qtbot, widget)
    output = np.asarray(viewer.layers["objects propagated"].data)
    folder = tmp_path / "01_RES"
    folder.mkdir()
    monkeypatch.setattr(export_module.QFileDialog, "getExistingDirectory", staticmethod(lambda *args, **kw: str(folder)))
    widget.export_panel.ctc_button.click()
    qtbot.waitUntil(lambda: widget.export_panel.worker is None, timeout=60_000)
    read, tracks = read_ctc(folder)
    assert_valid_ctc(read, tracks)
    assert read.shape == output.shape
    np.testing.assert_array_equal(read > 0, output > 0)
    for t in range(len(output)):  # the same objects (a track broken by a gap gets a new label)
        for old in np.unique(output[t][output[t] > 0]):
            assert len(np.unique(read[t][output[t] == old])) == 1
    start = len(notification_manager.records)
    widget.export_panel.ctc_button.click()  # the folder is not empty any more: refused, nothing written over
    qtbot.waitUntil(lambda: widget.export_panel.worker is None, timeout=60_000)
    assert "not empty" in " ".join(errors_since(start))
    monkeypatch.setattr(export_module.QFileDialog, "getSaveFileName",
                        staticmethod(lambda *args, **kw: (str(tmp_path / "labels"), "Label TIFF (*.tif *.tiff)")))
    widget.export_panel.tiff_button.click()
    qtbot.waitUntil(lambda: widget.export_panel.worker is None, timeout=60_000)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), output)
    np.testing.assert_array_equal(viewer.layers["objects"].data, cells[1])  # the input layer is untouched


def test_an_output_above_the_memory_budget_is_a_zarr_store_on_disk(make_napari_viewer, qtbot, checkpoint, cells, tmp_path) -> None:
    assert OutputPolicy().budget == DEFAULT_OUTPUT_BUDGET == 2 * 1024**3
    frames, labels = cells
    viewer, widget = open_cells(make_napari_viewer, checkpoint, cells)
    cache = tmp_path / "cache"
    widget.output_policy = OutputPolicy(budget=labels.nbytes - 1, folder=cache)  # just too big for memory
    run_and_wait(qtbot, widget)
    layer = viewer.layers["objects propagated"]
    assert isinstance(layer.data, zarr.Array)
    (store,) = cache.iterdir()
    assert store.suffix == ".zarr" and zarr.open(str(store), mode="r").chunks == (1, 64, 64)
    expected = engine_output(checkpoint, frames, {0: labels[0]})
    for t, frame_labels in expected.items():
        np.testing.assert_array_equal(layer.data[t], frame_labels)
    corrected = np.asarray(layer.data[3]).copy()  # the correction loop reads and writes the store
    corrected[:8, :8] = corrected.max() or 1
    layer.data[3] = corrected
    viewer.dims.set_current_step(0, 3)
    run_and_wait(qtbot, widget, widget.use_current_frame_as_keyframe)
    np.testing.assert_array_equal(layer.data[3], corrected)
    assert widget.session.keyframes == (0, 3)
    viewer.layers.remove(layer)
    assert not store.exists()  # removing the layer deletes its store
    small = OutputPolicy(folder=cache)
    widget.output_policy = small
    run_and_wait(qtbot, widget)
    assert isinstance(viewer.layers["objects propagated"].data, np.ndarray) and not any(cache.iterdir())
