"""The Fine-tune widget's non-Qt parts: the job the worker runs, the snapshot of the labels it
trains on, checkpoint descriptions and the messages shown to the user."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .layers import LayerFrames

OUT_OF_MEMORY = "out of GPU memory: lower the batch size or crop size, or use the CPU"


def default_output(base: Path | None) -> Path:
    """``<base stem>-finetuned.pt`` next to ``base`` (in the home folder when that folder is not
    writable), numbered so that no existing file is proposed."""
    folder = base.parent if base is not None and os.access(base.parent, os.W_OK) else Path.home()
    stem = base.stem if base is not None else "rgmp"
    candidate, number = folder / f"{stem}-finetuned.pt", 2
    while candidate.exists():
        candidate, number = folder / f"{stem}-finetuned-{number}.pt", number + 1
    return candidate


def describe_checkpoint(path: str) -> tuple[str, tuple[int, int], str, bool]:
    """(path, file key, one-line description or the error message, readable?) of a checkpoint."""
    key = file_key(path)
    try:
        from rgmp_model.checkpoint import read_checkpoint_info

        return path, key, read_checkpoint_info(path).describe(), True
    except Exception as error:  # shown to the user, never raised
        return path, key, str(error) or type(error).__name__, False


def file_key(path: str) -> tuple[int, int]:
    """(modification time, size) of a file, to notice that it changed; (0, -1) if missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)


def error_message(error: BaseException) -> str:
    """What to tell the user about an error raised by a fine-tuning run."""
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return OUT_OF_MEMORY
    if isinstance(error, (ValueError, FileNotFoundError)):
        return str(error)
    return f"fine-tuning failed ({type(error).__name__}: {error})"


def run_finetune(images: Any, labels: Any, base: str, out: str, options: dict[str, Any],
                 on_progress: Callable[[int, int, float], None], should_stop: Callable[[], bool]) -> Path:
    """The worker's job: one call to ``finetune_on_stack`` (imported here, in the thread)."""
    from training.finetune import finetune_on_stack

    return finetune_on_stack(images, labels, base, out=out, on_progress=on_progress, should_stop=should_stop,
                             **options)


class LabelSnapshot:
    """(T, H, W) labels as they were when Run was pressed: copies of the labelled frames, zeros
    elsewhere, so painting during a run does not change its training data."""

    def __init__(self, labels: LayerFrames, frames: list[int]) -> None:
        self.shape, self.dtype, self.ndim = tuple(labels.shape), labels.dtype, len(labels.shape)
        self._frames = {t: np.array(labels[t]) for t in frames}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        t = int(t) + (self.shape[0] if int(t) < 0 else 0)
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {t} is outside a stack of {self.shape[0]} frames")
        frame = self._frames.get(t)
        return frame if frame is not None else np.zeros(self.shape[1:], self.dtype)
