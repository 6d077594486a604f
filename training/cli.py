"""The ``rgmp-train`` command line: one sub-command per stage, each with its own ``--help``.

    rgmp-train pretrain [--config NAME|FILE] [--init CKPT] [key=value ...]
    rgmp-train video    [--config NAME|FILE] [--init CKPT] [key=value ...]
    rgmp-train finetune --images STACK --labels LABELS [--reference-frame N] --base CKPT|default --out CKPT
                        [--overwrite] [--config NAME|FILE] [key=value ...]
    torchrun --nproc_per_node=4 -m training.cli video --config default_video
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

from rgmp_model.steps import start_steps

from .config import CONFIG_DIR, TrainConfig

DEFAULT_MODEL = "default"  # --base / --init value meaning the bundled model

_EPILOG = """examples:
  rgmp-train pretrain --config pretrain data.batch_size=8      # a bundled config, by name
  rgmp-train video --config my_video.yaml --init runs/pretrain/model.pt optim.lr=1e-5
  rgmp-train finetune --images cells.tif --labels frame0.png --reference-frame 0 --base default --out cells.pt
  rgmp-train finetune --help                                   # the options of one stage
"""
_STAGES = {
    "pretrain": "stage 1: pairs simulated from still images (a new network, or --init weights)",
    "video": "stage 2: recurrent training on video clips, usually from the pretrain stage's model.pt (--init)",
    "finetune": "adapt a checkpoint to a user's stack from its labelled frames",
}
_OVERRIDES = ("settings that replace the config's, e.g. optim.lr=1e-5 data.batch_size=8 output_dir=runs/x "
              "(sections: model, data, optim, schedule, validation). finetune keeps its run folder (log, config, "
              "loss plot) in the user cache, as the napari Fine-tune dock does, unless output_dir= is given")


def _config_help(stage: str) -> str:
    from .config import bundled_configs

    names = ", ".join(bundled_configs()) or "none installed"
    return (f"YAML file, or the name of a bundled config ({names}); default: {stage} "
            f"(the bundled {CONFIG_DIR.name}/{stage}.yaml)")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The ``rgmp-train`` parser and one parser per stage (``rgmp-train STAGE --help``)."""
    parser = argparse.ArgumentParser(
        prog="rgmp-train",
        description="Train RGMP networks. Settings come from a YAML config (a bundled one by name, or a file) "
        "and key=value overrides; 'rgmp-train STAGE --help' lists the options of a stage.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="stage", required=True, metavar="{pretrain,video,finetune}")
    stages = {}
    for stage, summary in _STAGES.items():
        p = commands.add_parser(stage, help=summary, description=summary[0].upper() + summary[1:] + ".")
        p.add_argument("--config", default=stage, metavar="NAME|FILE", help=_config_help(stage))
        if stage == "finetune":
            _add_finetune_options(p)
        else:
            p.add_argument("--init", default=None, metavar="CKPT|default",
                           help="checkpoint to start from (model.init_checkpoint); 'default': the bundled model")
        p.add_argument("--debug", action="store_true", help="show the traceback of an error instead of its message")
        p.add_argument("--show-config", action="store_true",
                       help="print the config file used and every setting after the overrides, then exit")
        p.add_argument("overrides", nargs="*", metavar="key=value", help=_OVERRIDES)
        stages[stage] = p
    return parser, stages


def _add_finetune_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, metavar="STACK",
                   help="image stack to train on: TIFF, zarr, folder of frames or one image")
    p.add_argument("--labels", type=Path, metavar="LABELS",
                   help="a label image for one frame (see --reference-frame), or a label stack whose labelled "
                   "frames are the training frames")
    p.add_argument("--reference-frame", type=int, default=None, metavar="N",
                   help="frame a label image belongs to (default 0), or the one frame of a label stack to train on")
    p.add_argument("--at", type=int, default=None, metavar="I",
                   help="for a stack with time and z: the index of the other axis to train on")
    p.add_argument("--axis", default=None, metavar="t|z|N",
                   help="for a stack with time and z: the axis whose frames form the training stack (default t)")
    p.add_argument("--axes", default=None, metavar="LETTERS",
                   help="the stack's axes when the file does not name them, e.g. ZTYX (letters TZCYX)")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="the channel to train on, for images with channels other than 1 or 3 (RGB)")
    p.add_argument("--base", default=None, metavar="CKPT|default",
                   help="checkpoint to start from; 'default': the bundled model")
    p.add_argument("--out", type=Path, default=None, metavar="CKPT",
                   help="path of the new checkpoint (an existing file is refused without --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="let --out replace an existing file")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, stages = build_parser()
    if not argv or argv[0] not in stages:
        parser.parse_args(argv)  # --help, or the error that names the stages (exits)
    args = stages[argv[0]].parse_intermixed_args(argv[1:])  # overrides may come between options
    args.stage = argv[0]
    start_steps(f"starting rgmp-train {args.stage}")  # an unexpected error names its step (rgmp_model.steps)
    try:
        return _run(args)
    except (Exception, KeyboardInterrupt) as error:  # messages, not tracebacks (rgmp_model.cli_errors); --debug: both
        from rgmp_model.cli_errors import exit_code, user_message

        if args.debug:
            raise
        prefix = "" if isinstance(error, KeyboardInterrupt) else "error: "
        print(f"rgmp-train {args.stage}: {prefix}{user_message(error)}", file=sys.stderr)
        return exit_code(error)


def resolve_default_model(config: TrainConfig) -> TrainConfig:
    """``finetune.base`` and ``model.init_checkpoint`` "default" -> the bundled model's path."""
    from rgmp_model.nn.models import bundled_checkpoint

    def resolved(value: str | None, option: str) -> str | None:
        if value != DEFAULT_MODEL:
            return value
        bundled = bundled_checkpoint()
        if bundled is None:
            raise FileNotFoundError(f"{option} default: this napari-rgmp has no bundled model; give {option} "
                                    "a checkpoint file")
        return str(bundled)

    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, init_checkpoint=resolved(config.model.init_checkpoint, "--init")),
        finetune=dataclasses.replace(config.finetune, base=resolved(config.finetune.base, "--base")),
    )


