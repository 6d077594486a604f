"""The one-command demo (`make demo`, `make demo HEADLESS=1`).

GUI: opens napari with the synthetic microscopy time-lapse sample and its first-frame labels, the
"Propagate labels" widget docked with the default model selected and the viewer on the labelled
frame: press Run (the viewer follows the frames as they are propagated).

Headless (``--headless``): the same job through the command line, on both bundled samples
(synthetic microscopy and synthetic video): ``rgmp propagate`` from frame 0's labels, then
``rgmp evaluate`` against the samples' ground truth, which prints J, F and J&F.

    python scripts/demo.py [--checkpoint FILE] [--headless] [--quit-after SECONDS]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NO_MODEL = ("this napari-rgmp has no bundled default model (rgmp_model/weights/default.pt): train it with "
            "scripts/train_default.sh DAVIS_ROOT, or pass --checkpoint FILE (CHECKPOINT=FILE with make)")


def _checkpoint(given: str | None) -> Path:
    from rgmp_model.nn.models import bundled_checkpoint

    path = Path(given) if given else bundled_checkpoint()
    if path is None:
        raise SystemExit(f"demo: {NO_MODEL}")
    if not path.is_file():
        raise SystemExit(f"demo: checkpoint {path} does not exist")
    return path


def headless(checkpoint: Path, device: str) -> int:
    """Propagate both samples with the `rgmp` command line and score them; returns the exit status."""
    from napari_rgmp.samples import sample_microscopy_sequence, sample_video_sequence
    from rgmp_model.data.synthetic_io import save_tiff

    rgmp = [sys.executable, "-m", "rgmp_model.cli"]
    with tempfile.TemporaryDirectory(prefix="rgmp-demo-") as work:
        for name, make in (("synthetic-microscopy", sample_microscopy_sequence), ("synthetic-video", sample_video_sequence)):
            seq = make()
            folder = Path(work) / name
            save_tiff(seq, folder / "frames.tif", folder / "truth.tif")
            import tifffile

            tifffile.imwrite(folder / "frame0_labels.tif", seq.labels[0])
            prediction = folder / f"{name}.tif"
            print(f"\n== {name}: {seq.frames.shape[0]} frames of {seq.frames.shape[2]}x{seq.frames.shape[1]}, "
                  f"{len(set(seq.labels[0].ravel().tolist())) - 1} objects labelled on frame 0", flush=True)
            steps = [
                ["propagate", str(folder / "frames.tif"), "--labels", str(folder / "frame0_labels.tif"),
                 "--checkpoint", str(checkpoint), "--direction", "forward", "--device", device,
                 "--out", str(prediction)],
                ["evaluate", str(prediction), str(folder / "truth.tif")],
            ]
            for step in steps:
                print("$ rgmp " + " ".join(step[:1] + [Path(a).name if os.sep in a else a for a in step[1:]]), flush=True)
                status = subprocess.call(rgmp + step, cwd=ROOT)
                if status != 0:
                    return status
    return 0


def open_demo(viewer: Any, checkpoint: Path, device: str = "auto") -> Any:
    """The demo in ``viewer``: the synthetic microscopy sample, the "Propagate labels" dock with
    ``checkpoint`` chosen, and the viewer on the keyframe (the dock moves it there when it sees the
    stack). Returns the dock widget."""
    viewer.open_sample("napari-rgmp", "synthetic_microscopy")
    _, widget = viewer.window.add_plugin_dock_widget("napari-rgmp", "Propagate labels")
    widget.set_checkpoint(checkpoint)
    if device != "auto":
        widget.device_combo.setCurrentText(device)
    return widget


def gui(checkpoint: Path, device: str, quit_after: float | None) -> int:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise SystemExit("demo: no display to open napari on: run `make demo HEADLESS=1`, or start it under "
                         "xvfb-run to try it without a screen")
    import napari

    viewer = napari.Viewer(title="napari-rgmp demo")
    widget = open_demo(viewer, checkpoint, device)
    print(f"napari is open with the synthetic time-lapse on its labelled frame {widget.current_frame()} and "
          f"{checkpoint.name} selected: press Run in the 'Propagate labels' dock.", flush=True)
    if quit_after is not None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(int(quit_after * 1000), viewer.close)
    napari.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=os.environ.get("CHECKPOINT") or None,
                        help="model to use (default: the bundled one)")
    parser.add_argument("--headless", action="store_true", help="run the job through the CLI and print J&F")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quit-after", type=float, default=None, metavar="SECONDS",
                        help="GUI: close the viewer after this long (for tests)")
    args = parser.parse_args(argv)
    checkpoint = _checkpoint(args.checkpoint)
    if args.headless:
        return headless(checkpoint, args.device)
    return gui(checkpoint, args.device, args.quit_after)


if __name__ == "__main__":
    raise SystemExit(main())
