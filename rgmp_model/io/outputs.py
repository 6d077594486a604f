"""Where and how results are written: the output's path and kind, the checks before anything is
written (never over a user's input files or folders), and the writer that takes frame after frame.

The command line (``rgmp propagate --out``, ``rgmp batch``), the Propagate widget's export and
fine-tuning (its output checkpoint) check their target with :func:`check_not_input` before anything
is written. Output kinds (:func:`output_kinds`): the stack formats of :mod:`rgmp_model.io.formats`
("tif" and "zarr" label stacks), "png" a folder of palette PNGs, "ctc" the Cell Tracking Challenge layout (chosen by ``fmt="ctc"``, :data:`OUTPUT_FORMATS`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rgmp_model.io.formats import (
    DEFAULT_OUTPUT_FORMAT,
    FRAME_FOLDER_OUTPUT,
    file_formats,
    format_named,
    format_of_name,
    suffix_list,
)

__all__ = ["OUTPUT_FORMATS", "check_not_input", "check_output", "open_writer", "output_kind", "output_kinds",
           "output_path"]

OUTPUT_FORMATS = ("auto", "ctc")
"""``rgmp propagate --format``: auto, the kind from the output's suffix; ctc, the CTC layout."""


def output_kinds() -> tuple[str, ...]:
    """The kinds of output: each stack format's name (:mod:`rgmp_model.io.formats`: "tif", "zarr"),
    "png" (a folder of frames) and "ctc"."""
    return (*(f.name for f in file_formats() if f.create_store is not None), FRAME_FOLDER_OUTPUT, "ctc")


def _stack_suffixes() -> str:
    return suffix_list(f for f in file_formats() if f.create_store is not None)


def output_kind(out: str | os.PathLike) -> str:
    """The kind of a label stack written to ``out``, from its suffix: a stack format's name ("tif",
    "zarr"), else "png" (a folder)."""
    fmt = format_of_name(out)
    return fmt.name if fmt is not None and fmt.create_store is not None else FRAME_FOLDER_OUTPUT


def output_path(images: str | os.PathLike, out: str | os.PathLike | None = None, fmt: str = "auto") -> tuple[Path, str]:
    """(path, kind) of the output for the input ``images``: ``out`` when given, else
    ``<images name>_rgmp.tif`` (``<images name>_RES`` for ``fmt="ctc"``) in the current folder."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(OUTPUT_FORMATS)}")
    images = Path(images)
    source = format_of_name(images)
    stem = images.stem if source is not None and source.open_stack is not None else images.name
    if fmt == "ctc":
        return (Path(out) if out is not None else Path(f"{stem}_RES")), "ctc"
    path = Path(out) if out is not None else Path(f"{stem}_rgmp{format_named(DEFAULT_OUTPUT_FORMAT).suffixes[0]}")
    return path, output_kind(path)


def check_output(out: Path, kind: str, view: Any) -> None:
    """Refuse an output that cannot hold the result of ``view`` (a
    :class:`~rgmp_model.io.hyperstack.StackView`; CTC and PNG folders hold one stack) or that
    cannot be written (a read-only folder), before the model loads."""
    if view.count > 1 and kind == "ctc":
        raise ValueError(f"the Cell Tracking Challenge layout holds one time-lapse, but the images have "
                         f"{view.count} stacks along {view.other_name}: write a {_stack_suffixes()} instead")
    if view.count > 1 and kind == FRAME_FOLDER_OUTPUT:
        raise ValueError(f"--out {out}: a {kind.upper()} folder holds one stack; for {view.out_axes} output use "
                         f"{_stack_suffixes()}")
    folder = out.expanduser().absolute() if kind in (FRAME_FOLDER_OUTPUT, "ctc") else out.expanduser().absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the writer creates the missing folders below the nearest existing one
    if not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        raise ValueError(f"--out {out}: {folder} cannot be written (a read-only folder or no permission): "
                         "choose an output in a folder you can write to")


def open_writer(out: str | os.PathLike, kind: str, shape: Sequence[int], dtype: Any, *, axes: str | None = None,
                frame_names: Sequence[str] | None = None) -> Any:
    """The writer that puts each frame on disk as it comes (``writer[index] = labels``; ``close()``):
    a label stack of ``shape`` (..., H, W) and ``dtype`` (``axes`` its axis letters, ``frame_names``
    the PNGs' names), or for "ctc" the CTC layout of ``shape[0]`` frames."""
    from rgmp_model.io.ctc_export import CTCWriter
    from rgmp_model.io.label_io import LabelStackWriter

    if kind not in output_kinds():
        raise ValueError(f"unknown output kind {kind!r}: use one of {', '.join(output_kinds())}")
    if kind == "ctc":
        return CTCWriter(out, int(shape[0]))
    return LabelStackWriter(out, tuple(int(n) for n in shape), np.dtype(dtype), frame_names=frame_names, axes=axes)


def check_not_input(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], what: str = "the output") -> None:
    """Raise ValueError when ``out`` is one of ``inputs``, lies inside an input folder (a zarr store,
    a folder of frames) or holds an input (writing a store or folder there would replace it).
    ``what`` names the target in the message (e.g. "--out")."""
    target = Path(out).expanduser().resolve()
    for path in inputs:
        if path is None:
            continue
        source = Path(path).expanduser().resolve()
        if target == source or source.is_relative_to(target) or (source.is_dir() and target.is_relative_to(source)):
            raise ValueError(f"{what} {out} would overwrite an input: {path} is an input of this run; choose a "
                             "path outside the inputs (inputs are never overwritten)")
