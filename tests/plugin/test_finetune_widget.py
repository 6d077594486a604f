"""The Fine-tune dock widget and the LinePlot chart (CPU, tiny random model, generated video)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qtpy.QtCore import QPoint, Qt, QThreadPool

from napari_rgmp.finetune_defaults import default_output
from napari_rgmp.finetune_job import OUT_OF_MEMORY, error_message
from napari_rgmp.plots import LinePlot, envelope, finite_runs, nice_ticks
from tests.helpers.finetune_dock import WAIT_MS, base, configure, make_widget, notes, video, wait_done  # noqa: F401


# ---------------------------------------------------------------------------------- runs
def test_run_writes_checkpoint_and_registers_it(make_widget, qtbot, base, tmp_path, notes):
    from rgmp_model import read_checkpoint_info

    from napari_rgmp.checkpoints import registry

    viewer, widget = make_widget()
    image_before = viewer.layers["frames"].data.copy()
    labels_before = viewer.layers["masks"].data.copy()
    out = tmp_path / "adapted.pt"
    configure(widget, base, out, iterations=4)
    qtbot.waitUntil(lambda: "ResNet-18" in widget.checkpoint_info.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: widget.frames_label.text() == "training frames: 0, 3", timeout=5000)

    worker = widget.run()
    assert worker is not None and widget.worker is worker
    assert not widget.run_button.isEnabled() and widget.stop_button.isEnabled()
    wait_done(qtbot, widget)

    info = read_checkpoint_info(out)
    assert info.metadata["iterations"] == 4
    assert info.metadata["frames_used"] == [0, 3]
    xs, ys = widget.loss_plot.data()
    assert list(xs) == [1, 2, 3, 4] and np.all(np.isfinite(ys)) and widget.loss_plot.x_range() == (0, 4)
    assert widget.pbar is not None and widget.pbar.n == widget.pbar.total == 4 and widget.pbar.disable
    assert out.resolve() in registry.paths()
    assert any(str(out) in message for message in notes())
    assert widget.run_button.isEnabled() and not widget.stop_button.isEnabled()
    np.testing.assert_array_equal(viewer.layers["frames"].data, image_before)
    np.testing.assert_array_equal(viewer.layers["masks"].data, labels_before)
    assert not widget.grab().isNull()


def test_stop_ends_the_run_early_and_still_saves(make_widget, qtbot, base, tmp_path, notes):
    from rgmp_model import read_checkpoint_info

    _, widget = make_widget()
    out = tmp_path / "stopped.pt"
    configure(widget, base, out, iterations=30)
    widget.progressed.connect(lambda *_: widget.stop())
    assert widget.run() is not None
    wait_done(qtbot, widget)

    iterations = read_checkpoint_info(out).metadata["iterations"]
    assert 1 <= iterations < 30
    assert len(widget.loss_plot) == iterations
    assert any("stopped after" in message for message in notes()), notes()


def test_closing_the_viewer_stops_the_worker(make_widget, qtbot, base, tmp_path):
    from rgmp_model import read_checkpoint_info

    viewer, widget = make_widget()
    out = tmp_path / "closed.pt"
    configure(widget, base, out, iterations=30)
    with qtbot.waitSignal(widget.progressed, timeout=WAIT_MS):
        widget.run()
    viewer.close()
    assert QThreadPool.globalInstance().waitForDone(WAIT_MS)
    qtbot.wait(20)
    assert read_checkpoint_info(out).metadata["iterations"] < 30


def test_closing_the_panel_stops_the_run(make_widget, qtbot, base, tmp_path, notes):
    from rgmp_model import read_checkpoint_info

    viewer, widget = make_widget()
    out = tmp_path / "panel-closed.pt"
    configure(widget, base, out, iterations=30)
    with qtbot.waitSignal(widget.progressed, timeout=WAIT_MS):
        widget.run()
    viewer.window.remove_dock_widget(widget)  # what the panel's close button does
    wait_done(qtbot, widget)
    assert read_checkpoint_info(out).metadata["iterations"] < 30
    assert any("stopped after" in message for message in notes()), notes()


# ---------------------------------------------------------------------------------- errors
def _foreign_text(path: Path) -> None:
    path.write_text("not a checkpoint\n")


def _foreign_dict(path: Path) -> None:
    import torch

    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, path)


def _foreign_tensors(path: Path) -> None:
    import torch

    torch.save({"fc.weight": torch.zeros(2, 2)}, path)


@pytest.mark.parametrize(
    ("make_file", "expected"),
    [
        (None, "does not exist"),
        (_foreign_text, "cannot be read as a PyTorch checkpoint"),
        (_foreign_dict, "neither a napari-rgmp checkpoint nor a state dict"),
        (_foreign_tensors, "does not fit"),
    ],
    ids=["missing", "text-file", "unrelated-keys", "unrelated-tensors"],
)
def test_bad_checkpoint_is_a_notification(make_widget, qtbot, tmp_path, notes, make_file, expected):
    _, widget = make_widget()
    path = tmp_path / "model.pt"
    if make_file is not None:
        make_file(path)
    configure(widget, path, tmp_path / "out.pt", iterations=2)
    widget.run()  # refused at once, or the worker fails on the file: a notification either way
    qtbot.waitUntil(lambda: widget.worker is None and any(expected in m for m in notes()), timeout=WAIT_MS)
    assert not (tmp_path / "out.pt").exists()
    assert widget.run_button.isEnabled()


def test_unreadable_checkpoint_is_described_and_refused(make_widget, qtbot, tmp_path, notes):
    _, widget = make_widget()
    path = tmp_path / "notes.pt"
    _foreign_text(path)
    configure(widget, path, tmp_path / "out.pt", iterations=2)
    qtbot.waitUntil(lambda: widget.checkpoint_info.text().startswith("not usable"), timeout=WAIT_MS)
    assert widget.run() is None
    assert any("cannot be read" in m for m in notes())


@pytest.mark.parametrize(
    ("image", "labels", "expected"),
    [
        (None, "video", "choose an Image layer"),
        ("video", None, "choose a Labels layer"),
        ("video", np.zeros((6, 64, 80), np.uint16), "has no labels"),
        ("video", np.ones((6, 32, 40), np.uint16), "has shape (6, 32, 40)"),
    ],
    ids=["no-image", "no-labels", "no-labelled-frame", "shape-mismatch"],
)
def test_bad_layers_are_a_notification(make_widget, qtbot, base, tmp_path, notes, image, labels, expected):
    _, widget = make_widget(image=image, labels=labels)
    configure(widget, base, tmp_path / "out.pt", iterations=2)
    assert widget.run() is None
    assert widget.worker is None
    assert any(expected in message for message in notes()), notes()
    qtbot.waitUntil(lambda: expected in widget.frames_label.text(), timeout=5000)


def test_output_must_not_overwrite_the_base(make_widget, base, notes):
    _, widget = make_widget()
    configure(widget, base, base, iterations=2)
    assert widget.run() is None
    assert any("overwrite the base checkpoint" in m for m in notes())


def test_crop_size_must_be_a_multiple_of_32(make_widget, base, tmp_path, notes):
    _, widget = make_widget()
    configure(widget, base, tmp_path / "tuned.pt", iterations=2)
    widget.crop_size.setValue(100)
    assert widget.run() is None and widget.worker is None
    assert any("crop size 100 px is not a multiple of 32: use e.g. 96 px" in m for m in notes()), notes()


def test_out_of_memory_is_explained(make_widget, qtbot, base, tmp_path, notes, monkeypatch):
    import torch
    import training.finetune

    def out_of_memory(*_: Any, **__: Any) -> Path:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(training.finetune, "finetune_on_stack", out_of_memory)
    _, widget = make_widget()
    configure(widget, base, tmp_path / "out.pt", iterations=2)
    assert widget.run() is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert any(m.startswith(OUT_OF_MEMORY) and "batch size (now 2)" in m for m in notes()), notes()
    assert error_message(RuntimeError("MPS backend out of memory")).startswith(OUT_OF_MEMORY)
    assert error_message(MemoryError()).startswith(OUT_OF_MEMORY)
    assert error_message(ValueError("label a frame")) == "label a frame"


# ---------------------------------------------------------------------------------- controls
def test_training_frames_follow_the_labels(make_widget, qtbot, video):
    viewer, widget = make_widget()
    qtbot.waitUntil(lambda: widget.frames_label.text() == "training frames: 0, 3", timeout=5000)
    labels = video[1].copy()
    labels[5, 10:20, 10:20] = 7
    viewer.layers["masks"].data = labels
    qtbot.waitUntil(lambda: widget.frames_label.text() == "training frames: 0, 3, 5", timeout=5000)
    assert widget.axis_combo.isHidden()


def test_axis_choice_for_4d_stacks(make_widget, qtbot):
    image = np.zeros((2, 5, 32, 40), np.uint8)
    labels = np.zeros((2, 5, 32, 40), np.uint16)
    labels[0, 1, 5:15, 5:15] = 1
    viewer, widget = make_widget(image=None, labels=labels)
    viewer.add_image(image, name="volume")
    widget.image_combo.set_layer("volume")
    assert not widget.axis_combo.isHidden() and widget.axis_combo.count() == 2
    widget.axis_combo.setCurrentIndex(widget.axis_combo.findData(1))
    qtbot.waitUntil(lambda: widget.frames_label.text() == "training frames: 1", timeout=5000)
    widget.axis_combo.setCurrentIndex(widget.axis_combo.findData(0))  # axis 1 fixed at the viewer's position
    viewer.dims.current_step = (0, 3, 0, 0)
    qtbot.waitUntil(lambda: widget.frames_label.text().startswith("training frames: none"), timeout=5000)
    viewer.dims.current_step = (0, 1, 0, 0)
    qtbot.waitUntil(lambda: widget.frames_label.text() == "training frames: 0", timeout=5000)


def test_defaults_device_list_and_output_name(make_widget, base):
    _, widget = make_widget()
    assert widget.iterations.value() == 100
    assert float(widget.learning_rate.text()) == pytest.approx(5e-5)
    devices = [widget.device.itemText(i) for i in range(widget.device.count())]
    assert devices[:2] == ["auto", "cpu"] and widget.device.currentText() == "auto"
    widget.set_base_checkpoint(base)
    from rgmp_model.nn.models import user_models_dir

    today = datetime.date.today().isoformat()
    assert widget.output_path.text() == str(user_models_dir() / f"frames-finetuned-{today}.pt")


def test_default_output_is_never_an_existing_file(tmp_path):
    day = datetime.date(2026, 11, 29)
    assert default_output("cells 1/2", tmp_path, day) == tmp_path / "cells-1-2-finetuned-2026-11-29.pt"
    (tmp_path / "cells-1-2-finetuned-2026-11-29.pt").write_bytes(b"")
    assert default_output("cells 1/2", tmp_path, day) == tmp_path / "cells-1-2-finetuned-2026-11-29-2.pt"
    assert default_output(None, tmp_path, day).name == "rgmp-finetuned-2026-11-29.pt"


# ---------------------------------------------------------------------------------- LinePlot
def test_line_plot_data_and_append(qtbot):
    plot = LinePlot(title="loss")
    qtbot.addWidget(plot)
    plot.set_data([0, 1, 2], [3.0, 2.0, 1.0])
    plot.append(3, 0.5)
    xs, ys = plot.data()
    assert list(xs) == [0, 1, 2, 3] and list(ys) == [3.0, 2.0, 1.0, 0.5] and len(plot) == 4
    assert plot.x_range() == (0, 3)
    plot.set_x_range((0, 300))  # a live curve filling its final axis
    assert plot.x_range() == (0, 300) and plot.x_at(plot.plot_rect().right()) == pytest.approx(300)
    plot.clear()
    assert len(plot) == 0 and plot.x_range() is None
    with pytest.raises(ValueError):
        plot.set_data([0, 1], [1.0])
    with pytest.raises(ValueError):
        plot.set_y_range((1.0, 0.0))
    assert plot.minimumHeight() >= 120


def test_line_plot_click_emits_the_x_under_the_mouse(qtbot):
    plot = LinePlot(title="confidence", x_label="frame", y_range=(0.0, 1.0))
    qtbot.addWidget(plot)
    plot.resize(400, 160)
    plot.show()
    qtbot.waitExposed(plot)
    plot.set_data(range(100), np.linspace(0, 1, 100))
    rect = plot.plot_rect()
    position = QPoint(round(plot.pixel_of(42.0)), round(rect.center().y()))
    with qtbot.waitSignal(plot.clicked, timeout=2000) as blocker:
        qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=position)
    step = 99 / rect.width()  # data units per pixel
    assert blocker.args[0] == pytest.approx(42.0, abs=2 * step)


def test_line_plot_paints_empty_single_and_many_points(qtbot):
    plot = LinePlot(title="loss", x_label="iteration", y_label="loss")
    qtbot.addWidget(plot)
    plot.resize(300, 140)
    assert not plot.grab().isNull()  # no data
    received: list[float] = []
    plot.clicked.connect(received.append)
    qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(150, 70))
    assert received == []  # nothing to click on without data
    plot.append(1, 0.5)
    plot.set_marker(1)
    assert not plot.grab().isNull()  # one point
    ys = np.sin(np.arange(20000) / 50.0)
    ys[500:600] = np.nan
    plot.set_data(np.arange(20000), ys)
    plot.set_marker(12345)
    assert plot.marker() == 12345
    assert not plot.grab().isNull()  # decimated, with a gap


def test_line_plot_helpers():
    assert nice_ticks(0, 10, 5) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0.0, 1.0, 4) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0.0, 1.0, 2) == pytest.approx([0.0, 0.5, 1.0])
    assert nice_ticks(3.0, 3.0, 4) == [3.0]
    px = np.linspace(0, 99.9, 10000)
    xs, ys = envelope(px, np.sin(px), 100)
    assert len(xs) == 200 and ys.max() == pytest.approx(1.0, abs=1e-3)
    assert [(s.start, s.stop) for s in finite_runs(np.array([1, np.nan, 2, 3, np.inf]))] == [(0, 1), (2, 4)]
