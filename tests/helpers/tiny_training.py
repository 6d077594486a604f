"""Tiny training set-ups on the CPU: a pair dataset and config for the trainer, and a config of
any stage on synthetic data (the trainer, stage, cache and reliability tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.config import config_from_dict
from training.objectives import PairObjective

SIZE = 64


class TinyPairs(Dataset):
    """A small over-fit set: a textured square on a textured background, moved a few pixels
    between reference and target; item k depends only on k (mod ``count``)."""

    def __init__(self, count: int = 4) -> None:
        self.count = count

    def __len__(self) -> int:
        return 256

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((11, k % self.count))
        background = rng.random((3, SIZE, SIZE)).astype(np.float32) * 0.5
        y, x = rng.integers(8, 32, size=2)
        dy, dx = rng.integers(-4, 5, size=2)

        def frame_and_mask(top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
            frame, mask = background.copy(), np.zeros((SIZE, SIZE), np.float32)
            frame[:, top : top + 20, left : left + 20] = np.array([0.9, 0.2, 0.1], np.float32)[:, None, None]
            mask[top : top + 20, left : left + 20] = 1
            return frame, mask

        reference, reference_mask = frame_and_mask(y, x)
        target, target_mask = frame_and_mask(y + dy, x + dx)
        previous = np.roll(target_mask, (1, -1), axis=(0, 1))
        return {name: torch.from_numpy(value) for name, value in {
            "reference_frame": reference, "reference_mask": reference_mask, "frame": target,
            "mask": target_mask, "previous_mask": previous}.items()}


def tiny_config(tmp_path, **optim):
    return config_from_dict({
        "stage": "pretrain", "output_dir": str(tmp_path), "device": "cpu",
        "model": {"backbone": "resnet18", "decoder_channels": 8},
        "data": {"batch_size": 2, "crop_size": [SIZE, SIZE]},
        "optim": {"lr": 1e-3, "iterations": 6, **optim},
        "schedule": {"log_every": 1, "checkpoint_every": 3, "validate_every": 1000},
    })


def pair_objective(model):
    return PairObjective(model, aux_weight=0.5)


SYNTHETIC = [{"kind": "synthetic_video", "count": 3, "num_frames": 8, "size": [64, 80]},
             {"kind": "synthetic_microscopy", "count": 2, "num_frames": 8, "size": [64, 64]}]


def tiny(stage: str, output_dir: Path, iterations: int = 3, **sections) -> dict:
    values = {
        "stage": stage, "output_dir": str(output_dir), "device": "cpu",
        "model": {"backbone": "resnet18", "decoder_channels": 8},
        "data": {"sources": SYNTHETIC, "crop_size": [64, 64], "batch_size": 2, "clip_length": 3, "max_objects": 2},
        "optim": {"lr": 1e-3, "iterations": iterations},
        "schedule": {"log_every": 1, "checkpoint_every": 2, "validate_every": 2},
        "validation": {"sources": [{"kind": "synthetic_video", "count": 1, "num_frames": 5, "size": [64, 80]}],
                       "max_frames": 5, "max_size": None},
    }
    for key, value in sections.items():
        values[key] = {**values.get(key, {}), **value}
    return values
