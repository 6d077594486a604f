"""The ``rgmp`` command line: ``rgmp propagate`` (in :mod:`rgmp_model.cli_propagate`), ``rgmp batch``
(in :mod:`rgmp_model.cli_batch`), ``rgmp evaluate`` and ``rgmp models``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rgmp_model import __version__
from rgmp_model.cli_errors import exit_code, user_message
from rgmp_model.cli_batch import add_batch
from rgmp_model.cli_propagate import add_propagate
from rgmp_model.steps import start_steps

_EPILOG = """examples:
  rgmp propagate JPEGImages/480p/blackswan --labels Annotations/480p/blackswan/00000.png \\
       --checkpoint weights.pth --out results/blackswan
  rgmp propagate cells.tif --labels cells_labels.tif --direction both --out cells_propagated.tif
  rgmp propagate embryo.tif --labels embryo_labels.tif --axis z --out embryo_rgmp.zarr   # TZYX, per t
  rgmp propagate cells.tif --labels cells_labels.tif --format ctc --out 01_RES --region on --split-divisions
  rgmp batch --images 'plate/*.tif' --labels 'plate/*_labels.tif' --out-dir results/   # many stacks
  rgmp evaluate results/ DAVIS/ --csv scores.csv
  rgmp models                       # bundled and user checkpoints, hashes verified
  rgmp models --add finetuned.pt    # copy a checkpoint into the user model folder
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rgmp",
        description="Propagate labels through an image stack with RGMP, and score the results.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"napari-rgmp {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of its message")
    commands = parser.add_subparsers(dest="command", required=True)
    add_propagate(commands)
    add_batch(commands)
    _add_evaluate(commands)
    _add_models(commands)
    args = parser.parse_args(argv)
    start_steps(f"starting rgmp {args.command}")  # an unexpected error names the step it came at (rgmp_model.steps)
    try:
        return args.run(args)
    except BaseException as error:  # messages, not tracebacks (rgmp_model.cli_errors); --debug: the traceback
        if args.debug or not isinstance(error, Exception | KeyboardInterrupt):
            raise
        print(f"rgmp {args.command}: {'' if isinstance(error, KeyboardInterrupt) else 'error: '}"
              f"{user_message(error)}", file=sys.stderr)
        return exit_code(error)


# ------------------------------------------------------------------------------------ evaluate


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "evaluate",
        help="score predicted labels against ground truth (DAVIS protocol: J, F, J&F)",
        description="PRED and GT: label TIFF stacks (one sequence each), sequence folders of label "
        "images, folders of sequence folders, or DAVIS roots (Annotations/<resolution>/<seq>). "
        "The sequences in PRED are scored, each against the ground truth of the same name (one "
        "sequence against one: whatever their names; the table names it after PRED). J = IoU, F = boundary F-measure (tolerance "
        "ceil(0.008 x diagonal) px); first and last frames excluded; statistics per object, "
        "averaged over objects.",
    )
    p.add_argument("pred", type=Path)
    p.add_argument("gt", type=Path)
    p.add_argument("--sequences", nargs="+", default=None, help="only these sequences (default: all in PRED)")
    p.add_argument("--resolution", default="480p", help="resolution folder of a DAVIS root (default 480p)")
    p.add_argument("--csv", type=Path, default=None, help="also write per-object statistics as CSV")
    p.set_defaults(run=_run_evaluate)


def find_sequences(path: Path, resolution: str = "480p") -> dict[str, Path]:
    """Sequence name -> label stack path (TIFF file or folder of label images)."""
    from rgmp_model.io.formats import format_of

    def stack_file(p: Path) -> bool:  # a file that holds a label stack (TIFF), not one frame
        fmt = format_of(p)
        return fmt is not None and not fmt.folder and fmt.open_label_stack is not None

    def frame_file(p: Path) -> bool:  # one frame of a folder of label images (PNG)
        fmt = format_of(p)
        return fmt is not None and fmt.frame_file and fmt.open_label_stack is None

    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if not stack_file(path):
            raise ValueError(f"{path}: a single file must be a label TIFF stack")
        return {path.stem: path}
    davis = path / "Annotations" / resolution
    if davis.is_dir():
        path = davis
    if any(frame_file(f) for f in path.iterdir()):
        return {path.name: path}
    found = {}
    for child in sorted(path.iterdir()):
        if child.is_dir() or stack_file(child):
            found[child.stem if child.is_file() else child.name] = child
    if not found:
        raise ValueError(f"{path} holds no label sequences (folders of label images or TIFF stacks)")
    return found


