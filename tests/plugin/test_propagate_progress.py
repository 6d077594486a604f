"""The Propagate dock follows the work: the viewer on the keyframe when a stack is chosen, on each
frame as it is written, the dock's progress bar, the confidence plot filling as frames arrive and
marking lost objects (xvfb, tiny random-weight checkpoint)."""

from __future__ import annotations

import math

import pytest

from napari_rgmp.confidence_panel import ConfidencePanel, lost_objects, lost_text, tracked_confidence
from napari_rgmp.progress_panel import format_duration, progress_text
from rgmp_model.data.synthetic import synthetic_video
from tests.helpers.docks import labels_on, propagate_dock_with

H, W, T = 48, 64, 8


@pytest.fixture(scope="module")
def sequence():
    return synthetic_video(num_frames=T, height=H, width=W, num_objects=2, seed=3)


def open_widget(make_napari_viewer, checkpoint, sequence, keyframe: int):
    viewer = make_napari_viewer()
    elsewhere = 1 if keyframe != 1 else 2
    labels = labels_on(sequence.labels, (keyframe,))
    return viewer, propagate_dock_with(viewer, sequence.frames, labels, checkpoint, shown_frame=elsewhere)


def test_choosing_a_stack_shows_its_keyframe(make_napari_viewer, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence, keyframe=5)
    assert widget.keyframes == [5] and viewer.dims.current_step[0] == 5
    viewer.add_image(sequence.frames[:, ::-1], name="flipped", rgb=True)
    viewer.add_labels(labels_on(sequence.labels, (3,))[:, ::-1], name="flipped objects")
    widget.image_combo.set_layer("flipped")
    widget.labels_combo.set_layer("flipped objects")
    assert widget.keyframes == [3] and viewer.dims.current_step[0] == 3
    viewer.dims.set_current_step(0, 6)  # looking elsewhere: painting or edits do not move the viewer
    widget._update_inputs()
    assert viewer.dims.current_step[0] == 6


def test_the_viewer_follows_the_frame_being_written(make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence, keyframe=3)
    viewer.dims.set_current_step(0, 0)
    seen: list[tuple[int, int, bool, int]] = []
    widget.run()
    widget.worker.yielded.connect(lambda result: seen.append(
        (result.frame, int(viewer.dims.current_step[0]), result.frame in widget.confidence,
         widget.progress_panel.bar.value())))
    assert widget.progress_panel.follow_check.isChecked()  # on by default
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    frames = [frame for frame, *_ in seen]
    assert sorted(frames) == list(range(T)) and frames[0] == 3
    assert seen[0][1] == 3  # the first frame written (the keyframe) is shown at once
    for count, (frame, step, plotted, bar) in enumerate(seen, start=1):
        assert step in frames[:count] and plotted and bar == count  # a written frame; the bar moves per frame
    bar = widget.progress_panel.bar
    assert bar.maximum() == T and bar.value() == T
    assert bar.format().startswith(f"{T} / {T} frames") and "frames/s" in bar.format()
    assert len(widget.plot) == T  # the plot holds every frame
    assert viewer.dims.current_step[0] == frames[-1]  # the run ends on the last frame written
    assert widget.status_label.text() == f"done: {T} / {T} frames propagated into 'objects propagated'"


def test_follow_progress_off_leaves_the_viewer_alone(make_napari_viewer, qtbot, checkpoint, sequence) -> None:
    viewer, widget = open_widget(make_napari_viewer, checkpoint, sequence, keyframe=0)
    widget.progress_panel.follow_check.setChecked(False)
    viewer.dims.set_current_step(0, 2)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert viewer.dims.current_step[0] == 2 and widget.progress_panel.bar.value() == T


def test_progress_text() -> None:
    assert progress_text(0, 40, 0.0) == "0 / 40 frames"
    assert progress_text(10, 40, 4.0) == "10 / 40 frames, 2.50 frames/s, 12 s left"
    assert progress_text(40, 40, 2.0) == "40 / 40 frames, 20 frames/s"
    assert format_duration(125) == "2 min 05 s" and format_duration(3720) == "1 h 02 min"


# ---------------------------------------------------------------------------------- lost objects
def test_an_object_lost_is_marked_not_pinned_at_zero(qtbot) -> None:
    # object 2 leaves the frame at 3 going forward (region mode: 0 once, then absent) and object 3
    # vanishes at 1 going backward from keyframe 2 (full-frame mode: 0 on every frame after)
    per_frame = {0: {1: 0.8, 3: 0.0}, 1: {1: 0.9, 3: 0.0}, 2: {1: 1.0, 2: 1.0, 3: 1.0},
                 3: {1: 0.7, 2: 0.0}, 4: {1: 0.6}}
    assert lost_objects(per_frame) == {1: [3], 3: [2]}
    assert tracked_confidence(per_frame[3]) == 0.7 and math.isnan(tracked_confidence({2: 0.0}))
    panel = ConfidencePanel()
    qtbot.addWidget(panel)
    for t, confidence in per_frame.items():
        panel.add(t, confidence)
    qtbot.waitUntil(lambda: len(panel.plot) == 5, timeout=2000)  # drawn while frames arrive, no finish needed
    xs, ys = panel.plot.data()
    assert list(ys) == [0.8, 0.9, 1.0, 0.7, 0.6]  # the objects still tracked, never the lost ones' 0
    assert panel.plot.annotations() == [(1.0, "3 lost"), (3.0, "2 lost")]
    assert panel.lost_label.text() == lost_text({1: [3], 3: [2]})
    assert "object 3 at frame 1" in panel.lost_label.text() and "left the frame" in panel.lost_label.text()
    assert panel.least_confident({2}) == 4
    panel.plot.resize(400, 160)
    assert not panel.plot.grab().isNull()  # the notes paint