def _gives_output_dir(found: object, overrides: Sequence[str]) -> bool:
    """Whether the user chose the run folder: an ``output_dir=`` override, or their own config
    file naming one (a bundled config's output_dir is only a default)."""
    import yaml

    from .config import bundled_configs

    if any(o.split("=", 1)[0].strip() == "output_dir" for o in overrides):
        return True
    if any(str(found) == str(bundled) for bundled in bundled_configs().values()):
        return False
    values = yaml.safe_load(found.read_text(encoding="utf-8")) or {}  # type: ignore[attr-defined]
    return isinstance(values, dict) and "output_dir" in values


def _finetune_folder(config: TrainConfig, chosen_folder: bool) -> TrainConfig:
    """The run folder of ``rgmp-train finetune``: the cache's, as the Fine-tune dock's
    (:func:`training.run_folders.finetune_run_folder`), unless the user chose one."""
    from .run_folders import finetune_run_folder

    if chosen_folder or config.finetune.out is None:
        return config
    return dataclasses.replace(config, output_dir=str(finetune_run_folder(config.finetune.out)))


def _check_new_out(config: TrainConfig, overwrite: bool) -> None:
    """A fine-tuning run never replaces an existing checkpoint unless asked to (after the config's
    own checks, before any work)."""
    from rgmp_model.io.outputs import check_not_input

    from .finetune import check_finetune_config

    check_finetune_config(config)
    options = config.finetune
    out = Path(str(options.out))
    check_not_input(out, [options.base, options.images, options.labels], "--out")  # before "exists"
    if out.exists() and not overwrite:
        raise ValueError(f"--out {out} exists: choose another file, or add --overwrite to replace it")


def _show_finetune_config(config: TrainConfig, found: object) -> None:
    """The settings a fine-tuning run uses: the base checkpoint's network, not the config's."""
    import yaml

    from rgmp_model.nn.checkpoint import read_checkpoint_info

    from .finetune import applicable_settings

    print(f"# config: {found}")
    base = config.finetune.base
    if base is None:
        print("# base: not set (--base FILE, or --base default for the bundled model)")
    else:
        info = read_checkpoint_info(base)
        size = f"{info.working_size} px" if info.working_size else "full size"
        print(f"# base: {base}\n#   the network is the base's: {info.config.backbone}, decoder "
              f"{info.config.decoder_channels} channels, working size {size} (model.backbone, data.sources and "
              "validation do not apply)")
    print(yaml.safe_dump(applicable_settings(config), sort_keys=False), end="")


def _run(args: argparse.Namespace) -> int:
    from .config import find_config, load_config

    overrides = list(args.overrides)
    if getattr(args, "init", None) is not None:
        overrides.append(f"model.init_checkpoint={args.init}")
    for name in ("images", "labels", "base", "out"):
        if getattr(args, name, None) is not None:
            overrides.append(f"finetune.{name}={getattr(args, name)}")
    found = find_config(args.config)
    config = resolve_default_model(load_config(found, [*overrides, f"stage={args.stage}"]))
    if config.stage == "finetune":
        config = _finetune_folder(config, _gives_output_dir(found, args.overrides))
    if args.show_config:
        import yaml

        if config.stage == "finetune":
            _show_finetune_config(config, found)
            return 0
        print(f"# config: {found}")
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if config.stage == "finetune":
        from .finetune import StackChoice, finetune_from_config

        _check_new_out(config, args.overwrite)
        print(f"run folder: {config.output_dir} (log, config, loss plot)", flush=True)
        choice = StackChoice(args.reference_frame, args.at, args.axis, args.axes, args.channel)
        path = finetune_from_config(config, choice)
    else:
        from .data import build_stage
        from .trainer import Trainer

        dataset, objective, validation = build_stage(config)
        path = Trainer(config, dataset, objective, validation_sequences=validation).fit()
    print(f"checkpoint: {path}")
    if config.stage == "finetune":
        print(f"run folder: {config.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
