"""The Fine-tune dock's defaults: where the new checkpoint goes (the user model folder that
``rgmp models`` lists and both docks offer), its name (from the image layer and the date), the
warning for training on the plugin's own output, and the tooltips of the controls. The run's
training folder is :func:`training.run_folders.finetune_run_folder` (as for ``rgmp-train finetune``)."""

from __future__ import annotations

import datetime
import math
import re
from pathlib import Path

from training.run_folders import numbered

OWN_OUTPUT_WARNING = ("Labels layer '{name}' is propagated output: training on the model's own output teaches "
                      "it its own mistakes. Correct its frames first, or choose the Labels layer you painted")


def file_stem(name: str) -> str:
    """A layer name made safe as a file name: letters, digits, '.', '_' and '-' ("rgmp" if empty)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return stem[:80] or "rgmp"


def default_output(image_name: str | None, folder: Path | None = None, today: datetime.date | None = None) -> Path:
    """``<image layer>-finetuned-<YYYY-MM-DD>.pt`` in the user model folder (``folder``; default
    :func:`rgmp_model.nn.models.user_models_dir`), numbered so that no existing file is proposed."""
    from rgmp_model.nn.models import user_models_dir

    folder = Path(folder) if folder is not None else user_models_dir()
    day = (today or datetime.date.today()).isoformat()
    return numbered(folder / f"{file_stem(image_name or 'rgmp')}-finetuned-{day}.pt")


def checked_learning_rate(text: str) -> float:
    """The learning rate typed in the dock; ValueError unless a positive number."""
    try:
        lr = float(text)
    except ValueError:
        lr = math.nan
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"learning rate {text!r} is not a positive number: use e.g. 5e-5")
    return lr


def checked_output(text: str, base: Path) -> Path:
    """The output file typed in the dock; ValueError when empty, a folder or the base checkpoint
    (the library refuses any input of the run as well)."""
    if not text.strip():
        raise ValueError("choose where to save the fine-tuned checkpoint (output)")
    out = Path(text.strip()).expanduser()
    if out.is_dir():
        raise ValueError(f"output {out} is a folder: give a file name such as model-finetuned.pt")
    if out.resolve() == Path(base).resolve():
        raise ValueError("the output would overwrite the base checkpoint: choose another output file")
    return out


TIPS: dict[str, str] = {
    "image_combo": "the image stack whose labelled frames the model learns from",
    "labels_combo": "the Labels layer you painted: its labelled frames are the training frames (a layer the "
                    "Propagate dock produced is the model's own output: correct it first)",
    "axis_combo": "the slider the frames run along (named as in the viewer)",
    "iterations": "training steps: 100 is enough to adapt to a few labelled frames; more takes longer",
    "learning_rate": "step size of the training: keep the default (5e-5) unless the loss does not go down",
    "batch_size": "samples per step: lower it when memory runs out",
    "crop_size": "side of the square crops trained on (a multiple of 32): lower it when memory runs out",
    "device": "where training runs: auto picks a GPU (CUDA or Apple MPS) when there is one, else the CPU",
    "output_path": "where the fine-tuned checkpoint is saved (fp16): by default the user model folder, listed "
                   "by `rgmp models` and by both docks; an existing file is never proposed",
    "output_button": "choose where to save the fine-tuned checkpoint",
    "run_button": "start fine-tuning (the base checkpoint is never changed)",
    "stop_button": "end after the current iteration; the checkpoint is still saved",
    "loss_plot": "the training loss per iteration: it should go down",
    "status_label": "what the run is doing, where the checkpoint and the training folder are",
}
