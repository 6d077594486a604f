"""Shared checks of the bad-input tests (tests/*/test_bad_input*.py): what a user reads, and that
nothing a user owns (files, arrays, layers) changed."""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

# Words that belong to tracebacks and library internals, never to a message for a user.
INTERNAL_WORDS = ("Traceback", "UnpicklingError", "PytorchStreamReader", "weights_only", "miniz", "KeyError",
                  "TiffFileError", "DeflateError", "AttributeError", "TypeError", "IndexError", "Errno")


def digest(*paths: Path) -> dict[Path, str]:
    """sha256 of every file under ``paths`` (files or folders, links followed)."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


def assert_user_message(text: str, *fragments: str) -> None:
    """``text`` holds every fragment and none of :data:`INTERNAL_WORDS`."""
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    for word in INTERNAL_WORDS:
        assert word not in text, f"internal text {word!r} in {text!r}"


@dataclass(frozen=True)
class Snapshot:
    """A copy of an array and its flags, to show afterwards that nothing wrote to it."""

    array: Any
    copy: np.ndarray
    writeable: bool
    dtype: np.dtype
    shape: tuple[int, ...]

    def assert_unchanged(self) -> None:
        assert self.array.dtype == self.dtype and self.array.shape == self.shape
        assert self.array.flags.writeable == self.writeable
        np.testing.assert_array_equal(np.asarray(self.array), self.copy)


def snapshot(*arrays: Any) -> list[Snapshot]:
    return [Snapshot(a, np.array(a, copy=True), a.flags.writeable, a.dtype, a.shape) for a in arrays]


def assert_unchanged(snapshots: Sequence[Snapshot]) -> None:
    for s in snapshots:
        s.assert_unchanged()


def run_main(main: Callable[[list[str]], int], argv: Sequence[Any]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a command line's ``main(argv)`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``: a hostile checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, (f"touch {self.marker}",)


def hostile_checkpoint(path: Path, marker: Path, zipped: bool = True) -> Path:
    """A .pt file that would run code on loading: torch's zip format (``zipped``) or a bare pickle."""
    payload = {"format": "napari-rgmp-checkpoint", "state_dict": RunsCode(marker)}
    if zipped:
        import torch

        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # the protocol of torch's legacy files
    return path


def truncated_checkpoint(path: Path, keep: int = 4000) -> Path:
    """A tiny model's checkpoint cut after ``keep`` bytes (a copy that stopped half way)."""
    from rgmp_model import build_rgmp, save_checkpoint

    save_checkpoint(path, build_rgmp("resnet18", 8))
    path.write_bytes(path.read_bytes()[:keep])
    return path


def non_finite_checkpoint(path: Path, value: float = float("nan")) -> Path:
    """A tiny model's checkpoint, complete and readable, with one weight ``value`` (NaN or inf)."""
    import torch

    from rgmp_model import build_rgmp, save_checkpoint

    model = build_rgmp("resnet18", 8)
    with torch.no_grad():
        model.decoder.pred3.bias.fill_(value)
    save_checkpoint(path, model)
    return path
