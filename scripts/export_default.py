"""Export a trained model as the bundled default: fp16 weights, sha256, recipe and validation scores.

    python scripts/export_default.py runs/default/video/model.pt --davis DAVIS_ROOT

Scores the model as benchmarks/accuracy.py does (DAVIS protocol, working size 320 px) on the
validation sequences (libby, scooter-black: never trained on) and on the plugin's synthetic
samples, then writes rgmp_model/weights/default.pt (half precision) and default.pt.sha256, and
prints `rgmp models`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import davis_sequences, run_method, sample_sequences  # noqa: E402
from rgmp_model import load_checkpoint, save_checkpoint  # noqa: E402
from rgmp_model.metrics import summarize  # noqa: E402
from rgmp_model.models import BUNDLED_DIR, DEFAULT_NAME, write_file_sha256  # noqa: E402

VALIDATION_SEQUENCES = ("libby", "scooter-black")
# The scale stage 2 trains at: 160 px crops from frames whose short side is scaled to 144-240 px
# (scale_range 0.9-1.5 of "short side fills the crop"), i.e. 16:9 video seen at about 320x180.
WORKING_SIZE = 320
TRAINED_ON = ("DAVIS-2016 blackswan, car-roundabout, cows, dance-twirl, goat, paragliding-launch "
              "(stills in stage 1, clips in stage 2); synthetic video; synthetic microscopy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the trained model (stage 2's model.pt)")
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS root holding the validation sequences")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR / DEFAULT_NAME)
    parser.add_argument("--max-size", type=int, default=WORKING_SIZE,
                        help=f"the working size stored in the metadata and scored (default {WORKING_SIZE})")
    args = parser.parse_args(argv)

    model, info = load_checkpoint(args.checkpoint)
    source = dict(info.metadata)
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, sequences in (("DAVIS libby+scooter-black", davis_sequences(args.davis, VALIDATION_SEQUENCES)),
                                 ("synthetic microscopy sample", sample_sequences(["microscopy"])),
                                 ("synthetic video sample", sample_sequences(["video"]))):
            runs = [run_method("model", seq, model, Path(scratch), args.max_size, "tvl1", "cpu") for seq in sequences]
            overall = summarize([r.scores for r in runs])
            scores[f"{label} J&F"] = round(overall.jf_mean, 4)
            for r in runs:
                print(f"{r.scores.name}: J {r.scores.j_mean:.3f} F {r.scores.f_mean:.3f} J&F {r.scores.jf_mean:.3f}")
    stages = source.get("stages") or [{"recipe": source.get("recipe"), "iterations": source.get("iterations")}]
    metadata = {
        "recipe": "scripts/train_default.sh (training/configs/default_pretrain.yaml, default_video.yaml)",
        "iterations": sum(int(stage.get("iterations") or 0) for stage in stages),
        "stages": stages,
        "trained_on": TRAINED_ON,
        "validation": scores,
        "working_size": args.max_size,
        "config": source.get("config"),
        "loss_curve": source.get("loss_curve"),
        "source_sha256": info.sha256,
    }
    save_checkpoint(args.out, model, metadata, dtype=torch.float16)
    record = write_file_sha256(args.out)
    print(f"{args.out} ({args.out.stat().st_size / 2**20:.1f} MiB), {record.name}")
    from rgmp_model.cli import main as rgmp

    return rgmp(["models"])


if __name__ == "__main__":
    raise SystemExit(main())
