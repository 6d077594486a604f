"""Why masks of large low-contrast nuclei shrink: the area a model keeps in ONE step from the true
previous mask, and over a whole free run, in region mode with and without the per-crop contrast
stretch and in full frames.

    python benchmarks/shrinking.py                          # the low-contrast set, the bundled model
    python benchmarks/shrinking.py faint-uint8 --checkpoint runs/default/longclips/best.pt

One step: for frames t = 1..N, the network starts from the true labels of frame t - 1 (as the
keyframe) and propagates to frame t; "one-step area" is the mean over objects and frames of
predicted / true area. A model whose one-step area is below 1 places the outline inside the true
one; a free run then settles where its outline is stable (or loses the object). Free run: frame
0's labels propagated over the whole sequence as `rgmp propagate` does; the mean area ratio at
frames 1, 10 and the last, and its frames/s. Variants: "region, stretched" (region mode as shipped:
each object's crop seen at twice its size, ``RegionOptions.crop_scale``, and each grey crop
stretched by its own percentiles, rgmp_model/inference/crop_contrast.py), "region, stretched,
crop scale 1" (the crops at the objects' own size, as before issue 21), "region, unstretched"
(the shipped crops without the stretch) and "full frames" (region="off", at the working size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fluorescence_set import LOW_CONTRAST_SET, low_contrast_sequences  # noqa: E402
from rgmp_model.inference.frames import FrameStack  # noqa: E402
from rgmp_model.inference.labels import ObjectIds  # noqa: E402
from rgmp_model.inference.options import PropagationOptions  # noqa: E402
from rgmp_model.inference.region import RegionOptions, RegionTracker  # noqa: E402
from rgmp_model.inference.session import load_model, open_session  # noqa: E402

VARIANTS = ("region, stretched", "region, stretched, crop scale 1", "region, unstretched", "full frames")


def _ratios(labels: np.ndarray, truth: np.ndarray, ids: Sequence[int]) -> list[float]:
    return [float((labels == i).sum()) / float((truth == i).sum()) for i in ids if (truth == i).any()]


def _tracker(model: Any, variant: str, crop_size: int | None = None) -> RegionTracker:
    network = model if isinstance(model, torch.nn.Module) else load_model(model, "cpu")[0]
    scale = 1.0 if variant.endswith("crop scale 1") else RegionOptions.crop_scale
    options = RegionOptions(normalise=variant.startswith("region, stretched"), crop_scale=scale, crop_size=crop_size)
    return RegionTracker(network, options, grey=True)


def one_step(model: Any, frames: Any, truth: Any, steps: int, variant: str, crop_size: int | None = None) -> float:
    """Mean predicted / true area after one step from the true previous labels, frames 1..steps
    (region mode: every crop at ``crop_size`` network pixels when given)."""
    ratios: list[float] = []
    stack = FrameStack(frames)
    for t in range(1, steps + 1):
        ids = [int(i) for i in np.unique(truth[t - 1]) if i]
        if variant == "full frames":
            session = open_session(model, frames[t - 1 : t + 1],
                                   PropagationOptions(direction="forward", region="off", device="cpu"))
            session.add_keyframe(0, truth[t - 1])
            labels = [lab for k, lab, _ in session.propagate() if k == 1][0]
        else:
            objects = ObjectIds.from_frames([truth[t - 1]])
            tracker = _tracker(model, variant, crop_size)
            with torch.inference_mode():
                tracker.start(_tensor(stack, t - 1), objects.channels(truth[t - 1]), list(range(1, len(objects) + 1)))
                labels = objects.to_ids(tracker.step(_tensor(stack, t)).channels)
        ratios += _ratios(labels, truth[t], ids)
    return float(np.mean(ratios))


def _tensor(stack: FrameStack, t: int) -> torch.Tensor:
    return torch.from_numpy(stack[t]).permute(2, 0, 1)[None]


def free_run(model: Any, frames: Any, truth: Any, variant: str) -> tuple[dict[int, float], float]:
    """{frame: mean predicted / true area} at frames 1, 10 and the last, frame 0's labels propagated
    (full frames: as `rgmp propagate --region off`; region mode: one tracker, as the session runs
    it), and the run's frames/s."""
    ids = [int(i) for i in np.unique(truth[0]) if i]
    wanted = (1, 10, len(truth) - 1)
    start = time.perf_counter()
    if variant == "full frames":
        session = open_session(model, frames, PropagationOptions(direction="forward", region="off", device="cpu"))
        session.add_keyframe(0, truth[0])
        areas = {t: float(np.mean(_ratios(lab, truth[t], ids))) for t, lab, _ in session.propagate() if t in wanted}
        return areas, (len(truth) - 1) / (time.perf_counter() - start)
    stack, objects = FrameStack(frames), ObjectIds.from_frames([truth[0]])
    tracker = _tracker(model, variant)
    out = {}
    with torch.inference_mode():
        tracker.start(_tensor(stack, 0), objects.channels(truth[0]), list(range(1, len(objects) + 1)))
        for t in range(1, len(truth)):
            labels = objects.to_ids(tracker.step(_tensor(stack, t)).channels)
            if t in wanted:
                out[t] = float(np.mean(_ratios(labels, truth[t], ids)))
    return out, (len(truth) - 1) / (time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sequences", nargs="*", help=f"from {', '.join(LOW_CONTRAST_SET)} (default all)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--steps", type=int, default=30, help="frames measured one step at a time (default 30)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--crop-sizes", default=None, metavar="PX,PX,...",
                        help="instead of the variants: one-step area of region mode without the stretch with "
                             "every crop at each of these network sizes (e.g. 64,128,192,256)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from rgmp_model.nn.models import bundled_checkpoint

    model = args.checkpoint or bundled_checkpoint()
    if args.crop_sizes:
        return _crop_size_scan(model, args, [int(v) for v in args.crop_sizes.split(",")], argv)
    rows = []
    for seq in low_contrast_sequences(args.sequences):
        steps = min(args.steps, len(seq.labels) - 1)
        for variant in VARIANTS:
            step = one_step(model, seq.frames, seq.labels, steps, variant)
            run, speed = free_run(model, seq.frames, seq.labels, variant)
            rows.append((seq.name, variant, step, *run.values(), speed))
            print(f"  {seq.name:<14} {variant:<32} one-step area {step:.3f}  free run "
                  + "  ".join(f"t={t}: {a:.3f}" for t, a in run.items()) + f"  {speed:.2f} frames/s", flush=True)
    print()
    print(f"{'sequence':<14} {'variant':<32} {'one-step area':>13} {'run t=1':>8} {'run t=10':>8} {'run end':>8} "
          f"{'frames/s':>8}")
    for name, variant, step, *run in rows:
        print(f"{name:<14} {variant:<32} {step:13.3f} " + " ".join(f"{a:8.3f}" for a in run[:3]) + f" {run[3]:8.2f}")
    for variant in VARIANTS:
        mine = [r for r in rows if r[1] == variant]
        print(f"{'mean':<14} {variant:<32} {np.mean([r[2] for r in mine]):13.3f} "
              + " ".join(f"{np.mean([r[k] for r in mine]):8.3f}" for k in (3, 4, 5)))
    print(f"model: {model}")
    print("command: python benchmarks/shrinking.py " + " ".join(list(argv) if argv is not None else sys.argv[1:]))
    return 0


def _crop_size_scan(model: Any, args: argparse.Namespace, sizes: list[int], argv: Sequence[str] | None) -> int:
    """One-step area of region mode (unstretched) at fixed crop sizes: the scale the network sees."""
    print(f"{'sequence':<14} " + " ".join(f"{f'crop {s}':>9}" for s in sizes))
    for seq in low_contrast_sequences(args.sequences):
        steps = min(args.steps, len(seq.labels) - 1)
        areas = [one_step(model, seq.frames, seq.labels, steps, "region, unstretched", size) for size in sizes]
        print(f"{seq.name:<14} " + " ".join(f"{a:9.3f}" for a in areas), flush=True)
    print(f"model: {model}")
    print("command: python benchmarks/shrinking.py " + " ".join(list(argv) if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
