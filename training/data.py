"""From a config's data sources to datasets, objectives and validation sequences."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from torch import nn
from torch.utils.data import Dataset

from rgmp_model.network import RGMP

from .config import SourceSpec, TrainConfig
from .objectives import ClipObjective, PairObjective
from .static_pairs import (
    DavisFramesSource,
    FolderSource,
    StaticPairDataset,
    SyntheticSource,
    TiffStackSource,
    VOCSource,
)
from .video_clips import VideoClipDataset
from .video_sources import (
    DavisSource,
    SyntheticVideoSource,
    TiffVideoSource,
    VideoSequence,
    YouTubeVOSSource,
    validation_sequences,
)

_VALIDATION_SEED_OFFSET = 1_000_003  # synthetic validation sequences never equal training ones


def still_image_source(spec: SourceSpec, seed: int) -> Any:
    """A stage-1 source of still images with instance masks."""
    if spec.kind == "folder":
        return FolderSource(spec.path, spec.masks)
    if spec.kind == "voc":
        return VOCSource(spec.path)
    if spec.kind == "davis":
        return DavisFramesSource(spec.path, sequences=spec.sequences, exclude=spec.exclude, resolution=spec.resolution)
    if spec.kind == "tiff":
        return TiffStackSource(spec.path, spec.labels)
    if spec.kind.startswith("synthetic_"):
        return SyntheticSource(spec.kind.removeprefix("synthetic_"), count=spec.count, size=spec.size, seed=seed)
    raise ValueError(f"a {spec.kind} source holds videos: use it in the video stage, not in pretrain")


def video_source(spec: SourceSpec, seed: int) -> Any:
    """A stage-2 source of annotated videos."""
    if spec.kind == "davis":
        return DavisSource(spec.path, sequences=spec.sequences, exclude=spec.exclude, resolution=spec.resolution)
    if spec.kind == "youtube_vos":
        return YouTubeVOSSource(spec.path, sequences=spec.sequences, exclude=spec.exclude)
    if spec.kind == "tiff":
        return TiffVideoSource([(spec.path, spec.labels)])
    if spec.kind.startswith("synthetic_"):
        return SyntheticVideoSource(spec.kind.removeprefix("synthetic_"), count=spec.count,
                                    num_frames=spec.num_frames, size=spec.size, seed=seed)
    raise ValueError(f"a {spec.kind} source holds still images: use it in pretrain, not in the video stage")


def validation_set(specs: Sequence[SourceSpec], seed: int) -> list[VideoSequence]:
    """Whole held-out sequences of the validation sources."""
    sequences: list[VideoSequence] = []
    for i, spec in enumerate(specs):
        sequences.extend(validation_sequences(video_source(spec, seed + _VALIDATION_SEED_OFFSET + i)))
    return sequences


def build_stage(config: TrainConfig) -> tuple[Dataset, Callable[[RGMP], nn.Module], list[VideoSequence]]:
    """(training dataset, objective factory, validation sequences) of a pretrain or video config."""
    data, optim = config.data, config.optim
    weights = [spec.weight for spec in data.sources]
    if config.stage == "pretrain":
        sources = [still_image_source(spec, config.seed + i) for i, spec in enumerate(data.sources)]
        dataset: Dataset = StaticPairDataset(
            sources, crop_size=data.crop_size, seed=config.seed, length=data.length,
            box_probability=data.box_probability, paste_probability=data.paste_probability, weights=weights,
        )

        def objective(model: RGMP) -> nn.Module:
            return PairObjective(model, optim.aux_weight)
    elif config.stage == "video":
        sources = [video_source(spec, config.seed + i) for i, spec in enumerate(data.sources)]
        dataset = VideoClipDataset(
            sources, clip_length=data.clip_length, crop_size=data.crop_size, max_skip=data.max_skip,
            max_objects=data.max_objects, seed=config.seed, length=data.length, source_weights=weights,
        )

        def objective(model: RGMP) -> nn.Module:
            return ClipObjective(model, optim.aux_weight, optim.bptt_frames)
    else:
        raise ValueError(f"build_stage handles pretrain and video; use training.finetune for {config.stage!r}")
    return dataset, objective, validation_set(config.validation.sources, config.seed)
