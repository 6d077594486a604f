"""What fine-tuning on the one labelled frame buys: J&F of a model before and after fine-tuning it
on frame 0's ground truth of each sequence (as a user does with the Fine-tune widget), then
propagating forward from frame 0.

    python benchmarks/finetune.py samples video
    python benchmarks/finetune.py ../shared/data/davis16-dev libby scooter-black
    python benchmarks/finetune.py samples --iterations 100 --checkpoint FILE

Fine-tuning runs `training.finetune.finetune_on_stack` at the Fine-tune widget's defaults
(100 iterations, learning rate 5e-5, batch 4, 256 px crops) unless told otherwise; only frame 0's
labels are given to it. Both models propagate at the base model's working size and are scored
with `rgmp evaluate`'s code (J, F, J&F; first and last frames excluded). The fine-tuned
checkpoints are written under --out (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.accuracy import FALLBACK_MAX_SIZE, EvalSequence, benchmark_max_size, load_sequences, propagation  # noqa: E402
from rgmp_model.eval.metrics import SequenceScores, evaluate_sequence  # noqa: E402


def first_frame_labels(seq: EvalSequence) -> np.ndarray:
    """(T, H, W) labels: frame 0's ground truth, every other frame 0 (what a user would give)."""
    truth0 = np.asarray(seq.truth[0])
    labels = np.zeros((len(seq.truth), *truth0.shape), dtype=truth0.dtype)
    labels[0] = truth0
    return labels


def score(seq: EvalSequence, model, max_size: int, device: str) -> SequenceScores:
    """Propagate forward from frame 0's ground truth and score against the ground truth."""
    predicted = np.zeros((len(seq.truth), *np.asarray(seq.truth[0]).shape), dtype=np.int64)
    for t, labels, _ in propagation("model", seq, model, max_size, "tvl1", device):
        predicted[t] = labels
    return evaluate_sequence(predicted, seq.truth, seq.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", help="DAVIS-layout root, or 'samples' for the bundled synthetic samples")
    parser.add_argument("sequences", nargs="*", help="sequence names (samples: microscopy, video; default both)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="base model (default: the bundled model)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--max-size", type=int, default=None,
                        help="working size; 0 = full size (default: the base model's working_size metadata, "
                             f"else {FALLBACK_MAX_SIZE})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="folder for the fine-tuned checkpoints")
    args = parser.parse_args(argv)

    from rgmp_model.nn.checkpoint import read_checkpoint_info
    from rgmp_model.nn.models import bundled_checkpoint
    from training.finetune import finetune_config, finetune_on_stack

    base = args.checkpoint or bundled_checkpoint()
    if base is None:
        raise SystemExit("no bundled model in this build: pass --checkpoint FILE")
    max_size = benchmark_max_size(args.max_size, read_checkpoint_info(base).working_size)
    try:
        sequences = load_sequences(args.data_root, args.sequences)
    except ValueError as error:
        parser.error(str(error))
    out = args.out or Path(tempfile.mkdtemp(prefix="rgmp-finetune-bench-"))
    overrides = [f"optim.iterations={args.iterations}", f"optim.lr={args.lr!r}", f"data.batch_size={args.batch_size}",
                 f"data.crop_size=[{args.crop_size}, {args.crop_size}]", f"device={args.device}"]

    print(f"base: {Path(base).name}; fine-tuning {args.iterations} iterations, lr {args.lr:g}, batch "
          f"{args.batch_size}, crop {args.crop_size} px on frame 0; working size {max_size or 'full'}; device {args.device}")
    header = f"{'sequence':<22}{'base J&F':>10}{'tuned J&F':>11}{'gain':>8}{'tuning min':>12}"
    print(header + "\n" + "-" * len(header), flush=True)
    rows = []
    for seq in sequences:
        before = score(seq, base, max_size, args.device).jf_mean
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rgmp-finetune-") as work:
            config = finetune_config(base, out / f"{seq.name}.pt", overrides, output_dir=work)
            tuned = finetune_on_stack(seq.frames, first_frame_labels(seq), config)
        minutes = (time.perf_counter() - started) / 60
        after = score(seq, tuned, max_size, args.device).jf_mean
        rows.append((before, after))
        print(f"{seq.name:<22}{before:>10.3f}{after:>11.3f}{after - before:>+8.3f}{minutes:>12.1f}", flush=True)
    before, after = np.mean(rows, axis=0)
    print("-" * len(header) + f"\n{'mean':<22}{before:>10.3f}{after:>11.3f}{after - before:>+8.3f}")
    print(f"fine-tuned checkpoints in {out}")
    print("command: python benchmarks/finetune.py " + " ".join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
