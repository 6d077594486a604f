"""A training run's files on disk: reading ``checkpoints/last.pt`` to resume, and writing it (and the
exported models) so that a full disk or a damaged file is a message, never a traceback.

- :func:`read_train_state` reads last.pt through the project's one safe reader
  (``rgmp_model.nn.checkpoint.read_torch_file``: weights only, code refused unread) and checks its
  entries; a truncated or foreign file says to delete it or start over.
- :func:`writing_checkpoint` wraps a write (``atomic_save``: temporary file + rename, so the previous
  file survives any failure): an OSError, or the RuntimeError torch raises when the disk fills up
  mid-file, becomes a :class:`CheckpointWriteError` naming the file, the iteration and what was kept.
"""

from __future__ import annotations

import contextlib
import random
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from rgmp_model.cli_errors import user_message
from rgmp_model.nn.checkpoint import read_torch_file

__all__ = ["STATE_KEYS", "CheckpointWriteError", "read_train_state", "rng_state", "set_rng_state", "unusable_state",
           "writing_checkpoint"]

_SHORT_WRITE = ("inline_container", "PytorchStreamWriter", "file write failed", "unexpected pos")  # torch's words
STATE_KEYS = ("iteration", "model", "optimizer", "scaler", "rng", "losses", "validation")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message (its only argument) says which, at which
    iteration and what was kept (an OSError without errno: ``rgmp-train`` shows it as it is, exit 1)."""


def _start_over(path: Path) -> str:
    best = path.parent.parent / "best.pt"
    also = f", or start a new run from {best} (model.init_checkpoint={best})" if best.is_file() else ""
    return f"delete {path} (or run with resume=false) to start this stage over{also}"


def unusable_state(path: Path, why: str) -> ValueError:
    """The error for a last.pt this run cannot resume from: the file, why, and what to do."""
    return ValueError(f"{path} cannot be resumed from: {why}. To go on, {_start_over(path)}")


def read_train_state(path: str | Path) -> Mapping[str, Any]:
    """The training state saved in ``path`` (last.pt), checked to hold every entry a resume needs."""
    path = Path(path)
    try:
        state = read_torch_file(path, advice="it cannot be resumed from")
    except ValueError as error:
        raise ValueError(f"{error} To go on, {_start_over(path)}.") from error
    if not isinstance(state, Mapping):
        raise unusable_state(path, f"it holds a {type(state).__name__}, not a training state")
    missing = [key for key in STATE_KEYS if key not in state]
    if missing:
        raise unusable_state(path, f"it lacks {', '.join(missing)} (is it a model export rather than last.pt?)")
    iteration = state["iteration"]
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise unusable_state(path, f"its iteration is {iteration!r}")
    return state


def rng_state() -> dict[str, Any]:
    """The random states of Python, NumPy and torch (CPU and CUDA), as a resume restores them."""
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def writing_checkpoint(path: Path, iteration: int, kept: str) -> Iterator[None]:
    """Turn a failed write of ``path`` at ``iteration`` into a :class:`CheckpointWriteError`;
    ``kept`` says what survives (e.g. "the previous last.pt, iteration 200, is kept")."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        if isinstance(error, CheckpointWriteError) or (
                not isinstance(error, OSError) and not any(mark in str(error) for mark in _SHORT_WRITE)):
            raise  # a RuntimeError that is not a failed write (e.g. from CUDA) is not reported as one
        raise CheckpointWriteError(
            f"{path} could not be written at iteration {iteration} ({_reason(error, path)}); {kept}. "
            f"Free space in {path.parent} (or choose another output_dir) and start the same command again"
        ) from error


def _reason(error: BaseException, path: Path) -> str:
    """Why a write failed, in words: the OSError's reason, or (torch's RuntimeError when a write
    comes up short) the free space left."""
    if isinstance(error, OSError) and error.errno is not None:
        return user_message(error).removeprefix(f"{error.filename}: ")
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return "the write failed part-way: the disk may be full"
    return f"the write failed part-way with {free / 2**20:.1f} MiB free: the disk may be full"
