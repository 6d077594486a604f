"""Every row of a batch checked before any work starts, by ``rgmp propagate``'s own rules.

A row is written under a partial name beside its output (:func:`partial_path`: ``A01_rgmp.tif``
is written as ``A01_rgmp.partial.tif``) and renamed into place, atomically, once every frame is
done. So an output that exists is complete (:func:`output_complete`: the row is skipped on the
next run), and a row that failed or was interrupted leaves its frames done in the partial output
(a valid TIFF, zarr store, PNG folder or CTC folder), which the next run replaces.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rgmp_model.batch.rows import BatchRow, row_arguments

__all__ = ["CheckedRow", "check_rows", "output_complete", "partial_path"]

MAX_LISTED = 20  # problems listed in one message


@dataclass(frozen=True)
class CheckedRow:
    """A row that passed the checks: ``number`` (1-based, as in the report), its ``rgmp propagate``
    arguments, where it writes (``out``, ``kind`` as :func:`output_path` says, ``partial``) and
    whether ``out`` was already complete (the row is skipped)."""

    number: int
    row: BatchRow
    args: argparse.Namespace
    out: Path
    kind: str
    partial: Path
    complete: bool


def partial_path(out: Path, kind: str) -> Path:
    """Where a row is written until it is complete: ``name.partial.tif`` / ``.zarr`` beside a TIFF
    or zarr output (the suffix kept, so the writer is the same), ``name.partial`` for a folder."""
    if kind in ("tif", "zarr"):
        return out.with_name(f"{out.stem}.partial{out.suffix}")
    return out.with_name(f"{out.name}.partial")


def output_complete(out: Path) -> bool:
    """Whether a row's output is in place: only a complete row is renamed there (an empty folder,
    e.g. made beforehand for the results, does not count)."""
    return out.exists() and not (out.is_dir() and not any(out.iterdir()))


def _check_row(number: int, row: BatchRow, options: Mapping[str, Any] | None) -> tuple[CheckedRow, list[Path]]:
    """The checks of ``rgmp propagate`` for one row, before any model loads: its options, that
    its inputs exist and open, that neither its output nor its partial output is an input, and
    (for a row to run) that the output can be written and the labels hold keyframes."""
    from rgmp_model.cli_propagate import default_checkpoint, output_path, read_keyframes
    from rgmp_model.io.hyperstack import open_hyperstack
    from rgmp_model.io.outputs import check_not_input, check_output

    args = row_arguments(row, options)
    view = open_hyperstack(args.images, axes=args.axes).along(args.axis, args.channel)
    if not args.labels.exists():
        raise FileNotFoundError(f"the labels {args.labels} do not exist: check the path")
    checkpoint = args.checkpoint or default_checkpoint()
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"the checkpoint {checkpoint} does not exist: check the path")
    out, kind = output_path(args)
    partial = partial_path(out, kind)
    inputs = [args.images, args.labels, checkpoint]
    check_not_input(out, inputs, "out")
    check_not_input(partial, inputs, "the partial output")
    complete = output_complete(out)
    if not complete:
        check_output(out, kind, view)
        read_keyframes(args, view)
    return CheckedRow(number, row, args, out, kind, partial, complete), inputs


def check_rows(rows: Sequence[BatchRow], options: Mapping[str, Any] | None = None) -> list[CheckedRow]:
    """Check every row (see :func:`_check_row`) and the rows together: no two rows write the same
    output, and no row writes over another row's input. Raises ValueError listing every problem
    (up to ``MAX_LISTED``), so that one run of the checks finds them all."""
    from rgmp_model.cli_errors import is_user_error, user_message
    from rgmp_model.io.outputs import check_not_input

    if not rows:
        raise ValueError("the batch has no rows")
    problems: list[tuple[int, str]] = []
    checked: list[CheckedRow] = []
    inputs: set[Path] = set()
    for number, row in enumerate(rows, 1):
        try:
            row_checked, row_inputs = _check_row(number, row, options)
        except Exception as error:
            if not is_user_error(error):
                raise
            problems.append((number, f"row {number} ({row.images}): {user_message(error)}"))
            continue
        checked.append(row_checked)
        inputs.update(Path(p).expanduser().absolute() for p in row_inputs)
    writers: dict[Path, int] = {}
    for row in checked:
        for target in (row.out, row.partial):
            key = target.expanduser().absolute()
            if writers.setdefault(key, row.number) != row.number:
                problems.append((row.number, f"row {row.number} ({row.row.images}): out {row.out} is also written "
                                 f"by row {writers[key]}: give each row its own output"))
                break
        try:
            check_not_input(row.out, inputs, "out")
            check_not_input(row.partial, inputs, "the partial output")
        except ValueError as error:
            problems.append((row.number, f"row {row.number} ({row.row.images}): {error}"))
    if problems:
        problems.sort(key=lambda problem: problem[0])
        listed = [text for _, text in problems[:MAX_LISTED]] + ([f"... and {len(problems) - MAX_LISTED} more"]
                                          if len(problems) > MAX_LISTED else [])
        raise ValueError(f"{len(problems)} problem(s) in the batch, nothing was run:\n  " + "\n  ".join(listed))
    return checked
