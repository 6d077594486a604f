"""Test-time adaptation (MaskTrack's online step): a copy of the network fine-tuned, in memory, on
the keyframes of the stack it is about to propagate.

    adapted = adapt_model(model, FrameStack(frames), {0: labels0}, AdaptOptions(iterations=50))

The samples and the loss are the fine-tuning's (:class:`KeyframePairDataset`: pairs between
keyframes and pairs simulated from each keyframe; :func:`pair_loss`), with the Fine-tune dock's
defaults (learning rate 5e-5, batch 4, 256 px crops clamped to the frame, previous mask replaced
by a box one time in ten). Nothing is written to disk; the caller's network is never changed.
:class:`~rgmp_model.inference.engine.PropagationSession` calls it when its options ask for
``adapt`` iterations, and keeps the result while the keyframes it learnt from stay the same.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from rgmp_model.constants import ADAPT_ITERATIONS
from rgmp_model.inference.frames import FrameStack
from rgmp_model.nn.network import RGMP

from .keyframe_pairs import KeyframePairDataset, KeyframeStills, keyframe_crop
from .loss import pair_loss

__all__ = ["AdaptOptions", "AdaptStep", "AdaptationError", "adapt_model", "adaptation_steps"]

AdaptProgress = Callable[[int, int, float], None]  # (iteration, total, loss)


class AdaptationError(ValueError):
    """The adaptation could not run (no keyframe, a non-finite loss): the message says what to do."""


@dataclass(frozen=True)
class AdaptOptions:
    """How the copy is trained: ``iterations`` steps of Adam at ``lr`` on batches of
    ``batch_size`` pairs cropped to ``crop_size`` px (at most the frame), the fine-tuning's loss
    with ``aux_weight`` on the low-resolution heads; ``seed`` makes the samples repeatable;
    ``region_view``: grey pairs are stretched per crop as region mode shows crops to the network
    (:mod:`rgmp_model.inference.crop_contrast`), for a stack that runs in region mode."""

    iterations: int = ADAPT_ITERATIONS
    lr: float = 5e-5
    batch_size: int = 4
    crop_size: int = 256
    box_probability: float = 0.1
    aux_weight: float = 0.5
    seed: int = 0
    region_view: bool = False  # grey pairs shown as region mode shows its crops (the stack runs in region mode)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.crop_size < 32 or not self.lr > 0:
            raise ValueError("adaptation needs iterations >= 1, batch_size >= 1, crop_size >= 32 and lr > 0; got "
                             f"{self.iterations}, {self.batch_size}, {self.crop_size}, {self.lr}")


class AdaptStep(NamedTuple):
    """One step of :func:`adaptation_steps`: ``iteration`` of ``total`` done, its ``loss``, and
    the copy trained so far (in train mode until the caller takes it)."""

    iteration: int
    total: int
    loss: float
    model: RGMP


def adaptation_steps(model: RGMP, frames: FrameStack, keyframes: Mapping[int, np.ndarray],
                     options: AdaptOptions = AdaptOptions(), *, device: torch.device | str | None = None,
                     autocast_dtype: torch.dtype | None = None) -> Iterator[AdaptStep]:
    """Train a copy of ``model`` on ``keyframes`` ({frame index: (H, W) integer labels} of
    ``frames``), one :class:`AdaptStep` per step of ``options.iterations``, on ``device`` (default
    the model's): the caller shows progress between steps and may stop early. Raises
    AdaptationError for no keyframe (before the first step) or a loss that is not finite."""
    if not keyframes:
        raise AdaptationError("adaptation needs labelled frames: label at least one frame (a keyframe) first")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    stills = KeyframeStills(frames, keyframes)
    side = options.crop_size
    dataset = KeyframePairDataset(stills, crop_size=keyframe_crop((side, side), frames.height, frames.width),
                                  seed=options.seed, length=options.iterations * options.batch_size,
                                  box_probability=options.box_probability,
                                  crop_contrast_probability=1.0 if options.region_view else 0.0)
    adapted = copy.deepcopy(model).to(device, memory_format=torch.channels_last).train()
    parameters = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=options.lr)
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    for iteration in range(1, options.iterations + 1):
        start = (iteration - 1) * options.batch_size
        samples = [dataset[k] for k in range(start, start + options.batch_size)]
        batch = {key: torch.stack([s[key] for s in samples]).to(device) for key in samples[0]}
        with torch.enable_grad():
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                output = adapted(batch["reference_frame"], batch["reference_mask"], batch["frame"],
                                 batch["previous_mask"])
                loss = pair_loss(output, batch["mask"], options.aux_weight)
            if not math.isfinite(float(loss.detach())):
                raise AdaptationError(f"adaptation stopped at iteration {iteration}: the loss is not finite; "
                                      f"use a lower learning rate than {options.lr:g} or fewer iterations")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            optimizer.step()
        yield AdaptStep(iteration, options.iterations, float(loss.detach()), adapted)


def adapt_model(model: RGMP, frames: FrameStack, keyframes: Mapping[int, np.ndarray],
                options: AdaptOptions = AdaptOptions(), *, device: torch.device | str | None = None,
                autocast_dtype: torch.dtype | None = None, on_progress: AdaptProgress | None = None,
                should_stop: Callable[[], bool] | None = None) -> RGMP:
    """:func:`adaptation_steps` run to the end: the trained copy of ``model``, in eval mode.
    ``on_progress(iteration, total, loss)`` after each step; ``should_stop()`` ends early (the
    copy trained so far is returned). Raises AdaptationError as :func:`adaptation_steps`."""
    steps = adaptation_steps(model, frames, keyframes, options, device=device, autocast_dtype=autocast_dtype)
    adapted = None
    while should_stop is None or not should_stop():
        step = next(steps, None)
        if step is None:
            break
        adapted = step.model
        if on_progress is not None:
            on_progress(step.iteration, step.total, step.loss)
    steps.close()
    if adapted is None:  # stopped before the first step: an untrained copy
        adapted = copy.deepcopy(model).to(device if device is not None else next(model.parameters()).device)
    return adapted.eval()
