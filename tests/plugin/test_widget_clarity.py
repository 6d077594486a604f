"""Both docks explain themselves and fit the screen (xvfb): a tooltip on every control, the model
row in a user's terms (one line, the summary under "details"), and size hints that fit a
1280x800 screen."""

from __future__ import annotations

import numpy as np
import pytest

from napari_rgmp.checkpoints import model_summary
from napari_rgmp.finetune_widget import FinetuneWidget
from napari_rgmp.propagate_widget import PropagateWidget
from rgmp_model import build_rgmp, read_checkpoint_info, save_checkpoint
from tests.helpers.docks import controls

SCREEN_HEIGHT = 800


@pytest.fixture
def both_docks(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((5, 40, 48), np.uint8), name="cells")
    labels = np.zeros((5, 40, 48), np.uint16)
    labels[0, 10:20, 10:20] = 1
    viewer.add_labels(labels, name="painted")
    propagate, finetune = PropagateWidget(viewer), FinetuneWidget(viewer)
    viewer.window.add_dock_widget(propagate, name="Propagate labels")
    viewer.window.add_dock_widget(finetune, name="Fine-tune")
    return viewer, propagate, finetune


def test_every_control_has_a_tooltip(both_docks) -> None:
    _, propagate, finetune = both_docks
    for dock in (propagate, finetune):
        found = controls(dock)
        assert len(found) >= 12
        missing = [f"{type(c).__name__} {getattr(c, 'text', lambda: '')() or c.objectName()}"
                   for c in found if not c.toolTip().strip()]
        assert not missing, f"{type(dock).__name__}: controls without a tooltip: {missing}"


def test_both_docks_fit_a_1280x800_screen(both_docks) -> None:
    _, propagate, finetune = both_docks
    for dock in (propagate, finetune):
        hint, least = dock.sizeHint(), dock.minimumSizeHint()
        assert hint.height() <= 700 and hint.width() <= 520, (type(dock).__name__, hint)
        assert least.height() * 2 <= SCREEN_HEIGHT - 200  # both stacked, under napari's menus and titles
        assert dock.scroll.widget() is dock.body  # the rest scrolls
    # the Propagate dock's controls fit without scrolling (tests/plugin/test_dock_layout.py in a 1280x800 window)
    assert propagate.body.sizeHint().height() <= propagate.sizeHint().height()


def test_axis_names_follow_the_viewer(both_docks) -> None:
    viewer, propagate, finetune = both_docks
    viewer.add_image(np.zeros((3, 5, 40, 48), np.uint8), name="tzyx")
    viewer.dims.axis_labels = ("t", "z", "y", "x")
    for dock in (propagate, finetune):
        dock.image_combo.set_layer("tzyx")
        texts = [dock.axis_combo.itemText(i) for i in range(dock.axis_combo.count())]
        assert texts == ["t, 3 frames", "z, 5 frames"], texts


def test_model_row_says_encoder_training_data_score_and_size(tmp_path, both_docks, qtbot) -> None:
    metadata = {"recipe": "scripts/train_default.sh (training/configs/default_pretrain.yaml)",
                "trained_on": "DAVIS-2016 (6 clips); synthetic video", "working_size": 320,
                "validation": {"synthetic microscopy sample J&F": 0.9551, "DAVIS libby J&F": 0.4542}}
    path = save_checkpoint(tmp_path / "model.pt", build_rgmp("resnet18", 8), metadata)
    summary = model_summary(read_checkpoint_info(path))
    assert summary.splitlines() == [
        "encoder: ResNet-18 (decoder 8 channels)",
        "trained on: DAVIS-2016 (6 clips); synthetic video",
        "validation J&F: synthetic microscopy sample 0.96; DAVIS libby 0.45",
        "working size: 320 px (longer side)",
    ]
    _, propagate, _ = both_docks
    propagate.set_checkpoint(path)
    # one line in the dock, the summary under "details", the recipe in the tooltip
    qtbot.waitUntil(lambda: propagate.checkpoint_info.text() == "ResNet-18 · J&F 0.96 · 320 px", timeout=60_000)
    assert propagate.picker.details_label.text().startswith(summary)
    assert "recipe" not in propagate.picker.details_label.text() and "recipe" in propagate.checkpoint_info.toolTip()

    tuned = save_checkpoint(tmp_path / "tuned.pt", build_rgmp("resnet18", 8),
                            {"base_checkpoint": str(path), "frames_used": [0, 4], "data": ["stack"]})
    lines = model_summary(read_checkpoint_info(tuned)).splitlines()
    assert lines[1] == "trained on: 2 labelled frames of a user's stack, fine-tuned from model.pt"
    assert lines[2] == "validation J&F: none recorded" and lines[3] == "working size: full size"