def _run_evaluate(args: argparse.Namespace) -> int:
    from rgmp_model.io.label_io import open_label_stack
    from rgmp_model.eval.metrics import evaluate_sequence, format_table, write_csv

    gt = find_sequences(args.gt, args.resolution)
    pred = find_sequences(args.pred, args.resolution)
    if len(gt) == 1 and len(pred) == 1:  # two single sequences: compare them whatever their names
        gt = {next(iter(pred)): next(iter(gt.values()))}  # named from the prediction
    names = list(args.sequences) if args.sequences else sorted(pred)  # the sequences predicted
    missing = [n for n in names if n not in pred]
    if missing:
        raise ValueError(f"{args.pred} has no predictions for {', '.join(missing)}: propagate them first, or "
                         f"leave them out of --sequences")
    unknown = [n for n in names if n not in gt]
    if unknown:
        raise ValueError(f"no ground truth for {', '.join(unknown)} in {args.gt} (its sequences: "
                         f"{', '.join(sorted(gt)[:8])}{', ...' if len(gt) > 8 else ''}): name the prediction "
                         "like its ground truth, or choose the sequences with --sequences")
    scores = []
    for name in names:
        predicted, truth = open_label_stack(pred[name]), open_label_stack(gt[name])
        if predicted.shape != truth.shape:
            raise ValueError(
                f"sequence {name}: prediction has shape {predicted.shape}, ground truth {truth.shape}"
            )
        scores.append(evaluate_sequence(predicted, truth, name=name))
    print(format_table(scores))
    if args.csv is not None:
        write_csv(args.csv, scores)
        print(f"per-object statistics -> {args.csv}")
    return 0


# ------------------------------------------------------------------------------------ models


def _add_models(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "models",
        help="list the bundled and user checkpoints and verify their hashes",
        description="Lists the checkpoint bundled with napari-rgmp and every *.pt/*.pth in the user "
        "model folder ($RGMP_MODELS_DIR, default: the platform's cache folder + napari-rgmp/models), "
        "each read as the loader does: the weights' sha256 (and the bundled file's own sha256) are "
        "verified. Exit status 1 when a checkpoint is damaged.",
    )
    p.add_argument("--add", type=Path, default=None, metavar="FILE",
                   help="copy this checkpoint into the user model folder (after checking that it loads)")
    p.add_argument("--name", default=None, help="file name for --add (default: FILE's name)")
    p.add_argument("--overwrite", action="store_true", help="let --add replace a model of the same name")
    p.set_defaults(run=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from rgmp_model.nn.models import MODELS_DIR_VARIABLE, add_user_model, list_models, user_models_dir

    if args.add is not None:
        target = add_user_model(args.add, args.name, args.overwrite)
        print(f"added {args.add} -> {target}")
    entries = list_models()
    print(f"user model folder: {user_models_dir()} (set ${MODELS_DIR_VARIABLE} to change it)")
    if not entries:
        print("no checkpoints: this napari-rgmp has no bundled model and the user folder is empty")
        return 0
    for entry in entries:
        if entry.ok:
            assert entry.info is not None
            meta = entry.info.metadata
            scores = meta.get("validation") or {}
            line = f"[{entry.location}] {entry.path}\n    {entry.info.describe()}; sha256 {entry.info.sha256[:16]}... ok"
            if isinstance(scores, dict) and scores:
                line += "\n    validation: " + ", ".join(f"{k} {v}" for k, v in scores.items())
        else:
            line = f"[{entry.location}] {entry.path}\n    DAMAGED: {entry.problem}"
        print(line)
    return 0 if all(e.ok for e in entries) else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
