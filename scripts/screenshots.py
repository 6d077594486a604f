"""Screenshots of the real napari viewer with the plugin's widgets docked, for the README.

    make screenshots            # runs this under xvfb: xvfb-run -a python scripts/screenshots.py docs/images

Steps, as a first-time user would take them, in a 1280x800 window:
  1. open the "Synthetic video clip (first-frame labels)" sample, dock "Propagate labels" and
     "Fine-tune" (from the plugin's manifest: the second becomes a tab beside the first)
                                                                    -> propagate-before.png
  2. in the Fine-tune tab, fine-tune a light model on the one labelled frame
     (the bundled default model when there is one, else a new ResNet-18 network) -> finetune-after.png
  3. propagate with the fine-tuned model, go to the least confident frame -> propagate-after.png
  4. correct that frame (the sample's ground truth stands in for the user's brush strokes) and
     press "Use frame as keyframe"                                    -> propagate-corrected.png

Each picture is the 1280x800 window as the docks left it (they fit the view to the clip when they
open), the canvas rendered at its real size and pasted in (a window grab can hold a stale,
stretched canvas), the clip's aspect on the canvas checked against the data's (a cut or squashed
picture is an error), and the dock shown without scrolling (its scroll bar at 0 range).
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QPoint
from qtpy.QtGui import QImage, QPainter
from qtpy.QtWidgets import QApplication

WINDOW = (1280, 800)  # the xvfb screen of `make screenshots`: a laptop screen
ASPECT_TOLERANCE = 0.03


def wait_for(widget, timeout: float = 1800.0) -> None:
    """Process Qt events until the widget's worker has finished."""
    started = time.monotonic()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
        if time.monotonic() - started > timeout:
            raise TimeoutError("the worker did not finish in time")
    for _ in range(20):
        QApplication.processEvents()


def settle(viewer, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def content_aspect(canvas: np.ndarray) -> float:
    """Width / height of the non-black part of a canvas screenshot (H, W, 3 or 4) (the clip)."""
    rows, cols = np.nonzero(canvas[..., :3].max(axis=-1) > 8)
    if rows.size == 0:
        raise RuntimeError("the canvas is empty: nothing was drawn")
    return (cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1)


def save(viewer, path: Path, data_aspect: float, dock=None) -> None:
    """The window as it is, its canvas rendered now at its real size; refuses a squashed or cut
    clip, and a ``dock`` that would need scrolling."""
    window = viewer.window._qt_window
    window.resize(*WINDOW)
    settle(viewer, 0.3)
    if dock is not None and dock.scroll.verticalScrollBar().maximum() > 0:
        raise RuntimeError(f"{path.name}: the {type(dock).__name__} needs scrolling at {WINDOW[0]}x{WINDOW[1]}")
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    aspect = content_aspect(canvas)
    if abs(aspect / data_aspect - 1) > ASPECT_TOLERANCE:
        raise RuntimeError(f"{path.name}: the clip is drawn at aspect {aspect:.3f}, the data's is {data_aspect:.3f} "
                           "(cut or squashed)")
    image = window.grab().toImage().convertToFormat(QImage.Format.Format_RGBA8888)
    native = viewer.window._qt_viewer.canvas.native
    rgba = np.ascontiguousarray(canvas)
    drawn = QImage(rgba.data, rgba.shape[1], rgba.shape[0], rgba.strides[0], QImage.Format.Format_RGBA8888)
    drawn.setDevicePixelRatio(rgba.shape[1] / max(native.width(), 1))
    painter = QPainter(image)
    painter.drawImage(native.mapTo(window, QPoint(0, 0)), drawn)
    painter.end()
    if not image.save(str(path)):
        raise RuntimeError(f"could not write {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs/images"))
    parser.add_argument("--iterations", type=int, default=None, help="default: the widget's")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    from napari_rgmp.samples import sample_video_sequence
    from rgmp_model import build_rgmp, save_checkpoint
    from rgmp_model.nn.models import bundled_checkpoint

    torch.manual_seed(0)

    work = Path(tempfile.mkdtemp(prefix="rgmp-screenshots-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # the fine-tuned model and its run, also on failure
    os.environ["RGMP_MODELS_DIR"] = str(work / "models")  # the pictures list no user models; nothing left behind
    base = bundled_checkpoint()
    untrained = base is None
    if untrained:
        base = save_checkpoint(work / "light-resnet18.pt", build_rgmp("resnet18", 64),
                               {"recipe": "untrained ResNet-18 base for the screenshots"})

    viewer = napari.Viewer(title="napari-rgmp")
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample("napari-rgmp", "synthetic_video")
    height, width = viewer.layers["synthetic video"].data.shape[1:3]
    aspect = width / height
    propagate_dock, propagate = viewer.window.add_plugin_dock_widget("napari-rgmp", "Propagate labels")
    finetune_dock, finetune = viewer.window.add_plugin_dock_widget("napari-rgmp", "Fine-tune")  # a tab
    settle(viewer, 1.0)  # the new tab is raised once it has joined the first
    propagate_dock.raise_()
    settle(viewer, 1.0)
    save(viewer, args.out / "propagate-before.png", aspect, propagate)

    finetune_dock.raise_()
    finetune.set_base_checkpoint(base)
    if args.iterations is not None:
        finetune.iterations.setValue(args.iterations)
    if untrained:  # from scratch it needs a higher rate than the widget's default for adapting a model
        finetune.learning_rate.setText("1e-3")
    finetune.crop_size.setValue(192)
    finetune.device.setCurrentText("cpu")
    finetune.set_output(work / "synthetic-video-finetuned.pt")
    finetune.run()
    wait_for(finetune)
    settle(viewer)
    save(viewer, args.out / "finetune-after.png", aspect, finetune)

    propagate_dock.raise_()
    propagate.set_checkpoint(work / "synthetic-video-finetuned.pt")
    propagate.device_combo.setCurrentText("cpu")
    propagate.run()
    wait_for(propagate)
    propagate.go_to_least_confident()
    viewer.window._qt_window.raise_()
    settle(viewer, 1.0)
    save(viewer, args.out / "propagate-after.png", aspect, propagate)

    frame = propagate.least_confident_frame()
    output = propagate.output_layer
    output.data[frame] = sample_video_sequence().labels[frame]  # the user's correction
    output.refresh()
    propagate.use_current_frame_as_keyframe()
    wait_for(propagate)
    propagate.go_to_frame(frame)  # the viewer followed the run: back to the corrected frame
    settle(viewer, 1.0)
    save(viewer, args.out / "propagate-corrected.png", aspect, propagate)
    print(f"screenshots in {args.out}: " + ", ".join(sorted(p.name for p in args.out.glob("*.png"))))
    viewer.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
