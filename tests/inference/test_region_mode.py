"""Region mode: the tracker (rgmp_model.inference.region) and region mode in a session (options,
the automatic choice, equality with full-frame mode, objects leaving the frame, divisions), with
LocalRuleModel, a stand-in network whose output is a local rule. CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers.local_rule_model import LocalRuleModel
from rgmp_model import PropagationOptions, PropagationSession, open_session
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
    assert choose_region_mode(small[:400, :400])  # small objects in a 400 px frame: region mode too
    for side, expected in ((256, False), (272, True)):  # the same small nuclei: only the frame's size differs
        field = np.zeros((side, side), np.int64)
        for i, (y, x) in enumerate([(40, 40), (120, 200), (200, 90)], start=1):
            field[disc(field.shape, (y, x), 4)] = i
        assert choose_region_mode(field) == expected  # up to 256 px full-frame mode is cheap


def test_each_crop_is_normalised_by_its_own_percentiles() -> None:
    tracker = RegionTracker(LocalRuleModel(), RegionOptions(crop_size=32), grey=True)
    dim = torch.zeros(1, 3, 32, 32)
    dim[..., 10:20, 10:20] = 0.05
    bright = dim * 20
    out = tracker._normalised(torch.cat([dim, bright]))
    torch.testing.assert_close(out[0], out[1])
    assert out[0].max() == 1.0


# ---------------------------------------------------------------------------------- in a session
def session(frames: np.ndarray, **options) -> PropagationSession:
    return open_session(LocalRuleModel(), frames, PropagationOptions(device="cpu", **options))


def moving_discs(shape, tracks, num_frames, ids, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 grey frames (dark noise, bright discs) and the true labels; ``tracks``: (y, x, vy, vx, r)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 20, (num_frames, *shape)).astype(np.uint8)
    labels = np.zeros((num_frames, *shape), np.int32)
    for t in range(num_frames):
        for k, ((y, x, vy, vx, r), object_id) in enumerate(zip(tracks, ids)):
            inside = disc(shape, (y + vy * t, x + vx * t), r)
            frames[t][inside] = 200 + 10 * (k % 5)
            labels[t][inside] = object_id
    return frames, labels


def test_region_mode_equals_full_frame_mode_where_crops_cover_each_neighbourhood() -> None:
    tracks = [(50, 60, 1.0, 1.5, 9), (180, 70, -1.0, 1.0, 8), (120, 190, 1.5, -1.0, 10), (200, 200, -1.5, -0.5, 7)]
    ids = (3, 6, 9, 12)
    frames, truth = moving_discs((256, 256), tracks, 8, ids)
    results = {}
    for region in ("off", "on"):
        s = session(frames, region=region)
        s.add_keyframe(0, truth[0])
        results[region] = {}
        for t, labels, confidence in s.propagate(keep_probabilities=True):
            results[region][t] = (labels, confidence)
            if region == "on":  # the kept probabilities are the ones the labels were taken from
                lookup = np.concatenate([[0], s.object_ids])
                np.testing.assert_array_equal(lookup[s.last_probabilities.argmax(0)], labels)
                assert s.last_probabilities.shape == (5, 256, 256)
        assert s.region_used == {0: region == "on"}
    model = s.model
    for t in range(8):
        (full, full_confidence), (cropped, cropped_confidence) = results["off"][t], results["on"][t]
        assert cropped.dtype == full.dtype and set(cropped_confidence) == set(full_confidence) == set(ids)
        for object_id in ids:
            a, b = full == object_id, cropped == object_id
            assert (a & b).sum() / (a | b).sum() >= 0.9, (t, object_id)
            assert abs(full_confidence[object_id] - cropped_confidence[object_id]) < 0.05
    calls = model.encode_calls
    list(s.propagate())  # again: the keyframe's reference crops are kept, one batched pass per frame
    assert model.encode_calls - calls == 7


def test_an_object_leaving_the_frame_is_reported_once_with_confidence_zero_then_dropped() -> None:
    frames, truth = moving_discs((128, 128), [(30, 30, 0, 0, 6), (64, 100, 0, 4, 6)], 12, (3, 7))
    s = session(frames, region="on", region_crop_size=64)
    s.add_keyframe(0, truth[0])
    lost = None
    for t, labels, confidence in s.propagate():
        assert confidence[3] > 0.9 and (labels == 3).sum() > 80
        if lost is None and confidence.get(7, 1.0) == 0.0:
            lost = t
            assert not (labels == 7).any()  # not smeared over the background
        elif lost is not None:
            assert 7 not in confidence and not (labels == 7).any()  # absent, never labelled again
        if lost is None:
            assert (labels == 7).any() and confidence[7] > 0.5
    assert lost is not None and lost >= 6  # tracked while it was in the frame


def dividing_cell(num_frames: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """One cell (id 5) splitting into two daughters moving apart, and a still cell (id 9)."""
    shape = (128, 128)
    frames = np.zeros((num_frames, *shape), np.uint8)
    for t in range(num_frames):
        frames[t][disc(shape, (64, 48 - 3 * t), 7) | disc(shape, (64, 48 + 3 * t), 7)] = 220
        frames[t][disc(shape, (110, 110), 6)] = 220
    key = np.zeros(shape, np.uint8)
    key[(frames[0] > 0) & (np.arange(128)[:, None] < 90)] = 5
    key[disc(shape, (110, 110), 6)] = 9
    return frames, key


def test_dividing_cells_keep_their_id_by_default() -> None:
    frames, key = dividing_cell()
    s = session(frames, region="on", region_crop_size=64)
    s.add_keyframe(0, key)
    *_, (t, labels, confidence) = s.propagate()
    assert t == 5 and set(np.unique(labels)) == {0, 5, 9} and set(confidence) == {5, 9}
    assert labels[64, 48 - 15] == labels[64, 48 + 15] == 5  # both daughters
    assert s.divisions == {}


def test_split_divisions_gives_the_separated_part_a_new_id_and_records_its_parent() -> None:
    frames, key = dividing_cell()
    s = session(frames, region="on", region_crop_size=64, split_divisions=True)
    s.add_keyframe(0, key)
    results = {t: (labels, confidence) for t, labels, confidence in s.propagate()}
    labels, confidence = results[5]
    assert {labels[64, 48 - 15], labels[64, 48 + 15]} == {5, 10}  # 10: the largest keyframe id + 1
    assert s.divisions == {10: 5} and set(confidence) == {5, 9, 10}
    born = min(t for t, (l, _) in results.items() if (l == 10).any())
    assert results[born][1][10] > 0.5 and not any((results[t][0] == 10).any() for t in range(born))
    again = {t: labels for t, labels, _ in s.propagate()}  # propagated again: the same ids
    for t in results:
        np.testing.assert_array_equal(again[t], results[t][0])
    assert s.divisions == {10: 5}
    s.add_keyframe(5, results[5][0])  # frame 5's result becomes a keyframe: 10 is a user's id now
    again = {t: labels for t, labels, _ in s.propagate()}
    assert s.divisions == {11: 5}  # unique in the session: the division in frames 1-4 gets 11
    assert {again[4][64, 48 - 12], again[4][64, 48 + 12]} == {5, 11}


def test_auto_chooses_region_mode_per_keyframe_and_on_off_force_it() -> None:
    shape = (640, 640)  # longer than 256 px: the automatic rule may choose region mode
    centres = [(80 + 160 * (k // 4), 80 + 160 * (k % 4)) for k in range(12)]
    frames, small = moving_discs(shape, [(y, x, 0, 0, 8) for y, x in centres], 4, range(1, 13))
    large = np.zeros(shape, np.int32)
    large[disc(shape, (320, 320), 200)] = 1
    for region, expected_small, expected_large in (("auto", True, False), ("on", True, True), ("off", False, False)):
        s = session(frames, region=region)
        s.set_keyframes({0: small[0], 3: large})
        assert (s.uses_region(0), s.uses_region(3)) == (expected_small, expected_large)
        results = {t: labels for t, labels, _ in s.propagate("both")}  # 1 from 0, 2 from 3
        assert s.region_used == {0: expected_small, 3: expected_large}
        assert set(np.unique(results[1])) == set(range(13)) and set(np.unique(results[2])) == {0, 1}
    # the automatic rule keeps whole frames for what only they do: the authors' procedure, flow, scales
    for options in ({"mode": "official"}, {"flow": "ilk"}, {"scales": (0.5, 1.0)}):
        s = session(frames, **options)
        s.add_keyframe(0, small[0])
        assert not s.uses_region(0)
    with pytest.raises(ValueError, match="frame 3 is not a keyframe"):
        s.uses_region(3)


@pytest.mark.parametrize("bad, message", [
    ({"region": "sometimes"}, "region must be one of"),
    ({"region_crop_size": 100}, "region_crop_size must be a multiple of 32"),
    ({"region_crop_size": True}, "region_crop_size must be"),
    ({"region": "on", "mode": "official"}, "region mode runs the default procedure"),
    ({"region": "on", "flow": "tvl1"}, "use region='off' with flow"),
    ({"region": "on", "scales": (0.5, 1.0)}, "region mode works at one scale"),
    ({"split_divisions": True, "region": "off"}, "split_divisions works in region mode only"),
    ({"split_divisions": True, "mode": "official"}, "split_divisions works in region mode only"),
    ({"split_divisions": 1}, "split_divisions must be True or False"),
])
def test_region_options_are_checked_when_made(bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        PropagationOptions(**bad)
    options = PropagationOptions(region="on", region_crop_size=np.int64(96), split_divisions=True)
    assert options.region_crop_size == 96 and options.replace(region="auto").region == "auto"
    assert PropagationSession(LocalRuleModel(), np.zeros((2, 64, 64), np.uint8), region="off").options.region == "off"


def test_the_previous_mask_of_the_next_frame_is_the_objects_pixels() -> None:
    """A soft previous mask, cut, resized and pasted back frame after frame, loses mass (a dim
    nucleus shrinks until it is lost); each track carries its object's winning pixels instead."""
    shape = (96, 96)
    image = np.zeros(shape, np.float32)
    image[disc(shape, (30, 30), 8)] = 0.45  # dim: the rule's probability stays well below 1
    image[disc(shape, (64, 60), 8)] = 1.0
    key = np.zeros(shape, np.int64)
    key[disc(shape, (30, 30), 8)] = 1
    key[disc(shape, (64, 60), 8)] = 2
    tracker = RegionTracker(LocalRuleModel(sharpness=4.0), RegionOptions(crop_size=64, normalise=False), grey=True)
    tracker.start(frame_tensor(image), key, [1, 2])
    for _ in range(3):
        result = tracker.step(frame_tensor(image))
        for c in (1, 2):
            t0, l0, t1, l1 = tracker.tracks[c].patch
            previous = tracker.tracks[c].previous.cpu().numpy()
            assert set(np.unique(previous)) <= {0.0, 1.0}
            np.testing.assert_array_equal(previous, (result.channels[t0:t1, l0:l1] == c).astype(np.float32))
        assert result.confidence[1] < 0.9  # object 1's probability is soft indeed
    assert (result.channels == 1).sum() >= 0.9 * (key == 1).sum()  # and has not shrunk


@pytest.mark.parametrize(("radius", "scale", "expected"), [(10, 1.0, 64), (10, 2.0, 96), (40, 1.0, 192), (40, 2.0, 256)])
def test_automatic_crop_size_sees_the_median_object_at_crop_scale(radius, scale, expected) -> None:
    # box side 2r + 1 (the disc's pixels), crop side (2r + 1) x 2.5, times crop_scale, rounded to
    # the network stride and clipped to 64-256 px
    shape = (512, 512)
    key = disc(shape, (256, 256), radius).astype(np.int64)
    tracker = RegionTracker(LocalRuleModel(), RegionOptions(normalise=False, crop_scale=scale), grey=True)
    tracker.start(frame_tensor(key.astype(np.float32)), key, [1])
    assert tracker.crop_size == expected


def test_crop_scale_default_is_two_and_must_be_positive() -> None:
    assert RegionOptions().crop_scale == 2.0
    with pytest.raises(ValueError, match="crop_scale > 0"):
        RegionOptions(crop_scale=0)
