"""The engine's own cost per frame, outside the network: region mode on 40 nuclei in 1024x1024
uint16 frames, and one object in 854x480 video at the model's working size.

    python benchmarks/overhead.py                       # the bundled model, CPU, one torch thread
    python benchmarks/overhead.py --device cuda --frames 30
    python benchmarks/overhead.py --cases region --profile
    python benchmarks/overhead.py --device cuda --cases video --max-size 0 --precision bf16 --objects 5
    python benchmarks/overhead.py --device cuda --cases video --backbone resnet50 --max-size 0

Each case opens a session as the CLI does (``open_session``), propagates forward from frame 0's
labels, and times every frame after the first (the first encodes the keyframe's reference). The
network's stage methods (``encode``, ``decode``, ``object_probability`` of the network the
session runs) are timed apart, so "outside" is everything else: reading and normalising frames,
resizing, cutting and pasting crops, merging objects, labels, the host transfer. Printed per
case: frames/s, and per frame the total, the network and the rest (wall-clock; on a GPU after a
synchronisation at the end of each frame), and the process's CPU time in and outside the
network (on a shared CPU less disturbed by other processes than the wall-clock).
``--profile`` adds the torch profiler's top operators.
The region case's frames are ``benchmarks/microscopy.py``'s (same seed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 2026_1130  # benchmarks/microscopy.py's sequence
STAGES = ("encode", "decode", "object_probability")


def case_frames(case: str, frames: int, objects: int = 1) -> tuple[np.ndarray, np.ndarray, dict]:
    """(T, H, W[, 3]) frames, frame 0's labels and the session options of a case."""
    if case == "region":
        from rgmp_model.data.synthetic_fluorescence import synthetic_fluorescence

        seq = synthetic_fluorescence(frames, 1024, 1024, 40, seed=SEED, dtype="uint16")
        return seq.frames, seq.labels[0].astype(np.int64), {"max_size": 0, "region": "on"}
    from rgmp_model.data.synthetic import synthetic_video

    seq = synthetic_video(num_frames=frames, height=480, width=854, num_objects=objects, seed=0)
    return seq.frames, np.asarray(seq.labels[0]), {"region": "off"}


class StageTimer:
    """Wraps the stage methods of ``network`` (on the instance) and adds up their wall-clock."""

    def __init__(self, network, synchronise) -> None:
        self.seconds, self.cpu, self.depth, self.synchronise = 0.0, 0.0, 0, synchronise
        for name in STAGES:
            setattr(network, name, self._timed(getattr(network, name)))

    def _timed(self, method):
        def timed(*args, **kwargs):
            if self.depth:  # object_probability calls decode: counted once
                return method(*args, **kwargs)
            self.depth += 1
            self.synchronise()
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                self.synchronise()
                self.seconds += time.perf_counter() - started
                self.cpu += time.process_time() - cpu
                self.depth -= 1
        return timed


def run_case(case: str, args: argparse.Namespace) -> dict:
    import torch

    from rgmp_model import PropagationOptions, open_session
    from rgmp_model.nn.models import bundled_checkpoint

    frames, labels, options = case_frames(case, args.frames, args.objects)
    if case == "video" and args.max_size is not None:
        options["max_size"] = args.max_size
    options = PropagationOptions(direction="forward", device=args.device, precision=args.precision, **options)
    if args.backbone:  # random weights of another network: its speed (no recorded working size)
        from rgmp_model import build_rgmp

        torch.manual_seed(0)
        model = build_rgmp(args.backbone, args.decoder_channels)
        if case == "video" and args.max_size is None:
            options = options.replace(max_size=384)
    else:
        model = args.checkpoint or bundled_checkpoint()
    session = open_session(model, frames, options)
    session.add_keyframe(0, labels)
    device = session.device
    if args.no_graphs:
        session.network.graphs = None
    synchronise = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    timer = StageTimer(session.network, synchronise)
    results = session.propagate()
    next(results)  # the keyframe
    next(results)  # frame 1: the reference crops or features are encoded
    timer.seconds = timer.cpu = 0.0
    profiler = None
    if args.profile:
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        profiler.__enter__()
    started, cpu, count = time.perf_counter(), time.process_time(), 0
    for _ in results:
        synchronise()
        count += 1
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profiler is not None:
        profiler.__exit__(None, None, None)
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    size = f"{session.frames.width}x{session.frames.height}"
    detail = f"{args.backbone or 'model'}, {session.options.precision}, {len(np.unique(labels)) - 1} objects, {size}"
    detail += ", region mode" if session.region_used.get(0) else f", working size {session.working_size[1]}x{session.working_size[0]}"
    return {"case": case, "detail": detail, "frames": count, "fps": count / total, "total": total / count * 1e3,
            "network": timer.seconds / count * 1e3, "outside": (total - timer.seconds) / count * 1e3,
            "cpu_network": timer.cpu / count * 1e3, "cpu_outside": (cpu - timer.cpu) / count * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["region", "video"], choices=["region", "video"])
    parser.add_argument("--frames", type=int, default=12, help="frames per case (the first two are not timed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--profile", action="store_true", help="also print the torch profiler's top operators")
    parser.add_argument("--objects", type=int, default=1, help="objects in the video case")
    parser.add_argument("--max-size", type=int, default=None, help="video working size (0: full size; default: the model's)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--backbone", default=None, help="random weights of this encoder instead of the model")
    parser.add_argument("--decoder-channels", type=int, default=256, help="with --backbone")
    parser.add_argument("--no-graphs", action="store_true", help="eager network calls (no CUDA graphs)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print("command: python benchmarks/overhead.py " + " ".join(sys.argv[1:]))
    print(f"device {args.device}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}")
    print("\n| case | frames/s | per frame | network | outside the network | (CPU time: network / outside) |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        r = run_case(case, args)
        print(f"| {r['case']} ({r['detail']}) | {r['fps']:.2f} | {r['total']:.1f} ms | {r['network']:.1f} ms "
              f"| **{r['outside']:.1f} ms** | {r['cpu_network']:.1f} / {r['cpu_outside']:.1f} ms |", flush=True)


if __name__ == "__main__":
    main()
