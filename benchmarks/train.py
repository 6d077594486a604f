"""Training speed and memory per stage, with the stage YAMLs of training/configs as shipped.

    python benchmarks/train.py                    # CPU
    python benchmarks/train.py --device cuda      # GPU

Each stage runs in a fresh process: ``--iterations`` steps after ``--warmup`` untimed steps, data
loading included (the config's workers, or ``--workers``), checkpoints and validation disabled.
Peak memory is the process's peak RSS on the CPU, torch.cuda.max_memory_allocated on a GPU. On a
GPU the table adds its utilisation: the time its kernels ran (torch profiler, CUDA activity) over
the wall-clock of the timed steps; a GPU that waits for data shows a low figure.
``--cache DIR`` sets ``data.decoded_cache`` (decoded samples kept on disk, training/decoded_cache.py);
a first pass fills it, so time a second run. The fine-tune stage trains on a synthetic 20-frame
256x320 stack with 2 annotated frames.

    python benchmarks/train.py --device cuda --workers 8 --cache runs/decoded --stages pretrain video
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def worker(stage: str, device: str, iterations: int, warmup: int, workers: int | None = None,
           cache: str | None = None) -> dict:
    import numpy as np
    import torch

    from rgmp_model import build_rgmp, save_checkpoint
    from rgmp_model.data.synthetic import synthetic_video
    from training.config import load_config
    from training.data import build_stage
    from rgmp_model.adapt.keyframe_pairs import KeyframePairDataset, KeyframeStills
    from rgmp_model.inference.frames import FrameStack
    from training.objectives import PairObjective
    from training.trainer import Trainer

    output = Path(tempfile.mkdtemp(prefix=f"bench-{stage}-"))
    total = warmup + iterations
    overrides = [f"output_dir={output}", f"device={device}", f"optim.iterations={total}", "resume=false",
                 f"schedule.checkpoint_every={10**9}", f"schedule.validate_every={10**9}"]
    if workers is not None:
        overrides.append(f"data.num_workers={workers}")
    if cache:
        overrides.append(f"data.decoded_cache={cache}")
    if stage == "finetune":  # a random light base model, and a stack with 2 annotated frames
        base = save_checkpoint(output / "base.pt", build_rgmp("resnet18", 64))
        config = load_config(ROOT / "training" / "configs" / "finetune.yaml", [*overrides, f"model.init_checkpoint={base}"])
        sequence = synthetic_video(num_frames=20, height=256, width=320, num_objects=2, seed=0)
        labels = np.zeros_like(sequence.labels)
        labels[[0, 10]] = sequence.labels[[0, 10]]
        dataset = KeyframePairDataset(KeyframeStills(FrameStack(sequence.frames), {t: labels[t] for t in (0, 10)}),
                                      crop_size=config.data.crop_size)

        def objective(model):
            return PairObjective(model, config.optim.aux_weight)
    else:  # trained from scratch, not from the stage-1 checkpoint the video YAML names
        config = load_config(ROOT / "training" / "configs" / f"{stage}.yaml", [*overrides, "model.init_checkpoint=null"])
        dataset, objective, _ = build_stage(config)
    times = []
    profiler = None
    if device.startswith("cuda"):  # kernel time over the timed steps
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])

    def progress(iteration: int, total_iterations: int, loss: float) -> None:
        if profiler is not None and iteration in (warmup + 1, total_iterations):
            torch.cuda.synchronize()
            (profiler.start if iteration == warmup + 1 else profiler.stop)()
        times.append(time.perf_counter())

    trainer = Trainer(config, dataset, objective, show_progress=False, on_progress=progress)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trainer.fit()
    timed = times[warmup:]
    result = {
        "iterations_per_second": (len(timed) - 1) / (timed[-1] - timed[0]) if len(timed) > 1 else float("nan"),
        "batch": config.data.batch_size,
        "crop": list(config.data.crop_size),
        "model": f"{config.model.backbone}/{config.model.decoder_channels}",
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "workers": config.data.num_workers,
    }
    if stage == "video":
        result["clip"] = config.data.clip_length
    if device.startswith("cuda"):
        result["peak_gpu"] = torch.cuda.max_memory_allocated()
        result["gpu_busy"] = kernel_seconds(profiler) / max(timed[-1] - timed[0], 1e-9) if len(timed) > 1 else float("nan")
    return result


def kernel_seconds(profiler) -> float:
    """The GPU kernels' own time recorded by a torch profiler (seconds)."""
    total = 0.0
    for event in profiler.key_averages():
        device_time = getattr(event, "self_device_time_total", None)
        if device_time is None:
            device_time = getattr(event, "self_cuda_time_total", 0.0)
        total += device_time
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=["pretrain", "video", "finetune"])
    parser.add_argument("--workers", type=int, default=None, help="data.num_workers (default: the config's)")
    parser.add_argument("--cache", default=None, help="data.decoded_cache: a folder for decoded samples")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.iterations, args.warmup, args.workers, args.cache)))
        return
    print(f"command: python benchmarks/train.py {' '.join(sys.argv[1:])}".rstrip())
    gpu = args.device.startswith("cuda")
    memory = "peak GPU memory" if gpu else "peak RSS"
    print(f"\n| stage | model | batch | crop | workers | iterations/s | samples/s | {memory} | GPU busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stage in args.stages:
        command = [sys.executable, __file__, "--worker", stage, "--device", args.device,
                   "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
        command += ["--workers", str(args.workers)] if args.workers is not None else []
        command += ["--cache", args.cache] if args.cache else []
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        batch = f"{r['batch']} clips of {r['clip']}" if stage == "video" else str(r["batch"])
        used = r.get("peak_gpu", r["peak_rss"]) / GIB
        busy = f"{100 * r['gpu_busy']:.0f}%" if "gpu_busy" in r else "-"
        print(f"| {stage} | {r['model']} | {batch} | {r['crop'][0]}x{r['crop'][1]} | {r['workers']} "
              f"| {r['iterations_per_second']:.3f} | {r['iterations_per_second'] * r['batch']:.2f} | {used:.2f} GiB "
              f"| {busy} |", flush=True)


if __name__ == "__main__":
    main()
