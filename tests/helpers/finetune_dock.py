"""The Fine-tune dock in a real viewer (xvfb): a video and a base model (module fixtures), the
dock docked with the video's layers, configured for a tiny CPU run, and waited for."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QThreadPool

from napari_rgmp.finetune_widget import FinetuneWidget

WAIT_MS = 180_000  # a few seconds per run on a free CPU; generous for busy CI machines


@pytest.fixture(scope="module")
def video() -> tuple[np.ndarray, np.ndarray]:
    """6 RGB frames of 64 x 80 with labels on frames 0 and 3 only."""
    from rgmp_model.data.synthetic import synthetic_video

    sequence = synthetic_video(6, 64, 80, num_objects=2, seed=0)
    labels = np.zeros_like(sequence.labels)
    labels[[0, 3]] = sequence.labels[[0, 3]]
    return sequence.frames, labels


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random ResNet-18 / 8-channel RGMP checkpoint."""
    from rgmp_model import build_rgmp, save_checkpoint

    path = tmp_path_factory.mktemp("base") / "tiny.pt"
    save_checkpoint(path, build_rgmp("resnet18", 8), {"recipe": "random"})
    return path


@pytest.fixture
def notes() -> Callable[[], list[str]]:
    """The messages of the napari notifications shown since the test started."""
    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]


@pytest.fixture
def make_widget(make_napari_viewer: Callable, qtbot: Any, video: tuple[np.ndarray, np.ndarray]):
    """(viewer, docked FinetuneWidget) with the video's layers; no worker outlives the test."""
    widgets: list[FinetuneWidget] = []

    def factory(image: Any = "video", labels: Any = "video") -> tuple[Any, FinetuneWidget]:
        viewer = make_napari_viewer()
        if image is not None:
            viewer.add_image(video[0] if isinstance(image, str) else image, name="frames", rgb=True)
        if labels is not None:
            viewer.add_labels(video[1] if isinstance(labels, str) else labels, name="masks")
        widget = FinetuneWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Fine-tune")
        widgets.append(widget)
        return viewer, widget

    yield factory
    for widget in widgets:
        try:
            widget.stop()
        except RuntimeError:  # already deleted with its viewer
            pass
    assert QThreadPool.globalInstance().waitForDone(WAIT_MS), "a worker thread is still running"
    qtbot.wait(20)  # deliver the last queued signals


def configure(widget: FinetuneWidget, base: Path, out: Path, iterations: int) -> None:
    widget.set_base_checkpoint(base)
    widget.set_output(out)
    widget.iterations.setValue(iterations)
    widget.learning_rate.setText("1e-4")
    widget.batch_size.setValue(2)
    widget.crop_size.setValue(64)
    widget.device.setCurrentText("cpu")


def wait_done(qtbot: Any, widget: FinetuneWidget) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
