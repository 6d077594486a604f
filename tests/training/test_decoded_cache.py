"""Decoded training samples kept on disk (training/decoded_cache.py): the same arrays as the
sources give, each read from its source once, and the stages train with the cache on. CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.config import config_from_dict
from training.data import build_stage
from training.decoded_cache import CachedImageSource, CachedVideoSource, DecodedFrames, cached_array
from training.video_sources import SyntheticVideoSource

from tests.helpers.tiny_training import tiny


class CountingFrames:
    """A lazy stack that counts its reads."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.shape, self.dtype, self.reads = frames, frames.shape, frames.dtype, 0

    def __getitem__(self, t: int) -> np.ndarray:
        self.reads += 1
        return self.frames[t]


def test_frames_are_read_once_then_mapped_from_the_folder(tmp_path: Path) -> None:
    frames = CountingFrames(np.random.default_rng(0).integers(0, 255, (4, 6, 7, 3), dtype=np.uint8))
    cached = DecodedFrames(frames, tmp_path / "a")
    for _ in range(3):
        for t in range(4):
            np.testing.assert_array_equal(cached[t], frames.frames[t])
    assert frames.reads == 4 and cached.shape == (4, 6, 7, 3) and cached.dtype == np.uint8
    again = DecodedFrames(CountingFrames(frames.frames), tmp_path / "a")  # another worker, another run
    np.testing.assert_array_equal(again[2], frames.frames[2])
    assert again._frames.reads == 0
    np.testing.assert_array_equal(cached[1:3], frames.frames[1:3])


def test_float_images_of_uint8_values_are_kept_as_uint8_and_come_back_equal(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, (5, 8, 3)).astype(np.float32) * np.float32(1.0 / 255.0)
    first = cached_array(tmp_path / "x.npy", lambda: image)
    second = cached_array(tmp_path / "x.npy", lambda: None)
    assert (tmp_path / "x.u8.npy").stat().st_size < image.nbytes
    np.testing.assert_array_equal(first, image)
    np.testing.assert_array_equal(second, image)
    assert second.dtype == np.float32 and second.flags.writeable
    other = np.random.default_rng(2).random((3, 4)).astype(np.float32)  # not uint8 / 255: kept as it is
    np.testing.assert_array_equal(cached_array(tmp_path / "y.npy", lambda: other), other)
    np.testing.assert_array_equal(cached_array(tmp_path / "y.npy", lambda: None), other)


def test_cached_sources_give_the_same_samples(tmp_path: Path) -> None:
    source = SyntheticVideoSource("video", count=2, num_frames=3, size=(32, 40), seed=3)
    cached = CachedVideoSource(source, tmp_path)
    assert cached.names == source.names and len(cached) == 2 and cached.annotated(1) == source.annotated(1)
    plain, kept = source.sequence(1), cached.sequence(1)
    for t in range(3):
        np.testing.assert_array_equal(kept.frames[t], np.asarray(plain.frames[t]))
        np.testing.assert_array_equal(kept.labels[t], np.asarray(plain.labels[t]))
    from training.still_sources import VideoStills

    stills = VideoStills(source)
    kept_stills = CachedImageSource(stills, tmp_path)
    for i in range(2):
        for a, b in zip(kept_stills[i], stills[i]):
            np.testing.assert_array_equal(a, b)
    assert CachedImageSource(stills, tmp_path).folder == kept_stills.folder  # the same data, the same files


def test_stages_train_with_the_cache_on(tmp_path: Path) -> None:
    for stage in ("pretrain", "video"):
        config = config_from_dict(tiny(stage, tmp_path / stage, data={"decoded_cache": str(tmp_path / "cache")}))
        dataset, _, _ = build_stage(config)
        off, _, _ = build_stage(config_from_dict(tiny(stage, tmp_path / stage)))
        first, second = dataset[5], off[5]
        for key in first:
            torch.testing.assert_close(torch.as_tensor(first[key]), torch.as_tensor(second[key]))
    assert any((tmp_path / "cache").rglob("*.npy"))
