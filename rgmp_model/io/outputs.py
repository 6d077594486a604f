"""Where results may be written: never over a user's input files or folders.

The command line (``rgmp propagate --out``), the Propagate widget's export and fine-tuning (its
output checkpoint) check their target with :func:`check_not_input` before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["check_not_input"]


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
