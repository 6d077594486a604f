"""Non-learned baselines for label propagation, with the same inputs and output as `rgmp propagate`.

- copy: the keyframe's labels on every frame;
- flow: the previous frame's labels (as one-hot probabilities) warped to the current frame along
  dense optical flow (scikit-image TV-L1 by default), frame by frame, at the same working size as
  the model (``--max-size``, default 480 px on the longer side).

    python benchmarks/baselines.py flow JPEGImages/480p/libby --labels Annotations/480p/libby/00000.png \\
        --out results/flow/libby
    rgmp evaluate results/flow DAVIS_ROOT --sequences libby

The generators yield ``(frame_index, labels, confidence)`` like ``PropagationSession.propagate``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from rgmp_model.inference.flow import FLOW_METHODS, dense_flow, grey, warp_along_flow
from rgmp_model.inference.frames import FrameStack
from rgmp_model.inference.propagators import resize_bilinear, winner_confidence
from rgmp_model.inference.labels import ObjectIds, validate_label_frame
from rgmp_model.inference.options import working_size

FrameResult = tuple[int, np.ndarray, dict[int, float]]
BASELINES = ("copy", "flow")


def _order(keyframe: int, num_frames: int, direction: str) -> list[list[int]]:
    if direction not in ("forward", "backward", "both"):
        raise ValueError(f"direction must be forward, backward or both, got {direction!r}")
    runs = []
    if direction in ("backward", "both"):
        runs.append(list(range(keyframe - 1, -1, -1)))
    if direction in ("forward", "both"):
        runs.append(list(range(keyframe + 1, num_frames)))
    return runs


def copy_propagation(frames: Any, keyframe: int, labels: Any, direction: str = "forward") -> Iterator[FrameResult]:
    """frames (T, H, W[, C]), labels (H, W) of frame ``keyframe`` -> the same labels on every frame."""
    stack = FrameStack(frames)
    key = validate_label_frame(labels, (stack.height, stack.width), keyframe)
    ids = [int(i) for i in np.unique(key) if i != 0]
    yield keyframe, key.copy(), {i: 1.0 for i in ids}
    for run in _order(keyframe, stack.num_frames, direction):
        for t in run:
            yield t, key.copy(), {i: 1.0 for i in ids}


def flow_propagation(
    frames: Any, keyframe: int, labels: Any, direction: str = "forward", max_size: int | None = 480,
    method: str = "tvl1",
) -> Iterator[FrameResult]:
    """frames (T, H, W[, C]), labels (H, W) of frame ``keyframe`` -> labels warped frame by frame
    along the optical flow (computed at the working size) from the keyframe."""
    stack = FrameStack(frames)
    key = validate_label_frame(labels, (stack.height, stack.width), keyframe)
    objects = ObjectIds.from_frames([key])
    full = (stack.height, stack.width)
    working = working_size(*full, max_size)

    def grey_frame(t: int) -> np.ndarray:
        frame = torch.from_numpy(stack[t]).permute(2, 0, 1)[None]
        return grey(resize_bilinear(frame, working, antialias=True)[0])

    channels = torch.from_numpy(objects.channels(key).astype(np.int64))
    one_hot = torch.nn.functional.one_hot(channels, len(objects) + 1).permute(2, 0, 1).float()
    start = resize_bilinear(one_hot[None], working, antialias=True)[0]
    yield keyframe, key.copy(), {int(i): 1.0 for i in objects.ids}
    for run in _order(keyframe, stack.num_frames, direction):
        probabilities, previous = start, grey_frame(keyframe)
        for t in run:
            current = grey_frame(t)
            probabilities = warp_along_flow(probabilities, dense_flow(current, previous, method))
            previous = current
            at_full = resize_bilinear(probabilities[None], full)[0]
            winner = at_full.argmax(dim=0)
            yield t, objects.to_ids(winner.numpy()), winner_confidence(at_full, winner, objects.ids)


def run_baseline(name: str, frames: Any, keyframe: int, labels: Any, direction: str = "forward",
                 max_size: int | None = 480, flow_method: str = "tvl1") -> Iterator[FrameResult]:
    """``copy`` or ``flow`` by name."""
    if name == "copy":
        return copy_propagation(frames, keyframe, labels, direction)
    if name == "flow":
        return flow_propagation(frames, keyframe, labels, direction, max_size, flow_method)
    raise ValueError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")


def main(argv: Sequence[str] | None = None) -> int:
    from rgmp_model.io.label_io import LabelStackWriter, frame_names, open_label_stack
    from rgmp_model.io.stack_io import open_image_stack

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", choices=BASELINES)
    parser.add_argument("images", type=Path, help="TIFF stack, folder of frames, or image")
    parser.add_argument("--labels", type=Path, required=True, help="label image of the reference frame")
    parser.add_argument("--reference-frame", type=int, default=0, metavar="N")
    parser.add_argument("--out", type=Path, required=True, help="output .tif file or PNG folder")
    parser.add_argument("--direction", choices=("forward", "backward", "both"), default="both")
    parser.add_argument("--max-size", type=int, default=480, metavar="PX")
    parser.add_argument("--flow-method", choices=FLOW_METHODS, default="tvl1")
    args = parser.parse_args(argv)
    try:
        images = open_image_stack(args.images)
        labels = open_label_stack(args.labels)
        keyframe_labels = np.asarray(labels[0 if labels.shape[0] == 1 else args.reference_frame])
        count = images.shape[0]
        shape = (count, *keyframe_labels.shape)
        started = time.perf_counter()
        results = run_baseline(args.baseline, images, args.reference_frame, keyframe_labels, args.direction,
                               args.max_size, args.flow_method)
        with LabelStackWriter(args.out, shape, keyframe_labels.dtype, frame_names=frame_names(images, count)) as out:
            done = 0
            for t, frame_labels, _ in results:
                out[t] = frame_labels
                done += 1
    except (ValueError, FileNotFoundError) as error:
        print(f"baselines.py: error: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(f"{args.baseline}: {done} frames in {elapsed:.1f} s ({done / elapsed:.2f} frames/s) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
