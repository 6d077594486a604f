"""The Propagate labels widget, driven through its controls in a real viewer (xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari.utils.notifications import notification_manager

from napari_rgmp import propagate_job as module
from napari_rgmp.checkpoints import registry
from napari_rgmp.propagate_widget import PropagateWidget
from rgmp_model import PropagationOptions, build_rgmp, load_checkpoint, open_session, save_checkpoint
from rgmp_model.data.synthetic import synthetic_video
from tests.helpers.docks import engine_output, errors_since, labels_on, propagate_dock_with, run_and_wait

H, W = 64, 80


@pytest.fixture(scope="module")
def sequence():
    return synthetic_video(num_frames=8, height=H, width=W, num_objects=2, seed=2)


def open_widget(make_napari_viewer, checkpoint, sequence, labels=None):
    viewer = make_napari_viewer()
    labels = labels_on(sequence.labels) if labels is None else labels
    return viewer, propagate_dock_with(viewer, sequence.frames, labels, checkpoint)


def test_output_layer_equals_the_engine_and_inputs_are_untouched(make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence)
    image_before = viewer.layers["clip"].data.copy()
    labels_before = viewer.layers["objects"].data.copy()
    assert widget.keyframes_label.text() == "0"
    run_and_wait(qtbot, widget)
    output = viewer.layers["objects propagated"].data
    expected = engine_output(checkpoint, sequence.frames, {0: labels_before[0]})
    assert sorted(expected) == list(range(8))
    for t, labels in expected.items():
        np.testing.assert_array_equal(output[t], labels)
    np.testing.assert_array_equal(viewer.layers["clip"].data, image_before)
    np.testing.assert_array_equal(viewer.layers["objects"].data, labels_before)
    assert sorted(widget.confidence) == list(range(8)) and widget.confidence[0] == 1.0
    assert widget.least_confident_frame() in range(1, 8)
    widget.go_to_least_confident()
    assert viewer.dims.current_step[0] == widget.least_confident_frame()
    assert "8 / 8 frames" in widget.status_label.text()


def test_keyframe_correction_changes_only_its_stretch(make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence, labels_on(sequence.labels, (0, 7)))
    run_and_wait(qtbot, widget)
    output = viewer.layers["objects propagated"]
    before = output.data.copy()
    corrected = sequence.labels[4].astype(np.uint16)  # the user paints frame 4 right
    output.data[4] = corrected
    viewer.dims.set_current_step(0, 4)
    run_and_wait(qtbot, widget, widget.use_current_frame_as_keyframe)
    after = output.data
    # keyframes 0, 4, 7 in both directions: frame 4's stretch is 3..5 (2 ties to 0, 6 is nearer 7)
    for t in (0, 1, 2, 6, 7):
        np.testing.assert_array_equal(after[t], before[t])
    np.testing.assert_array_equal(after[4], corrected)
    expected = engine_output(checkpoint, sequence.frames, {0: sequence.labels[0], 4: corrected, 7: sequence.labels[7]})
    for t in (3, 5):
        np.testing.assert_array_equal(after[t], expected[t])
    assert "corrected: 4" in widget.keyframes_label.text()
    np.testing.assert_array_equal(viewer.layers["objects"].data[4], 0)  # the input layer is untouched


def test_cancel_keeps_the_frames_done_and_leaves_the_rest_empty(make_napari_viewer, qtbot, checkpoint) -> None:
    long = synthetic_video(num_frames=30, height=H, width=W, num_objects=2, seed=4)
    viewer, widget = open_widget(make_napari_viewer, checkpoint, long, labels_on(long.labels))
    widget.direction_combo.setCurrentText("forward")
    seen = []
    widget.run()
    widget.worker.yielded.connect(lambda result: seen.append(result[0]) or (len(seen) == 3 and widget.cancel()))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    output = viewer.layers["objects propagated"].data
    done = [t for t in range(30) if output[t].any()]
    assert 3 <= len(seen) < 30 and set(done) <= set(seen)
    assert not output[max(seen) + 1 :].any()
    expected = engine_output(checkpoint, long.frames, {0: long.labels[0].astype(np.uint16)}, "forward")
    for t in seen:
        np.testing.assert_array_equal(output[t], expected[t])


def test_start_from_boxes(make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence, np.zeros(sequence.labels.shape, np.uint16))
    boxes = []
    for object_id in (1, 2):
        rows, cols = np.nonzero(sequence.labels[0] == object_id)
        boxes.append(np.array([[0, rows.min(), cols.min()], [0, rows.min(), cols.max()],
                               [0, rows.max(), cols.max()], [0, rows.max(), cols.min()]], float))
    viewer.add_shapes(boxes, shape_type="rectangle", name="boxes", ndim=3)
    widget.boxes_combo.setCurrentText("boxes")
    run_and_wait(qtbot, widget)
    output = viewer.layers["objects propagated"].data
    assert set(np.unique(output[0])) == {0, 1, 2}
    for object_id, box in enumerate(boxes, start=1):
        (_, top, left), (_, bottom, right) = box.min(0).astype(int), box.max(0).astype(int)
        outside = np.ones((H, W), bool)
        outside[top : bottom + 1, left : right + 1] = False
        assert not (output[0][outside] == object_id).any()  # refined inside its box
    assert all(output[t].shape == (H, W) for t in range(8)) and widget.keyframes == [0]
    assert len(viewer.layers["objects"].data.nonzero()[0]) == 0


def test_four_dimensional_stack_along_a_chosen_axis(make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer = make_napari_viewer()
    grey = sequence.frames[..., 0]
    volume = np.stack([grey, grey[:, ::-1]], axis=1)  # (T, Z=2, Y, X)
    labels = np.zeros(volume.shape, np.uint16)
    labels[0, 1] = sequence.labels[0][::-1]
    viewer.add_image(volume, name="tzyx")
    viewer.add_labels(labels, name="cells")
    viewer.dims.set_current_step(1, 1)
    widget = PropagateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    # named as the files' rule names them (time, then z) until the viewer's sliders have names
    assert [widget.axis_combo.itemText(i) for i in range(widget.axis_combo.count())] == [
        "time, 8 frames", "z, 2 frames"]
    viewer.dims.axis_labels = ("t", "z", "y", "x")
    assert [widget.axis_combo.itemText(i) for i in range(widget.axis_combo.count())] == ["t, 8 frames", "z, 2 frames"]
    assert [widget.axis_combo.itemData(i) for i in range(widget.axis_combo.count())] == [0, 1]
    widget.axis_combo.setCurrentIndex(widget.axis_combo.findData(0))
    run_and_wait(qtbot, widget)
    output = viewer.layers["cells propagated"].data
    assert output.shape == volume.shape and not output[:, 0].any()  # only the z = 1 slice
    expected = engine_output(checkpoint, volume[:, 1], {0: labels[0, 1]})
    for t in range(8):
        np.testing.assert_array_equal(output[t, 1], expected[t])


def test_each_error_is_a_notification(make_napari_viewer, qtbot, checkpoint, sequence, tmp_path, monkeypatch) -> None:
    viewer = make_napari_viewer()
    widget = PropagateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    start = len(notification_manager.records)
    widget.run()
    assert "choose an Image layer" in " ".join(errors_since(start))
    viewer.add_image(sequence.frames, name="clip", rgb=True)
    viewer.add_labels(np.zeros(sequence.labels.shape, np.uint16), name="objects")
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    start = len(notification_manager.records)
    widget.run()
    assert "no labels on any frame" in " ".join(errors_since(start))
    viewer.layers.remove("objects")
    viewer.add_labels(np.zeros((8, H, W + 1), np.uint16), name="wrong")
    start = len(notification_manager.records)
    widget.run()
    assert "must cover the same frames and pixels" in " ".join(errors_since(start))
    viewer.layers.remove("wrong")
    viewer.add_labels(labels_on(sequence.labels), name="objects")
    missing = tmp_path / "gone.pt"
    save_checkpoint(missing, build_rgmp("resnet18", 8))
    widget.set_checkpoint(missing)
    missing.unlink()
    start = len(notification_manager.records)
    widget.run()
    assert "gone.pt does not exist" in " ".join(errors_since(start))
    foreign = tmp_path / "foreign.pt"
    torch.save({"layer.weight": torch.zeros(3)}, foreign)
    widget.set_checkpoint(foreign)
    qtbot.waitUntil(lambda: widget.checkpoint_info.text().startswith("not usable"), timeout=60_000)  # read in a worker
    start = len(notification_manager.records)
    run_and_wait(qtbot, widget)
    assert "does not fit" in " ".join(errors_since(start))

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(module, "open_session", out_of_memory)
    widget.set_checkpoint(checkpoint)
    start = len(notification_manager.records)
    run_and_wait(qtbot, widget)
    assert "out of GPU memory" in " ".join(errors_since(start))
    assert not viewer.layers["objects"].data[1:].any()  # nothing written into the input layer


def test_a_new_checkpoint_is_listed(make_napari_viewer, checkpoint, sequence, tmp_path) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence)
    newer = save_checkpoint(tmp_path / "finetuned.pt", build_rgmp("resnet18", 8), {"recipe": "finetune"})
    registry.add(newer)
    listed = [widget.checkpoint_combo.itemData(i) for i in range(widget.checkpoint_combo.count())]
    assert str(newer.resolve()) in listed
    assert "finetuned.pt" in [widget.checkpoint_combo.itemText(i) for i in range(widget.checkpoint_combo.count())]


def test_closing_the_viewer_stops_the_worker(make_napari_viewer, qtbot, checkpoint) -> None:
    long = synthetic_video(num_frames=60, height=H, width=W, num_objects=1, seed=6)
    viewer, widget = open_widget(make_napari_viewer, checkpoint, long, labels_on(long.labels))
    widget.run()
    worker = widget.worker
    qtbot.waitUntil(lambda: len(widget.confidence) >= 2, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert len(widget.confidence) < 60


def test_a_checkpoint_fine_tuned_in_the_viewer_is_listed_and_usable(make_napari_viewer, qtbot, checkpoint, sequence, tmp_path) -> None:
    from napari_rgmp.finetune_widget import FinetuneWidget

    labels = labels_on(sequence.labels, (0, 4))
    viewer, propagate = open_widget(make_napari_viewer, checkpoint, sequence, labels)
    finetune = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    finetune.set_base_checkpoint(checkpoint)
    finetune.iterations.setValue(3)
    finetune.batch_size.setValue(2)
    finetune.crop_size.setValue(64)
    finetune.device.setCurrentText("cpu")
    out = tmp_path / "tuned-in-viewer.pt"
    finetune.set_output(out)
    finetune.run()
    qtbot.waitUntil(lambda: finetune.worker is None and out.exists(), timeout=120_000)
    qtbot.waitUntil(lambda: str(out.resolve()) in [propagate.checkpoint_combo.itemData(i)
                                                   for i in range(propagate.checkpoint_combo.count())], timeout=10_000)
    assert load_checkpoint(out)[1].metadata["frames_used"] == [0, 4]
    propagate.set_checkpoint(out)
    run_and_wait(qtbot, propagate)
    expected = engine_output(out, sequence.frames, {0: labels[0], 4: labels[4]})
    output = viewer.layers["objects propagated"].data
    for t, frame_labels in expected.items():
        np.testing.assert_array_equal(output[t], frame_labels)


def test_a_correction_reuses_the_kept_session_and_encodes_only_the_corrected_keyframe(
        make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence, labels_on(sequence.labels, (0, 7)))
    assert widget.options() == PropagationOptions(direction="both", device="cpu")  # as `rgmp propagate` by default
    run_and_wait(qtbot, widget)
    session = widget.session
    assert session is not None and session.keyframes == (0, 7)
    assert session.options == open_session(checkpoint, sequence.frames, widget.options()).options
    encoded = []
    encode = session.propagator.encode_reference
    session.propagator.encode_reference = lambda frame, masks: encoded.append(masks.clone()) or encode(frame, masks)
    corrected = sequence.labels[4].astype(np.uint16)
    viewer.layers["objects propagated"].data[4] = corrected
    viewer.dims.set_current_step(0, 4)
    run_and_wait(qtbot, widget, widget.use_current_frame_as_keyframe)
    assert widget.session is session and session.keyframes == (0, 4, 7)
    assert len(encoded) == 1  # keyframe 4 alone: 0 and 7 keep the features of the first run
    ids = [i for i in np.unique(corrected) if i != 0]
    np.testing.assert_array_equal(encoded[0].numpy(), np.stack([corrected == i for i in ids]).astype(np.float32))
    encoded.clear()
    run_and_wait(qtbot, widget)  # Run again with the same inputs: the same session, nothing encoded
    assert widget.session is session and encoded == []
    assert "corrected: 4" in widget.keyframes_label.text()
    widget.multiscale_check.setChecked(True)  # other options: a new session, the correction kept
    run_and_wait(qtbot, widget)
    assert widget.session is not session and widget.session.keyframes == (0, 4, 7)
    assert widget.session.scales == (0.5, 0.75, 1.0)


def test_a_two_dimensional_labels_layer_is_the_keyframe_of_the_frame_shown(make_napari_viewer, qtbot, checkpoint,
                                                                          sequence, tmp_path) -> None:
    """One DAVIS annotation (00000.png opened as labels: a 2-D layer) is the keyframe of the frame
    the viewer showed when it was chosen; the dock says which; "use frame shown" moves it; a
    correction keeps it where it is."""
    from napari_rgmp.open_labels import add_labels
    from rgmp_model.io.label_io import write_palette_png

    write_palette_png(tmp_path / "00003.png", sequence.labels[3])
    viewer = make_napari_viewer()
    viewer.add_image(sequence.frames, name="clip", rgb=True)
    viewer.dims.set_current_step(0, 3)
    annotation = add_labels(viewer, tmp_path / "00003.png")
    assert annotation.data.shape == (H, W)
    widget = PropagateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    assert widget.keyframes == [3] and widget.keyframes_label.text().startswith("frame 3 ")
    assert widget.flat_frame_button.isVisibleTo(widget)
    run_and_wait(qtbot, widget)
    output = viewer.layers["00003 propagated"]
    assert output.data.shape == (8, H, W)  # the image's frames, not the 2-D layer's shape
    expected = engine_output(checkpoint, sequence.frames, {3: sequence.labels[3]})
    for t in range(8):
        np.testing.assert_array_equal(output.data[t], expected[t])
    np.testing.assert_array_equal(annotation.data, sequence.labels[3])  # the input is untouched
    # a correction on frame 6 (the viewer followed the run elsewhere): the 2-D keyframe stays on 3
    output.data[6] = sequence.labels[6]
    viewer.dims.set_current_step(0, 6)
    run_and_wait(qtbot, widget, widget.use_current_frame_as_keyframe)
    assert widget.flat_frame == 3 and widget.keyframes == [3]
    np.testing.assert_array_equal(output.data[3], sequence.labels[3])
    # the user moves to frame 0 and says the annotation belongs there
    viewer.dims.set_current_step(0, 0)
    widget.flat_frame_button.click()
    assert widget.keyframes == [0] and widget.keyframes_label.text().startswith("frame 0 ")
