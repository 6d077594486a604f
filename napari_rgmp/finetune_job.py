"""The Fine-tune widget's non-Qt parts: the job the worker runs, the snapshot of the labels it
trains on and the messages shown to the user (checkpoint descriptions: :mod:`.checkpoints`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .layers import LayerFrames

OUT_OF_MEMORY = "out of memory while fine-tuning"
KEPT_STATE = "checkpoints"  # the trainer's resumable state in the work folder: removed (the dock cannot resume)


def out_of_memory_message(options: dict[str, Any] | None = None) -> str:
    """What to try when fine-tuning ran out of memory, with the values that were used."""
    options = options or {}
    batch = f" (now {options['batch_size']})" if "batch_size" in options else ""
    crop = f" (now {options['crop_size'][0]} px)" if "crop_size" in options else ""
    return (f"{OUT_OF_MEMORY}: lower the batch size{batch} or the crop size{crop}, or choose the CPU as device "
            "(slower: use fewer iterations). The base checkpoint is unchanged and no checkpoint was saved")


def is_out_of_memory(error: BaseException) -> bool:
    text = str(error).lower()
    return (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or "out of memory" in text or "out of gpu memory" in text or "can't allocate memory" in text)


def error_message(error: BaseException, options: dict[str, Any] | None = None) -> str:
    """What to tell the user about an error raised by a fine-tuning run with ``options``."""
    from .run_guard import JobFailed

    if is_out_of_memory(error):
        return out_of_memory_message(options)
    if isinstance(error, JobFailed):  # an unexpected error, worded by the dock jobs' boundary
        return str(error)
    if isinstance(error, (ValueError, FileNotFoundError)):
        return str(error)
    return f"fine-tuning failed ({type(error).__name__}: {error})"


def run_finetune(images: Any, labels: Any, base: str, out: str, options: dict[str, Any], work: str,
                 on_progress: Callable[[int, int, float], None], should_stop: Callable[[], bool]) -> Path:
    """The worker's job: one call to ``finetune_on_stack`` (imported here, in the thread) with
    finetune.yaml's config and the widget's ``options`` (iterations, lr, batch_size, crop_size,
    device). The run's training folder is ``work`` (log, config, loss plot); its resumable state
    is removed afterwards, and the folder too when nothing else was written."""
    from training.finetune import finetune_config, finetune_on_stack

    overrides = [f"optim.iterations={int(options['iterations'])}", f"optim.lr={float(options['lr'])!r}",
                 f"data.batch_size={int(options['batch_size'])}",
                 f"data.crop_size=[{', '.join(str(int(s)) for s in options['crop_size'])}]",
                 f"device={options['device']}"]
    try:
        config = finetune_config(base, out, overrides, output_dir=work)
        return finetune_on_stack(images, labels, config, on_progress=on_progress, should_stop=should_stop)
    finally:
        shutil.rmtree(Path(work) / KEPT_STATE, ignore_errors=True)
        if Path(work).is_dir() and not any(Path(work).iterdir()):
            Path(work).rmdir()


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
