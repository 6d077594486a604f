"""The docks as a first-time user sees them in a 1280x800 napari window (real viewer, xvfb): the
Propagate dock shows every control and its plot without scrolling, with room for one more option
row; a second napari-rgmp dock becomes a tab beside the first; the model is one line with its
details on demand; the view is fitted to the data after a sample opens and after a dock is added;
the axis choices are named; the status line and the progress bar agree during a run."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, QRect
from qtpy.QtWidgets import QApplication

from tests.helpers.docks import controls, docked_propagate, run_and_wait

WINDOW = (1280, 800)
OPTION_ROW = 40  # px: the height one more form row needs (a combo box and the form's spacing)


def settle(qtbot, ms: int = 300) -> None:
    qtbot.wait(ms)
    QApplication.processEvents()


@pytest.fixture
def viewer_1280x800(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    settle(qtbot)
    return viewer


def dock(viewer, name: str):
    return viewer.window.add_plugin_dock_widget("napari-rgmp", name)


def unreachable(widget) -> list[str]:
    """Controls of a dock hidden under its scroll area's edge (reachable only by scrolling)."""
    viewport = widget.scroll.viewport()
    area = QRect(QPoint(0, 0), viewport.size())
    hidden = []
    for control in controls(widget):
        if not control.isVisibleTo(widget.body):
            continue
        top_left = control.mapTo(viewport, QPoint(0, 0))
        if not area.contains(QRect(top_left, control.size())):
            hidden.append(f"{type(control).__name__} '{getattr(control, 'text', lambda: '')()}'")
    return hidden


def whole_data_on_canvas(viewer) -> bool:
    """The canvas shows all of the data: the drawn part touches no edge of the canvas."""
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    rows, cols = np.nonzero(canvas[..., :3].max(axis=-1) > 8)
    height, width = canvas.shape[:2]
    return rows.size > 0 and rows.min() > 0 and cols.min() > 0 and rows.max() < height - 1 and cols.max() < width - 1


def test_the_propagate_dock_fits_1280x800_without_scrolling(viewer_1280x800, qtbot) -> None:
    viewer = viewer_1280x800
    viewer.open_sample("napari-rgmp", "synthetic_video")
    _, propagate = dock(viewer, "Propagate labels")
    settle(qtbot)
    assert propagate.scroll.verticalScrollBar().maximum() == 0
    assert not unreachable(propagate), unreachable(propagate)
    assert propagate.plot.isVisible() and propagate.plot.height() >= propagate.plot.minimumHeight()
    # room for one more option row (the dock's layout takes one more row in option_rows)
    spare = propagate.scroll.viewport().height() - propagate.body.minimumSizeHint().height()
    assert spare >= OPTION_ROW, spare


def test_a_second_dock_is_a_tab_and_each_fits(viewer_1280x800, qtbot) -> None:
    viewer = viewer_1280x800
    viewer.open_sample("napari-rgmp", "synthetic_video")
    propagate_dock, propagate = dock(viewer, "Propagate labels")
    finetune_dock, finetune = dock(viewer, "Fine-tune")
    settle(qtbot)
    window = viewer.window._qt_window
    assert window.tabifiedDockWidgets(finetune_dock) == [propagate_dock]
    assert finetune.isVisible() and not unreachable(finetune)
    propagate_dock.raise_()
    settle(qtbot)
    assert propagate.isVisible() and propagate.scroll.verticalScrollBar().maximum() == 0
    assert not unreachable(propagate)


def test_the_model_is_one_line_with_details_on_demand(viewer_1280x800, qtbot) -> None:
    viewer = viewer_1280x800
    _, propagate = dock(viewer, "Propagate labels")
    picker = propagate.picker
    qtbot.waitUntil(lambda: "·" in picker.info_label.text(), timeout=60_000)  # read in a worker
    settle(qtbot)
    line = picker.info_label
    assert "\n" not in line.text() and line.height() <= 2 * line.fontMetrics().height()
    assert not picker.details_label.isVisible()
    picker.details_button.click()
    settle(qtbot)
    assert picker.details_label.isVisible()
    assert "trained on" in picker.details_label.text() and "working size" in picker.details_label.text()


