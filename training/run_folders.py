"""Where a fine-tuning run keeps its files (log, config, loss plot, resumable state): the folder
``finetune/<new checkpoint's name>`` beside the user model folder (``~/.cache/napari-rgmp/finetune``
on Linux, as ``rgmp models`` and the Propagate dock's large outputs use that cache), numbered so
that an earlier run's folder is never reused. The Fine-tune dock and ``rgmp-train finetune`` both
put their runs here. Torch-free.
"""

from __future__ import annotations

from pathlib import Path


def numbered(path: Path) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3``, ... : the first that does not exist."""
    candidate, number = path, 2
    while candidate.exists():
        candidate, number = path.with_name(f"{path.stem}-{number}{path.suffix}"), number + 1
    return candidate


def finetune_runs_dir() -> Path:
    """``finetune/`` beside the user model folder (:func:`rgmp_model.nn.models.user_models_dir`)."""
    from rgmp_model.nn.models import user_models_dir

    return user_models_dir().parent / "finetune"


def finetune_run_folder(out: str | Path) -> Path:
    """The folder of a new run writing checkpoint ``out``: ``finetune/<out's stem>``, numbered."""
    return numbered(finetune_runs_dir() / Path(out).stem)
