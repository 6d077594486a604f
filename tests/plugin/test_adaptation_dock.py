"""Test-time adaptation from the Propagate dock ("adapt to the keyframes"), in a real viewer (xvfb):
its steps shown before the frames, the adapted network kept for a correction, Cancel during the
adaptation keeping the model as it was, the model file never written."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from napari_rgmp import propagate_widget as widget_module
from napari_rgmp.propagate_widget import PropagateWidget
from rgmp_model.constants import ADAPT_ITERATIONS
from rgmp_model.data.synthetic import synthetic_video
from tests.helpers.docks import labels_on, propagate_dock_with

STEPS = 3  # the dock's iterations in these tests (ADAPT_ITERATIONS in use)


@pytest.fixture(scope="module")
def sequence():
    return synthetic_video(num_frames=6, height=64, width=80, num_objects=2, seed=4)


@pytest.fixture
def dock(make_napari_viewer, checkpoint, sequence, monkeypatch):
    monkeypatch.setattr(widget_module, "ADAPT_ITERATIONS", STEPS)
    viewer = make_napari_viewer()
    widget = propagate_dock_with(viewer, sequence.frames, labels_on(sequence.labels), checkpoint)
    steps: list[tuple[int, int]] = []
    shown = widget.progress_panel.adapting
    monkeypatch.setattr(widget.progress_panel, "adapting", lambda i, n: steps.append((i, n)) or shown(i, n))
    return viewer, widget, steps


def wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_option_is_off_by_default_and_asks_for_the_library_s_iterations(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    widget = PropagateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert not widget.adapt_check.isChecked() and widget.options().adapt == 0
    widget.adapt_check.setChecked(True)
    assert widget.options().adapt == ADAPT_ITERATIONS
    assert "model file is not changed" in widget.adapt_check.toolTip()


def test_the_dock_adapts_first_shows_each_step_and_a_correction_reuses_the_copy(dock, qtbot, checkpoint,
                                                                                sequence) -> None:
    viewer, widget, steps = dock
    before = digest(checkpoint)
    widget.adapt_check.setChecked(True)
    widget.run()
    wait(qtbot, widget)
    assert steps == [(i, STEPS) for i in range(1, STEPS + 1)]  # every step shown, before the frames
    session = widget.session
    assert session.options.adapt == STEPS and session.adaptation.runs == 1
    assert session.model is session.adaptation.model and session.model is not session._base_model
    assert sorted(widget.confidence) == list(range(6)) and "6 / 6 frames" in widget.status_label.text()
    viewer.layers["objects propagated"].data[3] = sequence.labels[3].astype(np.uint16)
    viewer.dims.set_current_step(0, 3)
    steps.clear()
    widget.use_current_frame_as_keyframe()
    wait(qtbot, widget)
    assert widget.session is session and session.keyframes == (0, 3)
    assert steps == [] and session.adaptation.runs == 1  # a new keyframe: the copy is reused
    assert digest(checkpoint) == before  # the model file is never written


def test_cancel_during_the_adaptation_keeps_the_model_as_it_was(dock, qtbot, checkpoint) -> None:
    viewer, widget, steps = dock
    widget.adapt_check.setChecked(True)
    shown = widget.progress_panel.adapting
    widget.progress_panel.adapting = lambda i, n: (widget.cancel() if i == 1 else None) or shown(i, n)
    widget.run()
    wait(qtbot, widget)
    session = widget.session
    assert steps[:1] == [(1, STEPS)] and len(steps) < STEPS
    assert session.adaptation.model is None and session.model is session._base_model
    assert not viewer.layers["objects propagated"].data[1:].any()  # no frame propagated
    assert "stopped" in widget.status_label.text()