def test_the_view_is_fitted_after_a_sample_opens_and_after_a_dock_is_added(viewer_1280x800, qtbot) -> None:
    viewer = viewer_1280x800
    viewer.add_image(np.full((8, 8), 200, np.uint8), name="small")  # napari fits the view to it
    settle(qtbot)
    viewer.open_sample("napari-rgmp", "synthetic_video")  # 320 x 240: cut off at the small image's zoom
    settle(qtbot)
    assert whole_data_on_canvas(viewer)
    viewer.layers.remove("small")
    viewer.reset_view()
    settle(qtbot)
    viewer.scene.camera.zoom *= 1.02  # fitted to the full-width canvas, as before a dock opens
    dock(viewer, "Propagate labels")
    settle(qtbot)
    assert whole_data_on_canvas(viewer)


def test_axis_choices_are_named(make_napari_viewer) -> None:
    from napari_rgmp.layers import axis_choices

    viewer = make_napari_viewer()
    clip = viewer.add_image(np.zeros((40, 24, 32, 3), np.uint8), rgb=True, name="clip")
    assert axis_choices(viewer, clip) == [("time, 40 frames", 0)]
    tzyx = viewer.add_image(np.zeros((3, 5, 24, 32), np.uint8), name="tzyx")
    assert axis_choices(viewer, tzyx) == [("time, 3 frames", 0), ("z, 5 frames", 1)]
    viewer.dims.axis_labels = ("t", "depth", "y", "x")  # the user's names win
    assert axis_choices(viewer, tzyx) == [("t, 3 frames", 0), ("depth, 5 frames", 1)]


def test_the_status_line_and_the_bar_agree(make_napari_viewer, qtbot, checkpoint) -> None:
    _, _, widget = docked_propagate(make_napari_viewer, checkpoint, num_frames=6, seed=2)
    seen: list[tuple[str, str]] = []
    widget.run()
    # after the dock's own handler, each frame: what the status line and the bar say
    status, bar = widget.status_label, widget.progress_panel.bar  # (the worker must not hold the viewer)
    widget.worker.yielded.connect(lambda *_: seen.append((status.text(), bar.text())))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert len(seen) == 6  # the keyframe is written too
    for said, shown in seen:  # "running: frame 3 written (4 / 6 frames)" beside "4 / 6 frames, ..."
        assert "starting" not in said and shown.split(",")[0] in said, (said, shown)
    assert widget.status_label.text().startswith("done: 6 / 6 frames")


def test_the_propagate_dock_fits_after_a_correction(viewer_1280x800, qtbot, checkpoint) -> None:
    """The state of docs/images/propagate-corrected.png, at its worst: the Fine-tune dock a tab
    beside it (its tab bar takes height), a run, a frame corrected and taken as a keyframe, the
    second run done (two-line status), and objects lost on five frames (the longest lost note)."""
    from napari_rgmp.samples import sample_video_sequence

    viewer = viewer_1280x800
    viewer.open_sample("napari-rgmp", "synthetic_video")
    propagate_dock, propagate = dock(viewer, "Propagate labels")
    dock(viewer, "Fine-tune")
    settle(qtbot)
    propagate_dock.raise_()
    propagate.set_checkpoint(checkpoint)
    propagate.device_combo.setCurrentText("cpu")
    run_and_wait(qtbot, propagate)
    frame = propagate.least_confident_frame()
    propagate.go_to_frame(frame)
    propagate.output_layer.data[frame] = sample_video_sequence().labels[frame]  # the user's correction
    run_and_wait(qtbot, propagate, propagate.use_current_frame_as_keyframe)
    panel = propagate.confidence_panel
    for t in range(2, 12, 2):  # objects lost on frames 3, 5, 7, 9, 11 (tracked on the frame before)
        panel.add(t, {1: 0.9, 2: 0.8})
        panel.add(t + 1, {1: 0.0, 2: 0.8})
    panel.redraw()
    settle(qtbot)
    assert "corrected" in propagate.keyframes_label.text() and "more frames" in panel.lost_label.text()
    assert panel.lost_label.isVisible() and propagate.status_label.text().startswith("done")
    assert propagate.scroll.verticalScrollBar().maximum() == 0, (propagate.body.height(),
                                                                 propagate.scroll.viewport().height())
    assert not unreachable(propagate), unreachable(propagate)
    assert propagate.plot.height() >= propagate.plot.minimumHeight()
