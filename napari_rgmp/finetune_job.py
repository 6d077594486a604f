"""The Fine-tune widget's non-Qt parts: the job the worker runs, the snapshot of the labels it
trains on and the messages shown to the user (checkpoint descriptions: :mod:`.checkpoints`)."""

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


def error_message(error: BaseException) -> str:
    """What to tell the user about an error raised by a fine-tuning run."""
    if type(error).__name__ == "OutOfMemoryError" or "out of memory" in str(error).lower():
        return OUT_OF_MEMORY
    if isinstance(error, (ValueError, FileNotFoundError)):
        return str(error)
    return f"fine-tuning failed ({type(error).__name__}: {error})"


def run_finetune(images: Any, labels: Any, base: str, out: str, options: dict[str, Any],
                 on_progress: Callable[[int, int, float], None], should_stop: Callable[[], bool]) -> Path:
    """The worker's job: one call to ``finetune_on_stack`` (imported here, in the thread) with
    finetune.yaml's config and the widget's ``options`` (iterations, lr, batch_size, crop_size,
    device); the run's work files go to a temporary folder."""
    import tempfile

    from training.finetune import finetune_config, finetune_on_stack

    overrides = [f"optim.iterations={int(options['iterations'])}", f"optim.lr={float(options['lr'])!r}",
                 f"data.batch_size={int(options['batch_size'])}",
                 f"data.crop_size=[{', '.join(str(int(s)) for s in options['crop_size'])}]",
                 f"device={options['device']}"]
    with tempfile.TemporaryDirectory(prefix="rgmp-finetune-") as work:
        config = finetune_config(base, out, overrides, output_dir=work)
        return finetune_on_stack(images, labels, config, on_progress=on_progress, should_stop=should_stop)


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
