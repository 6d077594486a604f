"""Screenshots of the real napari viewer with the plugin's widgets docked, for the README.

    make screenshots            # runs this under xvfb: xvfb-run -a python scripts/screenshots.py docs/images

Steps, as a first-time user would take them:
  1. open the "Synthetic video clip (first-frame labels)" sample, dock "Propagate labels"
     (from the plugin's manifest)                                   -> propagate-before.png
  2. dock "Fine-tune", fine-tune a light model on the one labelled frame
     (the bundled default model when there is one, else a new ResNet-18 network) -> finetune-after.png
  3. propagate with the fine-tuned model, go to the least confident frame -> propagate-after.png
  4. correct that frame (the sample's ground truth stands in for the user's brush strokes) and
     press "Use this frame as a keyframe"                             -> propagate-corrected.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


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
    base = bundled_checkpoint()
    untrained = base is None
    if untrained:
        base = save_checkpoint(work / "light-resnet18.pt", build_rgmp("resnet18", 64),
                               {"recipe": "untrained ResNet-18 base for the screenshots"})

    viewer = napari.Viewer(title="napari-rgmp")
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-rgmp", "synthetic_video")
    _, propagate = viewer.window.add_plugin_dock_widget("napari-rgmp", "Propagate labels")
    settle(viewer)
    viewer.screenshot(str(args.out / "propagate-before.png"), canvas_only=False)

    _, finetune = viewer.window.add_plugin_dock_widget("napari-rgmp", "Fine-tune")
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
    viewer.screenshot(str(args.out / "finetune-after.png"), canvas_only=False)

    propagate.set_checkpoint(work / "synthetic-video-finetuned.pt")
    propagate.device_combo.setCurrentText("cpu")
    propagate.run()
    wait_for(propagate)
    propagate.go_to_least_confident()
    viewer.window._qt_window.raise_()
    settle(viewer, 1.0)
    viewer.screenshot(str(args.out / "propagate-after.png"), canvas_only=False)

    frame = propagate.least_confident_frame()
    output = propagate.output_layer
    output.data[frame] = sample_video_sequence().labels[frame]  # the user's correction
    output.refresh()
    propagate.use_current_frame_as_keyframe()
    wait_for(propagate)
    settle(viewer, 1.0)
    viewer.screenshot(str(args.out / "propagate-corrected.png"), canvas_only=False)
    print(f"screenshots in {args.out}: " + ", ".join(sorted(p.name for p in args.out.glob("*.png"))))
    viewer.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
