"""Time per object of one RGMP network call (encode + decode) against the number of objects per
call, at 864x480: the measurement behind the engine's ``object_batch`` default (all objects in one
batch on a GPU, one at a time on a CPU).

    python benchmarks/object_batch.py                  # CPU
    python benchmarks/object_batch.py --device cuda    # GPU
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from rgmp_model import build_rgmp


def seconds_per_object(model, batch: int, device: torch.device, repeats: int) -> float:
    frame = torch.rand(1, 3, 480, 864, device=device).contiguous(memory_format=torch.channels_last)
    masks = torch.rand(batch, 1, 480, 864, device=device).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = model.encode(frame, masks).r5
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model.decode(model.encode(frame, masks), reference)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - started)
    return best / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_rgmp(args.backbone, 256).to(device, memory_format=torch.channels_last).eval()
    print(f"command: python benchmarks/object_batch.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{args.backbone}, 864x480, {device}, channels-last; best of {args.repeats}")
    print("| objects per call | seconds per object |\n|---|---|")
    for batch in args.batches:
        print(f"| {batch} | {seconds_per_object(model, batch, device, args.repeats):.3f} |", flush=True)


if __name__ == "__main__":
    main()
