"""This tree's propagation speed against another tree's (e.g. an older commit), measured in one
run: the trees take turns, each case in a fresh process, on the CPU with one torch thread.

    git worktree add /tmp/base 7dfaafa        # or: mkdir /tmp/base && git archive 7dfaafa | tar -x -C /tmp/base
    python benchmarks/speedup.py /tmp/base --rounds 3

Cases (the same inputs and options for both trees; only ``open_session`` and the synthetic data
generators are used, which every tree since region mode has):
- region: ``benchmarks/microscopy.py``'s 8-frame uint16 sequence, 40 nuclei in 1024x1024 frames,
  region mode, forward from frame 0. frames/s as microscopy.py counts it (frames 1-7, the start
  of the stretch included: reference crops encoded on frame 1), and per frame after frame 1.
- video: a synthetic 854x480 clip with one object, 20 frames, at the model's working size;
  frames/s after frame 1 (which encodes the reference).
Printed: each tree's median over the rounds, and this tree's speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from rgmp_model import PropagationOptions, open_session
from rgmp_model.nn.models import bundled_checkpoint
case, frames = sys.argv[1], int(sys.argv[2])
if case == "region":
    from rgmp_model.data.synthetic_fluorescence import synthetic_fluorescence
    seq = synthetic_fluorescence(frames, 1024, 1024, 40, seed=2026_1130, dtype="uint16")
    labels = seq.labels[0].astype(np.int64)
    options = PropagationOptions(direction="forward", max_size=0, region="on", device="cpu")
else:
    from rgmp_model.data.synthetic import synthetic_video
    seq = synthetic_video(num_frames=frames, height=480, width=854, num_objects=1, seed=0)
    labels = np.asarray(seq.labels[0])
    options = PropagationOptions(direction="forward", device="cpu")
session = open_session(bundled_checkpoint(), seq.frames, options)
session.add_keyframe(0, labels)
times, started = [], time.perf_counter()
for t, _, _ in session.propagate():
    times.append(time.perf_counter() - started)
    started = time.perf_counter()
rest = times[2:]
print(json.dumps({"with_start": (len(times) - 1) / sum(times[1:]), "after_first": len(rest) / sum(rest)}))
"""


def measure(tree: Path, case: str, frames: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, case, str(frames)], cwd=tree, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{case} in {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="the other tree (its repository root)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["region", "video"], choices=["region", "video"])
    args = parser.parse_args()
    print("command: python benchmarks/speedup.py " + " ".join(sys.argv[1:]))
    trees = {"baseline": args.baseline.resolve(), "this tree": ROOT}
    frames = {"region": 8, "video": 20}
    results: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]  # take turns
        for case in args.cases:
            for name in order:
                result = measure(trees[name], case, frames[case])
                results.setdefault((case, name), []).append(result)
                print(f"round {round_ + 1} {case:<6} {name:<9} {result['with_start']:.2f} frames/s "
                      f"(after frame 1: {result['after_first']:.2f})", flush=True)
    print(f"\nbaseline: {trees['baseline']}; medians of {args.rounds} rounds, one torch thread\n")
    print("| case | measure | baseline frames/s | this tree frames/s | speed-up |\n|---|---|---|---|---|")
    for case in args.cases:
        for measure_name, label in (("with_start", "frames 1-7, start included (microscopy.py)" if case == "region"
                                     else "after frame 1"), ("after_first", "after frame 1")):
            if case == "video" and measure_name == "with_start":
                continue
            base = statistics.median(r[measure_name] for r in results[case, "baseline"])
            ours = statistics.median(r[measure_name] for r in results[case, "this tree"])
            print(f"| {case} | {label} | {base:.2f} | {ours:.2f} | **{ours / base:.2f}x** |")


if __name__ == "__main__":
    main()
