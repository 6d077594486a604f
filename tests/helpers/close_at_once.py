"""A first-time user's session cut short, for tests/plugin/test_dock_close.py (run in a subprocess, under
xvfb): napari opens a small clip with labels on frame 0, docks both napari-rgmp widgets from the
manifest (each starts reading its model's description in a worker) and closes at once; with
``--run`` the Propagate dock is propagating when the viewer closes. Prints the workers still
running after the close, and exits 0 when the process ends normally."""

from __future__ import annotations

import argparse

import napari
import numpy as np
from qtpy.QtWidgets import QApplication


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default=None, help="the model both docks use (default: the bundled one)")
    parser.add_argument("--run", action="store_true", help="close while a propagation runs")
    args = parser.parse_args()
    viewer = napari.Viewer()
    clip = np.random.default_rng(0).integers(0, 256, (12, 64, 80, 3), dtype=np.uint8)
    labels = np.zeros((12, 64, 80), np.uint8)
    labels[0, 20:40, 30:50] = 1
    viewer.add_image(clip, name="clip", rgb=True)
    viewer.add_labels(labels, name="objects")
    _, propagate = viewer.window.add_plugin_dock_widget("napari-rgmp", "Propagate labels")
    _, finetune = viewer.window.add_plugin_dock_widget("napari-rgmp", "Fine-tune")
    if args.checkpoint:
        propagate.set_checkpoint(args.checkpoint)
        finetune.set_base_checkpoint(args.checkpoint)
    if args.run:
        propagate.device_combo.setCurrentText("cpu")
        propagate.run()
        while not propagate.confidence:  # the first frame is written
            QApplication.processEvents()
    QApplication.processEvents()
    viewer.close()
    live = sum(len(group.live) for dock in (propagate, finetune) for group in dock.worker_groups())
    print(f"closed; workers still running: {live}", flush=True)


if __name__ == "__main__":
    main()
