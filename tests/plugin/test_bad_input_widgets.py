"""Bad input to the Propagate and Fine-tune widgets in a real viewer (xvfb): each case asserts the
notification a user sees (no traceback, no internal names), or for odd but valid layers the
result, and that the layers' data and the checkpoint files are unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QThreadPool

from tests.helpers.bad_input_checks import (
    assert_unchanged, assert_user_message, digest, hostile_checkpoint, non_finite_checkpoint, snapshot,
    truncated_checkpoint,
)

T, H, W = 4, 48, 64
WAIT_MS = 120_000


def image(dtype: Any = np.uint8) -> np.ndarray:
    return (np.random.default_rng(1).random((T, H, W)) * 200).astype(dtype)


def labels(value: Any = 1, dtype: Any = np.uint16) -> np.ndarray:
    stack = np.zeros((T, H, W), dtype)
    stack[0, 12:36, 16:44] = value
    stack[2, 14:38, 18:46] = value
    return stack


def errors_since(count: int) -> str:
    return " | ".join(str(n.message) for n in notification_manager.records[count:] if n.severity.name == "ERROR")


# ------------------------------------------------------------------------------- checkpoints
def _text(path: Path) -> None:
    path.write_text("not a model")


def _hostile(path: Path) -> None:
    hostile_checkpoint(path, path.with_name("pwned"))


CHECKPOINTS = [
    pytest.param(_text, "cannot be read as a PyTorch checkpoint", id="text-file"),
    pytest.param(truncated_checkpoint, "truncated", id="truncated"),
    pytest.param(non_finite_checkpoint, "NaN or infinite weights", id="nan-weights"),
    pytest.param(_hostile, "could run code when loaded", id="code-running-pickle"),
]


@pytest.fixture
def viewer_with(make_napari_viewer: Callable, qtbot: Any):
    """(viewer, widget) with an Image layer "frames" and a Labels layer "masks"; no worker outlives the test."""
    widgets: list[Any] = []

    def make(kind: str, frames: np.ndarray, masks: np.ndarray) -> tuple[Any, Any]:
        from napari_rgmp.finetune_widget import FinetuneWidget
        from napari_rgmp.propagate_widget import PropagateWidget

        viewer = make_napari_viewer()
        viewer.add_image(frames, name="frames")
        viewer.add_labels(masks, name="masks")
        widget = (PropagateWidget if kind == "propagate" else FinetuneWidget)(viewer)
        viewer.window.add_dock_widget(widget)
        widgets.append(widget)
        return viewer, widget

    yield make
    for widget in widgets:
        try:
            widget.job.stop() if hasattr(widget, "job") else widget.stop()
        except RuntimeError:
            pass
    assert QThreadPool.globalInstance().waitForDone(WAIT_MS), "a worker thread is still running"
    qtbot.wait(20)


def propagate(qtbot: Any, widget: Any, checkpoint: Path) -> None:
    widget.set_checkpoint(checkpoint)
    widget.device_combo.setCurrentText("cpu")
    qtbot.waitUntil(lambda: not widget.checkpoint_info.text().startswith("reading"), timeout=WAIT_MS)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    qtbot.wait(50)


def finetune(qtbot: Any, widget: Any, base: Path, out: Path) -> None:
    widget.set_base_checkpoint(base)
    widget.set_output(out)
    widget.iterations.setValue(1)
    widget.batch_size.setValue(1)
    widget.crop_size.setValue(32)
    widget.device.setCurrentText("cpu")
    qtbot.waitUntil(lambda: not widget.checkpoint_info.text().startswith("reading"), timeout=WAIT_MS)
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    qtbot.wait(50)


def run_widget(qtbot: Any, kind: str, widget: Any, checkpoint: Path, out: Path) -> None:
    """Press Run on the Propagate widget (``checkpoint`` as its model) or the Fine-tune widget
    (``checkpoint`` as its base, ``out`` as its output)."""
    if kind == "propagate":
        propagate(qtbot, widget, checkpoint)
    else:
        finetune(qtbot, widget, checkpoint, out)


@pytest.mark.parametrize("kind", ["propagate", "finetune"])
@pytest.mark.parametrize(("make", "expected"), CHECKPOINTS)
def test_damaged_checkpoints_are_a_notification(viewer_with, qtbot, tmp_path, kind, make, expected) -> None:
    path = tmp_path / "model.pt"
    make(path)
    viewer, widget = viewer_with(kind, image(), labels())
    before, files = snapshot(viewer.layers["frames"].data, viewer.layers["masks"].data), digest(tmp_path)
    start = len(notification_manager.records)
    run_widget(qtbot, kind, widget, path, tmp_path / "tuned.pt")
    assert_user_message(errors_since(start), "model.pt", expected)
    assert_unchanged(before)
    assert digest(tmp_path) == files  # nothing written, the checkpoint as it was, no marker file


# ------------------------------------------------------------------------------- layers
@pytest.mark.parametrize("kind", ["propagate", "finetune"])
@pytest.mark.parametrize(("frames", "masks", "expected"), [
    pytest.param(image(), labels(-5, np.int32), "negative ids", id="negative-ids"),
    pytest.param(np.full((T, H, W), np.nan, np.float32), labels(), "no finite values", id="all-nan-image"),
])
def test_bad_layers_are_a_notification(viewer_with, qtbot, checkpoint, tmp_path, kind, frames, masks, expected) -> None:
    viewer, widget = viewer_with(kind, frames, masks)
    before, files = snapshot(viewer.layers["frames"].data, viewer.layers["masks"].data), digest(checkpoint)
    start = len(notification_manager.records)
    run_widget(qtbot, kind, widget, checkpoint, tmp_path / "tuned.pt")
    assert_user_message(errors_since(start), expected)
    assert_unchanged(before)
    assert digest(checkpoint) == files and not (tmp_path / "tuned.pt").exists()


@pytest.mark.parametrize(("frames", "masks", "ids"), [
    pytest.param(image(), labels(2**40, np.int64), {2**40}, id="ids-2**40"),
    pytest.param(np.where(image(np.float32) > 150, np.nan, image(np.float32)), labels(3), {3}, id="nan-in-image"),
])
def test_odd_but_valid_layers_propagate(viewer_with, qtbot, checkpoint, frames, masks, ids) -> None:
    viewer, widget = viewer_with("propagate", frames, masks)
    before = snapshot(viewer.layers["frames"].data, viewer.layers["masks"].data)
    start = len(notification_manager.records)
    propagate(qtbot, widget, checkpoint)
    assert errors_since(start) == ""
    output = viewer.layers["masks propagated"].data
    assert output.shape == (T, H, W) and set(np.unique(output).tolist()) <= ids | {0}
    np.testing.assert_array_equal(output[0], masks[0])
    assert_unchanged(before)
