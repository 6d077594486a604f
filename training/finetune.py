"""Fine-tuning a checkpoint on a user's stack (domain adaptation from a few labelled frames).

    config = finetune_config("base.pt", "adapted.pt", ["optim.iterations=100"], output_dir=work)
    path = finetune_on_stack(images, labels, config)

``labels`` is a (T, H, W) stack in which the annotated frames hold labels and all other frames
are 0. Training samples: pairs between two annotated frames (the same object in both), and
stage-1 simulation on each annotated frame (mirror / affine / thin-plate-spline target,
deformed previous mask). Every setting comes from the :class:`TrainConfig` (by default
``training/configs/finetune.yaml``); settings that cannot apply to fine-tuning are rejected.
"""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rgmp_model.adapt.keyframe_pairs import KeyframePairDataset, KeyframeStills, keyframe_crop
from rgmp_model.inference.frames import FrameStack
from rgmp_model.io.outputs import check_not_input
from rgmp_model.nn.checkpoint import load_checkpoint, save_checkpoint
from rgmp_model.inference.labels import KeyframeLabels, labelled_frames, validate_label_frame
from rgmp_model.steps import step

from .config import CONFIG_DIR, TrainConfig, load_config
from .objectives import PairObjective
from .train_state import writing_checkpoint
from .trainer import Trainer

FINETUNE_YAML = CONFIG_DIR / "finetune.yaml"

_FROM_BASE = "the network is the base checkpoint's (finetune.base)"
_NO_VALIDATION = "fine-tuning has no validation sequences"
_VIDEO_ONLY = "it belongs to the video stage"
# Config keys that cannot apply to fine-tuning, and why: a value other than the default is an error.
NOT_FOR_FINETUNING: dict[str, str] = {
    "model.backbone": _FROM_BASE,
    "model.decoder_channels": _FROM_BASE,
    "model.imagenet_weights": _FROM_BASE,
    "model.init_checkpoint": "the starting weights are finetune.base",
    "data.sources": "the training data are the labelled frames of the stack",
    "data.clip_length": _VIDEO_ONLY,
    "data.max_skip": _VIDEO_ONLY,
    "data.max_objects": _VIDEO_ONLY,
    "optim.bptt_frames": _VIDEO_ONLY,
    "schedule.validate_every": _NO_VALIDATION,
    "validation.sources": _NO_VALIDATION,
    "validation.max_frames": _NO_VALIDATION,
    "validation.max_size": _NO_VALIDATION,
}


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"section.key": value}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def applicable_settings(config: TrainConfig) -> dict[str, Any]:
    """``config`` as a nested dict without the keys that cannot apply to fine-tuning
    (:data:`NOT_FOR_FINETUNING`; the network is the base checkpoint's), for ``--show-config``."""
    tree = config.to_dict()
    for key in NOT_FOR_FINETUNING:
        section, name = key.split(".")
        tree.get(section, {}).pop(name, None)
    return {key: value for key, value in tree.items() if value != {}}


def check_finetune_config(config: TrainConfig) -> None:
    """Raise ValueError, naming the key, for a config that fine-tuning cannot run as given."""
    if config.stage != "finetune":
        raise ValueError(f"stage is {config.stage!r}: fine-tuning runs a config with stage: finetune "
                         f"(start from {FINETUNE_YAML})")
    given, default = _leaves(config.to_dict()), _leaves(TrainConfig(stage="finetune").to_dict())
    for key, why in NOT_FOR_FINETUNING.items():
        if given[key] != default[key]:
            raise ValueError(f"{key} does not apply to fine-tuning ({why}): remove it from the config and the "
                             "overrides")
    for key, what in (("base", "the checkpoint to start from (rgmp-train finetune --base FILE, or --base default "
                               "for the bundled model)"),
                      ("out", "the path of the new checkpoint (rgmp-train finetune --out FILE)")):
        if getattr(config.finetune, key) is None:
            raise ValueError(f"finetune.{key} is not set: give {what}")
    out = Path(str(config.finetune.out))
    if out.is_dir():  # refused before any work: the rename at the end could not replace a folder
        raise ValueError(f"the new checkpoint's path {out} (finetune.out, --out) is a folder: give a file path, "
                         f"e.g. {out / 'finetuned.pt'}")


def finetune_config(base: str | Path, out: str | Path, overrides: Sequence[str] = (), *,
                    output_dir: str | Path | None = None, path: str | Path = FINETUNE_YAML) -> TrainConfig:
    """The fine-tuning config: ``path`` (finetune.yaml) with ``key=value`` overrides, the base
    checkpoint, the new checkpoint and (when given) the work folder ``output_dir`` set."""
    config = load_config(path, ["stage=finetune", *overrides])
    return dataclasses.replace(
        config, output_dir=str(output_dir) if output_dir is not None else config.output_dir,
        finetune=dataclasses.replace(config.finetune, base=str(base), out=str(out)),
    )


def _training_frames(images: Any, labels: Any) -> tuple[int, ...]:
    """The labelled frames of ``labels`` (checked against ``images`` and validated)."""
    shape = tuple(getattr(labels, "shape", ()))
    if len(shape) != 3 or tuple(getattr(images, "shape", ()))[:3] != shape:
        raise ValueError(
            f"images {tuple(getattr(images, 'shape', ()))} and labels {shape} do not match: give one (H, W) "
            "label image per frame, as a (T, H, W) stack with the training frames labelled"
        )
    frames = labelled_frames(labels)
    if not frames:
        raise ValueError("no frame of the label stack holds labels: label at least one frame to fine-tune on")
    for t in frames:
        validate_label_frame(labels[t], shape[1:], t)
    return frames


