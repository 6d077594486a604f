"""The Propagate dock under a user's hands (issue 24), in a real viewer (xvfb): what the user does
while a propagation runs, and the end state each case is defined to reach (napari_rgmp/run_watch.py):

- output layer deleted / its data replaced, image layer deleted / replaced: the run is CANCELLED,
  a warning says why, no frame is written after it (nor into any other layer);
- labels layer deleted / replaced, model or device changed: the run KEEPS GOING to the end with
  what it started with, an info says so;
- Run pressed twice: an info, ONE run;
- dock closed: the run stops, no frame written after the close;
- painting on the output layer: the painted frames are KEPT as painted.

Every case also checks: no error notification, nothing logged at ERROR, no uncaught exception
(pytest-qt fails the test on one) and the input layers unchanged."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_rgmp.propagate_widget import PropagateWidget
from rgmp_model import PropagationSession, build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.data.synthetic import synthetic_video
from tests.helpers.docks import labels_on, propagate_dock_with

H, W, T = 64, 80, 24
AFTER = 2  # frames written before the user acts


@pytest.fixture(scope="module")
def clip():
    return synthetic_video(num_frames=T, height=H, width=W, num_objects=2, seed=5)


def clip_in_dock(make_napari_viewer, checkpoint, clip):
    """A viewer with the clip, its frame-0 labels and the Propagate dock docked (CPU)."""
    viewer = make_napari_viewer()
    return viewer, propagate_dock_with(viewer, clip.frames, labels_on(clip.labels), checkpoint)


@pytest.fixture
def dock(make_napari_viewer, checkpoint, clip, caplog):
    """A viewer with the clip, its frame-0 labels and the Propagate dock (forward, CPU)."""
    viewer, widget = clip_in_dock(make_napari_viewer, checkpoint, clip)
    widget.direction_combo.setCurrentText("forward")
    caplog.set_level(logging.ERROR)
    start = len(notification_manager.records)
    yield viewer, widget, start
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # no exception logged
    assert notices(start, "ERROR") == []


def notices(start: int, severity: str) -> list[str]:
    return [str(n.message) for n in notification_manager.records[start:] if n.severity.name == severity]


def run_acting(qtbot, widget, act, after: int = AFTER) -> list[int]:
    """Press Run, call ``act()`` once ``after`` frames have arrived, wait for the end; returns the
    frames the worker yielded."""
    seen: list[int] = []

    def on_result(result) -> None:
        if hasattr(result, "frame"):
            seen.append(result.frame)
            if len(seen) == after:
                act()

    widget.run()
    widget.worker.yielded.connect(on_result)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    return seen


def engine_forward(checkpoint, frames, labels0) -> dict[int, np.ndarray]:
    session = PropagationSession(load_checkpoint(checkpoint)[0], frames, device="cpu")
    session.add_keyframe(0, labels0)
    return {t: labels for t, labels, _ in session.propagate("forward")}


def written(data: np.ndarray) -> list[int]:
    return [t for t in range(1, len(data)) if data[t].any()]


# ------------------------------------------------------------------------------------------ cancelled
def test_deleting_the_output_layer_cancels_the_run(qtbot, dock, clip) -> None:
    viewer, widget, start = dock
    output: list = []

    def delete_output() -> None:
        output.append(viewer.layers["objects propagated"])
        output.append(written(output[0].data))
        viewer.layers.remove("objects propagated")

    seen = run_acting(qtbot, widget, delete_output)
    assert len(seen) < T - 1  # cancelled, not run to the end
    assert any("output layer 'objects propagated' was deleted: the propagation was cancelled" in n
               for n in notices(start, "WARNING"))
    layer, before = output
    assert written(layer.data) == before  # nothing written into the deleted layer afterwards
    assert [layer.name for layer in viewer.layers] == ["clip", "objects"]
    assert not viewer.layers["objects"].data[1:].any()  # nor into the user's labels
    assert widget.status_label.text().startswith("cancelled after")


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_deleting_or_replacing_the_image_layer_cancels_the_run(qtbot, dock, clip, change) -> None:
    viewer, widget, start = dock
    at_change: list[list[int]] = []

    def act() -> None:
        at_change.append(written(viewer.layers["objects propagated"].data))
        if change == "delete":
            viewer.layers.remove("clip")
        else:
            viewer.layers["clip"].data = clip.frames[::-1].copy()

    seen = run_acting(qtbot, widget, act)
    assert len(seen) < T - 1
    what = "was deleted" if change == "delete" else "was replaced"
    assert any(f"image layer 'clip' {what}" in n and "cancelled" in n for n in notices(start, "WARNING"))
    assert written(viewer.layers["objects propagated"].data) == at_change[0]  # the frames done stay, no more
    assert not viewer.layers["objects"].data[1:].any()


# ------------------------------------------------------------------------------------------ kept going
@pytest.mark.parametrize("change", ["delete", "replace"])
def test_deleting_or_replacing_the_labels_layer_lets_the_run_finish(qtbot, dock, clip, checkpoint, change) -> None:
    viewer, widget, start = dock
    labels0 = viewer.layers["objects"].data[0].copy()
    replacement = np.zeros_like(viewer.layers["objects"].data)

    def act() -> None:
        if change == "delete":
            viewer.layers.remove("objects")
        else:
            viewer.layers["objects"].data = replacement

    seen = run_acting(qtbot, widget, act)
    assert seen == list(range(T))  # kept going to the end
    assert any("labels layer 'objects'" in n and "goes on from the keyframes taken when Run was pressed" in n
               for n in notices(start, "INFO"))
    output = viewer.layers["objects propagated"].data
    for t, labels in engine_forward(checkpoint, clip.frames, labels0).items():
        np.testing.assert_array_equal(output[t], labels)
    if change == "replace":
        assert not replacement.any()  # the new labels were not written to


def test_changing_the_model_or_device_mid_run_keeps_the_run_on_what_it_started_with(
        qtbot, dock, clip, checkpoint, tmp_path) -> None:
    viewer, widget, start = dock
    other = save_checkpoint(tmp_path / "other.pt", build_rgmp("resnet18", 8), {"recipe": "random"})

    def act() -> None:
        widget.set_checkpoint(other)
        widget.device_combo.setCurrentIndex((widget.device_combo.currentIndex() + 1) % widget.device_combo.count())

    seen = run_acting(qtbot, widget, act)
    assert seen == list(range(T))
    infos = " ".join(notices(start, "INFO"))
    assert "the model was changed during a propagation: this run goes on with the one it started with" in infos
    if widget.device_combo.count() > 1:
        assert "the device was changed during a propagation" in infos
    output = viewer.layers["objects propagated"].data
    for t, labels in engine_forward(checkpoint, clip.frames, clip.labels[0].astype(np.uint16)).items():
        np.testing.assert_array_equal(output[t], labels)  # the first model's results, not the new one's


def test_pressing_run_twice_gives_one_run_and_an_info(qtbot, dock, clip, checkpoint) -> None:
    viewer, widget, start = dock
    workers = []

    def press_again() -> None:
        workers.append(widget.worker)
        widget.run()
        workers.append(widget.worker)

    seen = run_acting(qtbot, widget, press_again)
    assert workers[0] is workers[1] and seen == list(range(T))  # one run, to its end
    assert any("a propagation is already running" in n for n in notices(start, "INFO"))
    output = viewer.layers["objects propagated"].data
    for t, labels in engine_forward(checkpoint, clip.frames, clip.labels[0].astype(np.uint16)).items():
        np.testing.assert_array_equal(output[t], labels)
    assert [layer.name for layer in viewer.layers] == ["clip", "objects", "objects propagated"]


def test_painting_on_the_output_layer_during_a_run_is_kept(qtbot, dock, clip, checkpoint) -> None:
    viewer, widget, start = dock
    last = T - 1

    def paint() -> None:  # the user paints an object on a frame the run has not reached yet
        layer = viewer.layers["objects propagated"]
        viewer.dims.set_current_step(0, last)
        layer.brush_size = 5
        layer.paint((last, 30, 40), 7)

    seen = run_acting(qtbot, widget, paint)
    assert seen == list(range(T))
    output = viewer.layers["objects propagated"].data
    assert output[last, 30, 40] == 7 and set(np.unique(output[last])) <= {0, 7}  # the painting, not the result
    assert any(f"frames [{last}] were painted during the propagation: kept as painted" in n
               for n in notices(start, "INFO"))
    expected = engine_forward(checkpoint, clip.frames, clip.labels[0].astype(np.uint16))
    for t in range(1, last):
        np.testing.assert_array_equal(output[t], expected[t])


def test_closing_the_dock_during_a_run_stops_it_and_writes_nothing_after(qtbot, dock) -> None:
    viewer, widget, start = dock
    widget.run()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(widget.confidence) >= AFTER, timeout=120_000)
    output = viewer.layers["objects propagated"]
    viewer.window.remove_dock_widget(widget.test_dock)  # the dock's close button: stops and awaits the run
    assert not worker.is_running and not widget.workers.live
    at_close = written(output.data)
    qtbot.wait(300)  # results still queued are not written
    assert written(output.data) == at_close and len(at_close) < T - 1
    assert not viewer.layers["objects"].data[1:].any()


# ------------------------------------------------------------------------------------------ the jobs' boundary
def test_an_unexpected_error_in_the_propagation_job_is_one_notification_and_a_log_entry(
        make_napari_viewer, qtbot, checkpoint, clip, caplog, monkeypatch) -> None:
    from napari_rgmp import propagate_job

    def bug(*_, **__):
        raise KeyError("channels")

    monkeypatch.setattr(propagate_job, "open_session", bug)
    viewer, widget = clip_in_dock(make_napari_viewer, checkpoint, clip)
    start = len(notification_manager.records)
    with caplog.at_level(logging.ERROR, logger="napari_rgmp"):
        widget.run()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    errors = notices(start, "ERROR")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"the propagation of 'clip' from 'objects' with {checkpoint.name} failed while "
                                f"loading the model {checkpoint}")
    assert "unexpected error (KeyError: 'channels')" in errors[0] and "traceback is in the napari log" in errors[0]
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)  # the traceback, in the log
    assert widget.status_label.text().startswith("failed after 0")
    assert not viewer.layers["objects"].data[1:].any()


def test_an_unexpected_error_in_the_finetune_job_is_one_notification_and_a_log_entry(
        make_napari_viewer, qtbot, checkpoint, clip, caplog, monkeypatch, tmp_path) -> None:
    from napari_rgmp.finetune_widget import FinetuneWidget
    from training import finetune

    def bug(*_, **__):
        from rgmp_model.steps import step

        step("training finetune, iteration 3 of 4")
        raise AttributeError("'int' object has no attribute 'detach'")

    monkeypatch.setattr(finetune, "finetune_on_stack", bug)
    viewer = make_napari_viewer()
    viewer.add_image(clip.frames[:4], name="clip", rgb=True)
    viewer.add_labels(labels_on(clip.labels[:4]), name="objects")
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_base_checkpoint(checkpoint)
    widget.set_output(tmp_path / "tuned.pt")
    widget.device.setCurrentText("cpu")
    start = len(notification_manager.records)
    with caplog.at_level(logging.ERROR, logger="napari_rgmp"):
        assert widget.run() is not None
        qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    errors = notices(start, "ERROR")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"fine-tuning {checkpoint.name} on 'clip' and 'objects' failed while training "
                                "finetune, iteration 3 of 4: an unexpected error (AttributeError")
    assert any(r.exc_info and r.exc_info[0] is AttributeError for r in caplog.records)
    assert not (tmp_path / "tuned.pt").exists()


def test_a_dock_never_docked_and_collected_while_its_picker_reads_models_is_harmless(
        make_napari_viewer, qtbot, checkpoint, clip) -> None:
    """Garbage-collecting such a dock ran a lambda connected to ``destroyed`` in the middle of the
    collection and crashed the process (a segmentation fault); the docks now connect weakly."""
    import gc

    from napari_rgmp.finetune_widget import FinetuneWidget

    viewer = make_napari_viewer()
    viewer.add_image(clip.frames, name="clip", rgb=True)
    for _ in range(2):
        widgets = [PropagateWidget(viewer), FinetuneWidget(viewer)]
        del widgets
        gc.collect()
    qtbot.wait(50)
    viewer.add_labels(np.zeros(clip.labels.shape, np.uint16), name="l")  # events the collected docks had followed
    viewer.dims.axis_labels = ("t", "y", "x")
    viewer.dims.set_current_step(0, 2)
    viewer.layers["clip"].data = clip.frames[::-1].copy()
    viewer.layers.remove("l")
    from napari_rgmp.checkpoints import registry

    registry.add(checkpoint)
    qtbot.wait(100)
