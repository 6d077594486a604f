"""From a config's data sources to datasets, objectives and validation sequences."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from torch import nn
from torch.utils.data import Dataset

from rgmp_model.adapt.pairs import StaticPairDataset
from rgmp_model.nn.network import RGMP

from .config import SourceSpec, TrainConfig
from .decoded_cache import CachedImageSource, CachedVideoSource
from .objectives import ClipObjective, PairObjective
from .sources import still_source, video_source
from .video_clips import VideoClipDataset
from .video_sources import VideoSequence, validation_sequences

_VALIDATION_SEED_OFFSET = 1_000_003  # synthetic validation sequences never equal training ones


def validation_set(specs: Sequence[SourceSpec], seed: int) -> list[VideoSequence]:
    """Whole held-out sequences of the validation sources, each source's sequences one ``group``
    (named by its kind, and its path's last part when it has one)."""
    sequences: list[VideoSequence] = []
    for i, spec in enumerate(specs):
        group = spec.kind + (f":{Path(spec.path).name}" if spec.path else "")
        sequences.extend(dataclasses.replace(seq, group=group)
                         for seq in validation_sequences(video_source(spec, seed + _VALIDATION_SEED_OFFSET + i)))
    return sequences


def build_stage(config: TrainConfig) -> tuple[Dataset, Callable[[RGMP], nn.Module], list[VideoSequence]]:
    """(training dataset, objective factory, validation sequences) of a pretrain or video config."""
    data, optim = config.data, config.optim
    weights = [spec.weight for spec in data.sources]
    if config.stage == "pretrain":
        stills = [still_source(spec, config.seed + i) for i, spec in enumerate(data.sources)]
        if data.decoded_cache:
            stills = [CachedImageSource(still, Path(data.decoded_cache)) for still in stills]
        dataset: Dataset = StaticPairDataset(
            stills, crop_size=data.crop_size, seed=config.seed, length=data.length,
            box_probability=data.box_probability, paste_probability=data.paste_probability, weights=weights,
        )

        def objective(model: RGMP) -> nn.Module:
            return PairObjective(model, optim.aux_weight)
    elif config.stage == "video":
        videos = [video_source(spec, config.seed + i) for i, spec in enumerate(data.sources)]
        if data.decoded_cache:
            videos = [CachedVideoSource(video, Path(data.decoded_cache)) for video in videos]
        dataset = VideoClipDataset(
            videos, clip_length=data.clip_length, crop_size=data.crop_size, max_skip=data.max_skip,
            max_objects=data.max_objects, seed=config.seed, length=data.length, source_weights=weights,
            occluder_probability=data.occluder_probability,
            crop_contrast_probability=data.crop_contrast_probability,
        )

        def objective(model: RGMP) -> nn.Module:
            return ClipObjective(model, optim.aux_weight, optim.bptt_frames)
    else:
        raise ValueError(f"build_stage handles pretrain and video; use training.finetune for {config.stage!r}")
    return dataset, objective, validation_set(config.validation.sources, config.seed)