def finetune_on_stack(
    images: Any,
    labels: Any,
    config: TrainConfig,
    *,
    on_progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_progress: bool = False,
) -> Path:
    """Fine-tune checkpoint ``config.finetune.base`` on a stack and write the result to
    ``config.finetune.out``; the run's files (log, config, state) go to ``config.output_dir``.

    images: (T, H, W) or (T, H, W, C) array-like; labels: (T, H, W) integer stack whose labelled
    frames are the training frames. ``config``: e.g. :func:`finetune_config`, used as given
    (:func:`check_finetune_config` rejects keys that cannot apply); crops are clamped to the frame
    (:func:`rgmp_model.adapt.keyframe_pairs.keyframe_crop`). ``on_progress(iteration, total, loss)`` after every step;
    ``should_stop()`` ends early (the checkpoint is still written). The new checkpoint's metadata
    records the base checkpoint, the frames used, the iterations and the loss curve; its weights
    are stored in fp16 like the bundled model's, written atomically. GPU memory
    is released before returning.
    """
    check_finetune_config(config)
    options = config.finetune
    check_not_input(options.out, [options.base, options.images, options.labels])  # never over its base or data
    step("checking the labelled frames")
    frames = _training_frames(images, labels)  # the labels are checked before the model loads
    step(f"loading the base checkpoint {options.base}")
    model, base_info = load_checkpoint(options.base)  # the base is read once
    source = KeyframeStills(FrameStack(images), {t: labels[t] for t in frames})
    data = config.data
    height, width = tuple(labels.shape[1:])
    dataset = KeyframePairDataset(source, crop_size=keyframe_crop(data.crop_size, height, width), seed=config.seed,
                               length=data.length, box_probability=data.box_probability,
                               paste_probability=data.paste_probability)
    metadata = {
        "base_checkpoint": str(options.base),
        "base_sha256": base_info.sha256,
        "frames_used": list(frames),
        "learning_rate": config.optim.lr,
        "data": [f"stack:{options.images}" if options.images else "stack"],
    }
    if base_info.working_size is not None:  # propagate at the size the base was made for
        metadata["working_size"] = base_info.working_size
    try:
        trainer = Trainer(config, dataset, lambda m: PairObjective(m, config.optim.aux_weight), model=model,
                          metadata=metadata, on_progress=on_progress, should_stop=should_stop,
                          show_progress=show_progress)
        written = trainer.fit()
        # fp16 like the bundled model (half the file; loaded as float32), written atomically: a
        # failure never leaves a half-written file under ``out``.
        trained, trained_info = load_checkpoint(written)
        step(f"writing the new checkpoint {options.out}")
        with writing_checkpoint(Path(options.out), trainer.history.iteration, f"the trained model stays in {written}"):
            out = save_checkpoint(options.out, trained, trained_info.metadata, dtype=torch.float16)
        Path(written).unlink(missing_ok=True)
        return out
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass(frozen=True)
class StackChoice:
    """How ``rgmp-train finetune`` reads its files, as ``rgmp propagate`` does: the frame a label
    image belongs to (``reference_frame``; or the one frame of a label stack to use), and for a
    stack with time and z the index of the other axis (``at``), the axis along which frames go
    (``axis``), the axes' names (``axes``) and the channel (``channel``)."""

    reference_frame: int | None = None
    at: int | None = None
    axis: str | None = None
    axes: str | None = None
    channel: int | None = None


def read_training_stack(images: str | Path, labels: str | Path,
                        choice: StackChoice = StackChoice()) -> tuple[Any, KeyframeLabels]:
    """The frames (T, H, W[, C], read lazily) and the labelled frames of the files ``images`` and
    ``labels``, read by ``rgmp propagate``'s rules (:func:`rgmp_model.io.keyframes.read_keyframes`):
    a label image belongs to frame ``choice.reference_frame`` (default 0); a label stack's labelled
    frames are all training frames unless ``reference_frame`` picks one."""
    from rgmp_model.io.hyperstack import open_hyperstack
    from rgmp_model.io.keyframes import read_keyframes

    view = open_hyperstack(images, axes=choice.axes).along(choice.axis, choice.channel)
    keyframes = read_keyframes(labels, view, images=images, reference_frame=choice.reference_frame, at=choice.at)
    if len(keyframes) > 1:
        raise ValueError(f"{labels} has labels on {len(keyframes)} {view.other_name} indices: fine-tuning trains on "
                         f"one {view.along_name} stack, choose its index with --at")
    (index, keys), = keyframes.items()
    outside = [t for t in keys if not 0 <= t < view.num_frames]
    if outside:
        raise ValueError(f"--reference-frame {outside[0]} is outside the {view.num_frames} frames of {images} "
                         f"(0..{view.num_frames - 1})")
    frames = view.frames(index)
    return frames, KeyframeLabels(keys, frames.shape[:3])


def finetune_from_config(config: TrainConfig, choice: StackChoice = StackChoice()) -> Path:
    """``rgmp-train finetune``: the files ``finetune.images`` and ``finetune.labels`` read with
    :func:`read_training_stack` (labels checked before the base checkpoint is loaded), the rest of
    ``config`` as given to :func:`finetune_on_stack`."""
    missing = [name for name in ("images", "labels", "base", "out") if getattr(config.finetune, name) is None]
    if missing:
        raise ValueError(f"finetune needs {', '.join('--' + m for m in missing)}")
    frames, labels = read_training_stack(config.finetune.images, config.finetune.labels, choice)
    return finetune_on_stack(frames, labels, config, show_progress=True)
