"""Fine-tuning a checkpoint on a user's stack (domain adaptation from a few labelled frames).

    path = finetune_on_stack(images, labels, "base.pt", out="adapted.pt", iterations=100)

``labels`` is a (T, H, W) stack in which the annotated frames hold labels and all other frames
are 0. Training samples: pairs between two annotated frames (the same object in both), and
stage-1 simulation on each annotated frame (mirror / affine / thin-plate-spline target,
deformed previous mask).
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from rgmp_model.checkpoint import load_checkpoint, read_checkpoint_info
from rgmp_model.frames import FrameStack
from rgmp_model.inference import PAD_MULTIPLE
from rgmp_model.label_io import open_label_stack
from rgmp_model.labels import validate_label_frame
from rgmp_model.stack_io import open_image_stack

from .augment import color_jitter, crop_transform, deform_previous_mask
from .config import TrainConfig, config_from_dict
from .objectives import PairObjective
from .static_pairs import StaticPairDataset
from .trainer import Trainer


class AnnotatedFrames:
    """The annotated frames of a stack as an image source: item i -> (image (H, W, 3) float32 in
    [0, 1], labels (H, W) int64) of frame ``frames[i]``."""

    def __init__(self, images: Any, labels: Any, frames: list[int]) -> None:
        self.stack = FrameStack(images)
        self.labels = labels
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.frames[i]
        return self.stack[t], np.asarray(self.labels[t]).astype(np.int64)


class StackPairDataset(StaticPairDataset):
    """Item k (deterministic in (seed, k)): with probability ``pair_probability`` (when there are
    two or more annotated frames) a real pair: reference = annotated frame a with one object's
    mask, target = annotated frame b with the same object's mask, previous mask = that mask
    deformed, all in one crop window around the object in both frames; otherwise stage-1
    simulation on one annotated frame (:class:`StaticPairDataset`)."""

    def __init__(self, source: AnnotatedFrames, pair_probability: float = 0.5, **options: Any) -> None:
        super().__init__([source], paste_probability=0.0, **options)
        self.source = source
        self.pair_probability = pair_probability if len(source) >= 2 else 0.0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, int(index), 1))
        if rng.random() >= self.pair_probability:
            return super().__getitem__(index)
        for _ in range(self.max_tries):
            a, b = rng.choice(len(self.source), size=2, replace=False)
            (image_a, labels_a), (image_b, labels_b) = self.source[int(a)], self.source[int(b)]
            shared = [i for i in np.unique(labels_a) if i and (labels_a == i).sum() >= self.min_object_pixels
                      and (labels_b == i).sum() >= self.min_object_pixels]
            if shared:
                break
        else:  # no object labelled on two frames: simulation only
            return super().__getitem__(index)
        object_id = rng.choice(shared)
        mask_a, mask_b = labels_a == object_id, labels_b == object_id
        window = self._window(rng, mask_a | mask_b)
        crop = crop_transform(window, self.crop_size)
        fill = np.median(image_a[::8, ::8].reshape(-1, 3), axis=0)
        target_mask = (crop.apply_to_image(mask_b.astype(np.float32)) >= 0.5).astype(np.float32)
        target = color_jitter(rng, crop.apply_to_image(image_b, fill))
        return {
            "reference_frame": torch.from_numpy(crop.apply_to_image(image_a, fill, channels_first=True)),
            "reference_mask": torch.from_numpy((crop.apply_to_image(mask_a.astype(np.float32)) >= 0.5).astype(np.float32)),
            "frame": torch.from_numpy(np.ascontiguousarray(target.transpose(2, 0, 1))),
            "mask": torch.from_numpy(target_mask),
            "previous_mask": torch.from_numpy(deform_previous_mask(rng, target_mask, box_probability=self.box_probability)),
        }


def annotated_frames(labels: Any) -> list[int]:
    """Indices of the frames of a (T, H, W) label stack that hold labels (read one at a time)."""
    shape = tuple(labels.shape)
    if len(shape) != 3:
        raise ValueError(f"labels must be a (T, H, W) stack with the training frames labelled, got shape {shape}")
    return [t for t in range(shape[0]) if validate_label_frame(labels[t], shape[1:], t).any()]


def finetune_on_stack(
    images: Any,
    labels: Any,
    base: str | Path,
    *,
    out: str | Path,
    iterations: int = 100,
    lr: float = 5e-5,
    crop_size: tuple[int, int] = (256, 256),
    batch_size: int = 4,
    device: str = "auto",
    seed: int = 0,
    on_progress: Callable[[int, int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    work_dir: str | Path | None = None,
    show_progress: bool = False,
) -> Path:
    """Fine-tune checkpoint ``base`` on a stack and write the result to ``out``.

    images: (T, H, W) or (T, H, W, C) array-like; labels: (T, H, W) integer stack whose labelled
    frames are the training frames. ``on_progress(iteration, total, loss)`` after every step;
    ``should_stop()`` ends early (the checkpoint is still written). The new checkpoint's metadata
    records the base checkpoint, the frames used, the iterations and the loss curve. GPU memory
    is released before returning.
    """
    base_info = read_checkpoint_info(base)  # fails early, with a clear message, on a bad file
    frame_shape = tuple(getattr(images, "shape", ()))[:3]
    if frame_shape != tuple(getattr(labels, "shape", ())):
        raise ValueError(
            f"images {tuple(getattr(images, 'shape', ()))} and labels {tuple(getattr(labels, 'shape', ()))} "
            f"do not match: give one (H, W) label image per frame"
        )
    frames = annotated_frames(labels)
    if not frames:
        raise ValueError("no frame of the label stack holds labels: label at least one frame to fine-tune on")
    scratch = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="rgmp-finetune-"))
    config = config_from_dict({
        "stage": "finetune", "output_dir": str(scratch), "seed": seed, "device": device, "resume": False,
        "data": {"crop_size": list(crop_size), "batch_size": batch_size},
        "optim": {"lr": lr, "iterations": iterations},
        "schedule": {"log_every": 10, "checkpoint_every": max(1, iterations), "validate_every": 10**9},
    })
    source = AnnotatedFrames(images, labels, frames)
    height, width = source.stack.height, source.stack.width
    # No larger than the frame (small frames are padded), and a multiple of the network's stride.
    crop = tuple(max(PAD_MULTIPLE, min(size, frame) // PAD_MULTIPLE * PAD_MULTIPLE)
                 for size, frame in zip(crop_size, (height, width)))
    dataset = StackPairDataset(source, crop_size=crop, seed=seed, min_object_pixels=16)
    model = load_checkpoint(base)[0]
    metadata = {
        "base_checkpoint": str(base),
        "base_sha256": base_info.sha256,
        "frames_used": frames,
        "learning_rate": lr,
    }
    if base_info.working_size is not None:  # propagate at the size the base was made for
        metadata["working_size"] = base_info.working_size
    try:
        trainer = Trainer(config, dataset, lambda m: PairObjective(m, config.optim.aux_weight), model=model,
                          metadata=metadata, on_progress=on_progress, should_stop=should_stop,
                          show_progress=show_progress)
        written = trainer.fit()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(written), out)
        return out
    finally:
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def finetune_from_config(config: TrainConfig) -> Path:
    """``rgmp-train finetune``: images, labels, base and out from ``config.finetune``."""
    options = config.finetune
    missing = [name for name in ("images", "labels", "base", "out") if getattr(options, name) is None]
    if missing:
        raise ValueError(f"finetune needs {', '.join('--' + m for m in missing)}")
    return finetune_on_stack(
        open_image_stack(options.images), open_label_stack(options.labels), options.base, out=options.out,
        iterations=config.optim.iterations, lr=config.optim.lr, crop_size=config.data.crop_size,
        batch_size=config.data.batch_size, device=config.device, seed=config.seed,
        work_dir=config.output_dir, show_progress=True,
    )
