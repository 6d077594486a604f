"""Training speed and memory per stage, with the stage YAMLs of training/configs as shipped.

    python benchmarks/train.py                    # CPU
    python benchmarks/train.py --device cuda      # GPU

Each stage runs in a fresh process: ``--iterations`` steps after ``--warmup`` untimed steps, data
loading included (the config's workers), checkpoints and validation disabled. Peak memory is the
process's peak RSS on the CPU, torch.cuda.max_memory_allocated on a GPU. The fine-tune stage
trains on a synthetic 20-frame 256x320 stack with 2 annotated frames.
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


def worker(stage: str, device: str, iterations: int, warmup: int) -> dict:
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
    trainer = Trainer(config, dataset, objective, show_progress=False,
                      on_progress=lambda i, n, loss: times.append(time.perf_counter()))
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
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--stages", nargs="+", default=["pretrain", "video", "finetune"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.iterations, args.warmup)))
        return
    print(f"command: python benchmarks/train.py {' '.join(sys.argv[1:])}".rstrip())
    memory = "peak GPU memory" if args.device.startswith("cuda") else "peak RSS"
    print(f"\n| stage | model | batch | crop | iterations/s | samples/s | {memory} |")
    print("|---|---|---|---|---|---|---|")
    for stage in args.stages:
        command = [sys.executable, __file__, "--worker", stage, "--device", args.device,
                   "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"{stage} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        batch = f"{r['batch']} clips of {r['clip']}" if stage == "video" else str(r["batch"])
        used = r.get("peak_gpu", r["peak_rss"]) / GIB
        print(f"| {stage} | {r['model']} | {batch} | {r['crop'][0]}x{r['crop'][1]} | {r['iterations_per_second']:.3f} "
              f"| {r['iterations_per_second'] * r['batch']:.2f} | {used:.2f} GiB |", flush=True)


if __name__ == "__main__":
    main()
