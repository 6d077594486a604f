"""Clips animated from stills (training.still_clips) and occluders crossing clips (training.occluders)."""

from __future__ import annotations

import numpy as np
import torch

from rgmp_model.data.synthetic import synthetic_video
from training.occluders import add_occluder, cut_object
from training.still_clips import StillClipSource
from training.video_clips import VideoClipDataset
from training.video_sources import StackVideoSource


class Stills:
    """Two textured stills, each with one square object."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.items = []
        for k in range(2):
            image = rng.uniform(0, 1, (64, 80, 3)).astype(np.float32)
            labels = np.zeros((64, 80), np.int32)
            labels[20 + k : 44, 24:52] = 7
            self.items.append((image, labels))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_a_still_becomes_a_clip_whose_object_moves_and_keeps_its_labels() -> None:
    source = StillClipSource(Stills(), num_frames=10, seed=3, max_speed=0.05)
    assert len(source) == 2 and source.annotated(0) == tuple(range(10))
    moved = False
    for i in range(2):
        seq = source.sequence(i)
        assert seq.frames.shape == (10, 64, 80, 3) and seq.frames.dtype == np.uint8
        first = np.asarray(seq.labels[0])
        assert set(np.unique(first)) == {0, 1}  # the still's object renumbered 1
        np.testing.assert_array_equal(first > 0, Stills()[i][1] > 0)  # frame 0: the still itself
        last = np.asarray(seq.labels[9])
        moved |= not np.array_equal(first, last)
        again = StillClipSource(Stills(), num_frames=10, seed=3, max_speed=0.05).sequence(i)
        np.testing.assert_array_equal(np.asarray(seq.frames[5]), np.asarray(again.frames[5]))  # (seed, i) only
    assert moved


def test_an_occluder_hides_the_objects_it_covers_but_never_the_reference() -> None:
    rng = np.random.default_rng(1)
    frames = torch.zeros((5, 3, 48, 48))
    labels = torch.ones((5, 48, 48), dtype=torch.int64)
    image = np.ones((20, 20, 3), np.float32)
    mask = np.zeros((20, 20), np.int32)
    mask[2:18, 2:18] = 3
    colours, alpha = cut_object(image, mask, rng)
    assert colours.shape == (3, 16, 16) and alpha.shape == (16, 16)
    out_frames, out_labels = add_occluder(rng, frames, labels, colours, alpha, size=(0.4, 0.4))
    assert torch.equal(out_frames[0], frames[0]) and torch.equal(out_labels[0], labels[0])
    for t in range(1, 5):
        covered = out_frames[t].mean(0) > 0.5
        assert covered.any() and (out_labels[t][covered] == 0).all()
    assert (labels == 1).all()  # inputs untouched
    assert cut_object(image, np.zeros((20, 20), np.int32), rng) is None


def test_clip_dataset_occluders_change_only_the_clips_they_are_drawn_for() -> None:
    seq = synthetic_video(num_frames=8, height=64, width=64, num_objects=2, seed=0)
    plain = VideoClipDataset(StackVideoSource(seq.frames, seq.labels), clip_length=4, crop_size=(64, 64), seed=0)
    occluded = VideoClipDataset(StackVideoSource(seq.frames, seq.labels), clip_length=4, crop_size=(64, 64), seed=0,
                                occluder_probability=0.5)
    changed = 0
    for k in range(8):
        a, b = plain.sample(k), occluded.sample(k)
        assert a.frame_indices == b.frame_indices and torch.equal(a.frames[0], b.frames[0])
        changed += not torch.equal(a.frames, b.frames)
    assert 0 < changed < 8


def test_grey_clips_can_be_shown_as_region_mode_shows_crops() -> None:
    from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
    from rgmp_model.inference.crop_contrast import normalise_crops

    seq = synthetic_microscopy(num_frames=6, height=64, width=64, num_cells=3, seed=0)
    source = StackVideoSource(seq.frames, seq.labels)
    plain = VideoClipDataset(source, clip_length=3, crop_size=(64, 64), seed=0)
    shown = VideoClipDataset(source, clip_length=3, crop_size=(64, 64), seed=0, crop_contrast_probability=1.0)
    a, b = plain.sample(2), shown.sample(2)
    assert a.frame_indices == b.frame_indices and torch.equal(a.labels, b.labels)
    torch.testing.assert_close(b.frames[:1], normalise_crops(a.frames[:1]))  # frame 0: its own percentiles
    assert float(b.frames.amax()) == 1.0 and float(b.frames.amin()) == 0.0
    colour = synthetic_video(num_frames=6, height=64, width=64, num_objects=2, seed=0)
    rgb = VideoClipDataset(StackVideoSource(colour.frames, colour.labels), clip_length=3, crop_size=(64, 64), seed=0,
                           crop_contrast_probability=1.0)
    rgb_plain = VideoClipDataset(StackVideoSource(colour.frames, colour.labels), clip_length=3, crop_size=(64, 64),
                                 seed=0)
    assert torch.equal(rgb.sample(1).frames, rgb_plain.sample(1).frames)  # colour clips are left alone
