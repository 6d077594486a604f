"""The Fine-tune widget's non-Qt parts: the job the worker runs, the snapshot of the labels it
trains on and the messages shown to the user (checkpoint descriptions: :mod:`.checkpoints`)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rgmp_model.inference.labels import KeyframeLabels
from rgmp_model.errors import FINETUNE_OUT_OF_MEMORY as OUT_OF_MEMORY  # noqa: F401 - the dock's wording
from rgmp_model.errors import finetune_message as error_message  # noqa: F401

from .layers import LayerFrames

KEPT_STATE = "checkpoints"  # the trainer's resumable state in the work folder: removed (the dock cannot resume)


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


def snapshot_labels(labels: LayerFrames, frames: list[int]) -> KeyframeLabels:
    """(T, H, W) labels as they were when Run was pressed: copies of the labelled ``frames``, zeros
    elsewhere, so painting during a run does not change its training data."""
    return KeyframeLabels({t: np.array(labels[t]) for t in frames}, labels.shape, labels.dtype)
