"""The ``rgmp-train`` command line.

    rgmp-train pretrain --config training/configs/pretrain.yaml [key=value ...]
    rgmp-train video    --config training/configs/video.yaml optim.lr=1e-5
    rgmp-train finetune --images stack.tif --labels labels.tif --base CKPT --out CKPT [key=value ...]
    torchrun --nproc_per_node=4 -m training.cli video --config training/configs/video.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .config import CONFIG_DIR


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rgmp-train",
        description="Train RGMP: stage 1 on pairs simulated from still images (pretrain), stage 2 "
        "on video clips (video), or fine-tune a checkpoint on a labelled stack (finetune). "
        "Settings come from a YAML file (training/configs/<stage>.yaml by default) and "
        "key=value overrides such as optim.lr=1e-5 data.batch_size=8.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", choices=("pretrain", "video", "finetune"))
    parser.add_argument("--config", type=Path, default=None, help="YAML file (default: the stage's file in training/configs)")
    parser.add_argument("--images", type=Path, help="finetune: image stack (TIFF or folder of frames)")
    parser.add_argument("--labels", type=Path, help="finetune: label stack; frames with labels are the training frames")
    parser.add_argument("--base", type=Path, help="finetune: checkpoint to start from")
    parser.add_argument("--out", type=Path, help="finetune: path of the new checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # overrides may follow --config
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"rgmp-train {args.stage}: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .config import load_config

    overrides = list(args.overrides)
    for name in ("images", "labels", "base", "out"):
        value = getattr(args, name)
        if value is not None:
            if args.stage != "finetune":
                raise ValueError(f"--{name} is only for rgmp-train finetune")
            overrides.append(f"finetune.{name}={value}")
    config = load_config(args.config or CONFIG_DIR / f"{args.stage}.yaml", [f"stage={args.stage}", *overrides])
    if config.stage == "finetune":
        from .finetune import finetune_from_config

        path = finetune_from_config(config)
    else:
        from .data import build_stage
        from .trainer import Trainer

        dataset, objective, validation = build_stage(config)
        path = Trainer(config, dataset, objective, validation_sequences=validation).fit()
    print(f"checkpoint: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
