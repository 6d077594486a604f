"""Region mode (rgmp_model.inference.region): per-object crops, vanishing objects, divisions, the auto rule."""

from __future__ import annotations

import numpy as np
import torch

from local_rule_model import LocalRuleModel
from rgmp_model.inference.region import RegionOptions, RegionTracker, choose_region_mode


def disc(shape, centre, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def frame_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32))[None, None].expand(1, 3, -1, -1).contiguous()


def test_object_leaving_the_frame_gets_confidence_zero_and_is_dropped() -> None:
    shape = (128, 128)
    frames, centres = [], [(64, 100 + 4 * t) for t in range(12)]  # object 2 drifts out to the right
    for t in range(12):
        image = np.zeros(shape, np.float32)
        image[disc(shape, (30, 30), 6)] = 1.0
        image[disc(shape, centres[t], 6)] = 1.0
        frames.append(image)
    key = np.zeros(shape, np.int64)
    key[disc(shape, (30, 30), 6)] = 1
    key[disc(shape, centres[0], 6)] = 2
    tracker = RegionTracker(LocalRuleModel(), RegionOptions(crop_size=64, normalise=False), grey=True)
    tracker.start(frame_tensor(frames[0]), key, [1, 2])
    gone_at = None
    for t in range(1, 12):
        result = tracker.step(frame_tensor(frames[t]))
        assert result.confidence[1] > 0.9 and (result.channels == 1).sum() > 80
        if gone_at is None and result.confidence.get(2, 1.0) == 0.0:
            gone_at = t
            assert not (result.channels == 2).any()  # not smeared over the background
        if gone_at is not None and t > gone_at:
            assert 2 not in result.confidence and 2 not in tracker.tracks
    assert gone_at is not None and gone_at >= 6  # it was tracked while it was in the frame


def test_split_divisions_gives_the_separated_part_a_new_id_with_its_parent() -> None:
    shape = (96, 96)
    frames = []
    for t in range(6):  # one cell elongates and splits into two daughters moving apart
        image = np.zeros(shape, np.float32)
        offset = 3 * t
        image[disc(shape, (48, 48 - offset), 7)] = 1.0
        image[disc(shape, (48, 48 + offset), 7)] = 1.0
        frames.append(image)
    key = (frames[0] > 0).astype(np.int64)
    for split, expected_ids in ((False, {1}), (True, {1, 2})):
        tracker = RegionTracker(LocalRuleModel(), RegionOptions(crop_size=64, normalise=False,
                                                                split_divisions=split), grey=True)
        tracker.start(frame_tensor(frames[0]), key, [1])
        born = {}
        for t in range(1, 6):
            result = tracker.step(frame_tensor(frames[t]))
            born.update(result.born)
        last = result.channels
        assert set(np.unique(last)) - {0} == expected_ids
        if split:
            assert born == {2: 1}
            left, right = last[48, 48 - 15], last[48, 48 + 15]
            assert {left, right} == {1, 2}
        else:
            assert last[48, 48 - 15] == last[48, 48 + 15] == 1  # both daughters keep the id


def test_auto_rule_prefers_region_mode_for_many_small_objects_in_large_frames() -> None:
    small = np.zeros((1024, 1024), np.int64)
    for i, (y, x) in enumerate([(100, 100), (500, 600), (900, 300)], start=1):
        small[disc(small.shape, (y, x), 15)] = i
    assert choose_region_mode(small)
    large = np.zeros((1024, 1024), np.int64)
    large[disc(large.shape, (512, 512), 300)] = 1
    assert not choose_region_mode(large)
    assert not choose_region_mode(small[:400, :400])  # a small frame: full-frame mode is cheap


def test_each_crop_is_normalised_by_its_own_percentiles() -> None:
    tracker = RegionTracker(LocalRuleModel(), RegionOptions(crop_size=32), grey=True)
    dim = torch.zeros(1, 3, 32, 32)
    dim[..., 10:20, 10:20] = 0.05
    bright = dim * 20
    out = tracker._normalised(torch.cat([dim, bright]))
    torch.testing.assert_close(out[0], out[1])
    assert out[0].max() == 1.0
