"""Propagation speed and memory: the authors' procedure vs our official and default modes.

    python benchmarks/propagate.py                  # CPU, ResNet-50, 480x854, 1 and 5 objects
    python benchmarks/propagate.py --device cuda    # the same on a GPU
    python benchmarks/propagate.py --skip-long      # without the 300-frame memory run
    python benchmarks/propagate.py --encoders-only  # only the encoder table

Encoder table: default mode, one object, each encoder (ResNet-18/50, EfficientNet-Lite0/Lite2)
with the decoder width it ships with, at the working sizes given by --working-sizes (longer side;
0 = full size).

Rows (random weights; speed does not depend on them):
  (a) the authors' run.py procedure (tests/helpers/authors_reference.py): each object and a background
      pass one at a time, scales 0.5/0.75/1.0, tensors moved per call, the whole sequence's
      probabilities held in memory, as in their code;
  (b) our official mode (same procedure and results, passes batched, streaming);
  (c) our default mode (objects batched, soft aggregation, single scale, streaming).
Each configuration runs in a fresh process so that its peak memory is its own: peak RSS on the
CPU, torch.cuda.max_memory_allocated on a GPU. Frames/s counts propagated frames, reference
encoding included, after one untimed warm-up frame.
The long run propagates a 300-frame 480x854 uint8 stack held in memory into a preallocated uint8
output and checks peak RSS < input + output + 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 480, 854
GIB = 1024**3


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _frames_and_labels(num_frames: int, num_objects: int):
    from rgmp_model.data.synthetic import synthetic_video

    sequence = synthetic_video(num_frames=num_frames, height=HEIGHT, width=WIDTH, num_objects=num_objects, seed=1)
    return sequence.frames, sequence.labels[0]


def worker(config: dict) -> dict:
    """Run one configuration and return its measurements."""
    import numpy as np
    import torch

    from rgmp_model import PropagationOptions, build_rgmp, open_session

    torch.manual_seed(0)
    device = torch.device(config["device"])
    model = build_rgmp(config["backbone"], config["decoder_channels"]).to(device).eval()
    frames, labels = _frames_and_labels(config["frames"], config["objects"])
    present = [int(i) for i in np.unique(labels) if i != 0]
    if len(present) != config["objects"]:
        raise RuntimeError(f"expected {config['objects']} objects on frame 0, found {len(present)}")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    if config["method"] == "authors":
        sys.path.insert(0, str(ROOT))
        from tests.helpers.authors_reference import infer_mo, pad_like_dataset

        def run(count: int) -> None:
            f = torch.from_numpy(frames[:count]).float().div(255).permute(0, 3, 1, 2)
            m = torch.from_numpy(np.stack([labels == k for k in present])).float()
            padded_f, padded_m, _ = pad_like_dataset(f, m)
            infer_mo(model, padded_f, padded_m)
    else:
        mode = "official" if config["method"] == "official" else "default"
        output = np.zeros((config["frames"], HEIGHT, WIDTH), np.uint8)

        def run(count: int) -> None:
            options = PropagationOptions(mode=mode, device=str(device), max_size=config.get("max_size"))
            session = open_session(model, frames[:count], options)
            session.add_keyframe(0, labels)
            for t, result, _ in session.propagate("forward"):
                output[t] = result

    with torch.inference_mode():
        run(2)  # warm-up: one propagated frame
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        started = time.perf_counter()
        run(config["frames"])
        sync()
        elapsed = time.perf_counter() - started
    result = {"fps": (config["frames"] - 1) / elapsed, "seconds": elapsed, "peak_rss": _peak_rss_bytes()}
    if device.type == "cuda":
        result["peak_gpu"] = torch.cuda.max_memory_allocated(device)
    return result


def long_worker(config: dict) -> dict:
    """300 frames at 480x854, held in memory as uint8, propagated into a uint8 output."""
    import numpy as np
    import torch

    from rgmp_model import PropagationOptions, build_rgmp, open_session

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (HEIGHT, WIDTH + config["frames"], 3), dtype=np.uint8)
    frames = np.stack([tile[:, t : t + WIDTH] for t in range(config["frames"])])  # a panning texture
    labels = np.zeros((HEIGHT, WIDTH), np.uint8)
    labels[100:300, 200:500] = 1
    labels[320:440, 600:800] = 2
    output = np.zeros(frames.shape[:3], np.uint8)
    model = build_rgmp(config["backbone"], config["decoder_channels"])
    baseline = _peak_rss_bytes()
    session = open_session(model, frames, PropagationOptions(device=config["device"]))
    session.add_keyframe(0, labels)
    started = time.perf_counter()
    for t, result, _ in session.propagate("forward"):
        output[t] = result
    elapsed = time.perf_counter() - started
    return {"fps": (config["frames"] - 1) / elapsed, "peak_rss": _peak_rss_bytes(), "rss_before": baseline,
            "input": frames.nbytes, "output": output.nbytes}


def _spawn(function: str, config: dict) -> dict:
    command = [sys.executable, __file__, "--worker", function, json.dumps(config)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{function} {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


ENCODER_ROWS = (("resnet18", 64), ("resnet50", 256), ("efficientnet_lite0", 64), ("efficientnet_lite2", 64))


def _encoder_table(args: argparse.Namespace) -> None:
    """Frames/s of the default mode, one object, for each encoder at each working size."""
    print(f"\nencoders: default mode, 1 object, {WIDTH}x{HEIGHT} frames, random weights")
    sizes = " | ".join(f"frames/s at {size} px" if size else "frames/s at full size" for size in args.working_sizes)
    print(f"\n| encoder | decoder | {sizes} |")
    print("|---|---|" + "---|" * len(args.working_sizes))
    for backbone, channels in ENCODER_ROWS:
        cells = []
        for size in args.working_sizes:
            config = {"method": "default", "objects": 1, "frames": args.frames, "device": args.device,
                      "backbone": backbone, "decoder_channels": channels, "max_size": size}
            cells.append(f"{_spawn('worker', config)['fps']:.2f}")
        print(f"| {backbone} | {channels} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=4, help="frames per speed run (the first is the keyframe)")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--long-frames", type=int, default=300)
    parser.add_argument("--long-backbone", default="resnet18")
    parser.add_argument("--long-decoder-channels", type=int, default=64)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--encoders-only", action="store_true", help="only the encoder table")
    parser.add_argument("--working-sizes", type=int, nargs="+", default=[384, 0],
                        help="working sizes of the encoder table (longer side, 0 = full size)")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        function, config = args.worker
        print(json.dumps({"worker": worker, "long": long_worker}[function](json.loads(config))))
        return

    import torch

    print(f"command: python benchmarks/propagate.py {' '.join(sys.argv[1:])}".rstrip())
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device_name}; torch {torch.__version__}")
    _encoder_table(args)
    if args.encoders_only:
        return
    print(f"\nprocedures: ResNet-50 RGMP (decoder 256) at {WIDTH}x{HEIGHT}, full size, random weights")
    memory_column = "peak GPU memory" if args.device.startswith("cuda") else "peak RSS"
    print(f"\n| objects | method | frames/s | speed vs (a) | {memory_column} |")
    print("|---|---|---|---|---|")
    names = {"authors": "(a) authors' procedure", "official": "(b) official mode", "default": "(c) default mode"}
    verdicts = []
    for objects in args.objects:
        measured = {}
        for method in ("authors", "official", "default"):
            config = {"method": method, "objects": objects, "frames": args.frames, "device": args.device,
                      "backbone": "resnet50", "decoder_channels": 256}
            measured[method] = _spawn("worker", config)
            m = measured[method]
            memory = m.get("peak_gpu", m["peak_rss"]) / GIB
            ratio = m["fps"] / measured["authors"]["fps"]
            print(f"| {objects} | {names[method]} | {m['fps']:.3f} | {ratio:.2f}x | {memory:.2f} GiB |", flush=True)
        verdicts.append((f"{objects} object(s): (b) not slower than (a)",
                         measured["official"]["fps"] >= measured["authors"]["fps"]))
        if objects >= 5:
            verdicts.append((f"{objects} objects: (c) at least 2x faster than (a)",
                             measured["default"]["fps"] >= 2 * measured["authors"]["fps"]))
    if not args.skip_long:
        config = {"frames": args.long_frames, "device": args.device, "backbone": args.long_backbone,
                  "decoder_channels": args.long_decoder_channels}
        m = _spawn("long", config)
        budget = m["input"] + m["output"] + 1.5 * GIB
        print(f"\nlong stack: {args.long_frames} frames {WIDTH}x{HEIGHT} uint8, {args.long_backbone} (decoder {args.long_decoder_channels}), 2 objects, default mode: "
              f"{m['fps']:.2f} frames/s; peak RSS {m['peak_rss'] / GIB:.2f} GiB (before propagation "
              f"{m['rss_before'] / GIB:.2f} GiB); input {m['input'] / GIB:.2f} GiB + output {m['output'] / GIB:.2f} GiB "
              f"+ 1.5 GiB = {budget / GIB:.2f} GiB")
        verdicts.append(("long stack: peak RSS under input + output + 1.5 GiB", m["peak_rss"] < budget))
    print()
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")


if __name__ == "__main__":
    main()
