"""Region mode's batched crops and paste (rgmp_model.inference.region_crops, region_paste) against
the per-object operations they replace: roi_align per crop and per mask, and a grid_sample paste
with RGMP's soft aggregation object by object. Also the percentiles from topk, the full-frame
winners, and frames read ahead (rgmp_model.inference.frame_feed). CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from rgmp_model.inference.frame_feed import FrameFeed, to_host
from rgmp_model.inference.frames import FrameStack
from rgmp_model.inference.propagators import winner_scores, winners
from rgmp_model.inference.region_crops import cut_windows, percentiles
from rgmp_model.inference.region_paste import hot_threshold, paste_and_merge

_EPS = 1e-6


def windows_in(shape, count, rng, sides=(20, 90)):
    """Square windows, some across the frame's edges, one tiny (upscaled) and one larger than the frame."""
    out = []
    for _ in range(count):
        side = rng.uniform(*sides)
        cy, cx = rng.uniform(-15, shape[0] + 15), rng.uniform(-15, shape[1] + 15)
        out.append((cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2))
    out.append((3.3, 5.1, 9.2, 11.0))
    out.append((-40.0, -30.5, shape[0] + 35.2, shape[1] + 20.0))
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_batched_crops_equal_roi_align_and_masks_cut_from_their_boxes(channels: int) -> None:
    rng = np.random.default_rng(0)
    shape, size = (150, 190), 32
    image = torch.rand(channels, *shape, generator=torch.Generator().manual_seed(0))
    windows = windows_in(shape, 12, rng)
    labels = torch.zeros(shape, dtype=torch.int32)
    boxes = []
    for k, (top, left, bottom, right) in enumerate(windows, start=1):  # object k: a blob in its window
        cy, cx = (top + bottom) / 2, (left + right) / 2
        t, l = int(np.clip(cy - 4, 0, shape[0] - 1)), int(np.clip(cx - 5, 0, shape[1] - 1))
        b, r = int(np.clip(cy + 4, t + 1, shape[0])), int(np.clip(cx + 5, l + 1, shape[1]))
        labels[t:b, l:r] = k
        boxes.append((t, l, b, r))
    channel_ids = list(range(1, len(windows) + 1))
    boxes = [tuple(int(v) for v in torch.nonzero(labels == c).min(0).values.tolist()
                   + (torch.nonzero(labels == c).max(0).values + 1).tolist()) if (labels == c).any() else (0, 0, 1, 1)
             for c in channel_ids]
    crops, masks = cut_windows(image, windows, size, labels, channel_ids, boxes)
    rois = torch.tensor([[0, w[1], w[0], w[3], w[2]] for w in windows], dtype=torch.float32)
    want = roi_align(image[None], rois, (size, size), 1.0, 2, aligned=True)
    torch.testing.assert_close(crops, want, rtol=0, atol=1e-5)
    want_masks = torch.cat([roi_align((labels == c).float()[None, None], rois[k : k + 1], (size, size), 1.0, 2,
                                      aligned=True) for k, c in enumerate(channel_ids)])[:, 0]
    torch.testing.assert_close(masks, want_masks, rtol=0, atol=1e-5)
    _, anywhere = cut_windows(image, windows, size, labels, channel_ids)  # no boxes: the whole window
    torch.testing.assert_close(anywhere, want_masks, rtol=0, atol=1e-5)


def paste_object_by_object(probabilities, windows, shape):
    """The paste region mode did before: one grid_sample and one aggregation pass per object."""
    height, width = shape
    log_background, odds_sum, pasted = torch.zeros(shape), torch.zeros(shape), {}
    for k, (top, left, bottom, right) in enumerate(windows):
        t0, l0 = max(int(np.floor(top)), 0), max(int(np.floor(left)), 0)
        t1, l1 = min(int(np.ceil(bottom)), height), min(int(np.ceil(right)), width)
        if t1 <= t0 or l1 <= l0:
            continue
        ys = (torch.arange(t0, t1) + 0.5 - top) / (bottom - top) * 2 - 1
        xs = (torch.arange(l0, l1) + 0.5 - left) / (right - left) * 2 - 1
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]
        p = F.grid_sample(probabilities[k][None, None], grid, mode="bilinear", align_corners=False)[0, 0]
        p = p.clamp(_EPS, 1 - _EPS)
        log_background[t0:t1, l0:l1] += torch.log1p(-p)
        odds_sum[t0:t1, l0:l1] += p / (1 - p)
        pasted[k] = ((t0, l0, t1, l1), p)
    background = log_background.exp().clamp(_EPS, 1 - _EPS)
    total = background / (1 - background) + odds_sum
    best = (background / (1 - background)) / total
    kept_background = best.clone()
    winner = torch.full(shape, -1, dtype=torch.int64)
    aggregated = {}
    for k, ((t0, l0, t1, l1), p) in pasted.items():
        q = (p / (1 - p)) / total[t0:t1, l0:l1]
        aggregated[k] = q
        wins = q > best[t0:t1, l0:l1]
        best[t0:t1, l0:l1] = torch.where(wins, q, best[t0:t1, l0:l1])
        winner[t0:t1, l0:l1] = torch.where(wins, torch.full_like(winner[t0:t1, l0:l1], k), winner[t0:t1, l0:l1])
    return winner, aggregated, kept_background


@pytest.mark.parametrize("keep_background, every_pixel", [(False, None), (True, None), (False, True)])
def test_the_batched_paste_gives_every_pixel_to_the_same_object(keep_background: bool, every_pixel) -> None:
    rng = np.random.default_rng(1)
    shape, size = (200, 230), 48
    windows = windows_in(shape, 25, rng, sides=(15, 120))
    yy, xx = np.mgrid[:size, :size]
    crops = []
    for _ in windows:  # a soft blob per crop, some dim, and noise
        radius, sharpness = rng.uniform(5, 18), rng.uniform(1.5, 6)
        blob = 1 / (1 + np.exp(-(radius - np.hypot(yy - size / 2 - rng.uniform(-8, 8), xx - size / 2)) / sharpness))
        crops.append(np.clip(blob * rng.uniform(0.4, 1.0) + rng.uniform(0, 0.05, blob.shape), 0, 1))
    probabilities = torch.from_numpy(np.stack(crops).astype(np.float32))
    merged = paste_and_merge(probabilities, windows, shape, keep_background, every_pixel=every_pixel)
    winner, aggregated, background = paste_object_by_object(probabilities, windows, shape)
    got = torch.full((shape[0] * shape[1] + 1,), -1, dtype=torch.int64)
    got[merged.pixel[merged.won]] = merged.owner[merged.won]
    assert torch.equal(got[:-1].view(shape), winner)
    for k, q in aggregated.items():  # each object's area, score and box from its pixels
        mine = winner == k
        assert int(merged.area[k]) == int(mine.sum())
        if mine.any():
            t0, l0, t1, l1 = merged.patches[k]
            assert abs(float(merged.score[k] / merged.area[k]) - float(q[mine[t0:t1, l0:l1]].mean())) < 1e-5
            ys, xs = torch.nonzero(mine, as_tuple=True)
            assert merged.box[k].tolist() == [int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1]
    if keep_background:
        torch.testing.assert_close(merged.background, background, rtol=1e-5, atol=1e-6)


def test_the_hot_threshold_keeps_the_background_ahead() -> None:
    for coverage in (1, 2, 4, 10, 40, 190):
        t = hot_threshold(coverage)
        background = (1 - t) ** coverage
        assert t / (1 - t) < background / (1 - background)
    assert hot_threshold(1) > 0.4 and hot_threshold(4) > 0.2 > hot_threshold(40) > 0.05


def test_percentiles_from_topk_equal_torch_quantile() -> None:
    generator = torch.Generator().manual_seed(3)
    for count in (7, 1000, 9216):
        values = torch.rand(5, count, generator=generator) ** 3
        values[0, : count // 2] = 0.25  # ties
        want = torch.quantile(values, torch.tensor([0.01, 0.995]), dim=1)
        low, high = percentiles(values, (0.01, 0.995))
        torch.testing.assert_close(low, want[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(high, want[1], rtol=1e-6, atol=1e-7)


def test_winners_are_argmax_and_their_scores_the_mean_over_their_pixels() -> None:
    generator = torch.Generator().manual_seed(4)
    probabilities = torch.softmax(torch.randn(4, 30, 40, generator=generator) * 3, dim=0)
    probabilities[:, 0, 0] = 0.25  # a tie: the first channel wins, as argmax
    winner, best = winners(probabilities)
    assert torch.equal(winner, probabilities.argmax(0))
    scores = winner_scores(winner, best, 5)
    for c in range(5):
        region = winner == c
        want = float(probabilities[c][region].mean()) if c < 4 and region.any() else 0.0
        assert abs(float(scores[c]) - want) < 1e-6


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_frames_read_ahead_equal_frames_read_in_place(dtype) -> None:
    rng = np.random.default_rng(5)
    frames = (rng.random((6, 20, 30)) * 200).astype(dtype)
    stack = FrameStack(frames)
    direct = FrameFeed(stack, "cpu")
    ahead = FrameFeed(stack, "cpu", ahead=2, threaded=True)
    ahead.expect([1, 2, 3, 5])
    for t in (1, 2, 3, 5, 0):  # in order, then one not expected
        got, want = ahead.get(t), direct.get(t)
        assert got.shape == (1, 1, 20, 30)
        assert torch.equal(got, want)
        assert torch.equal(got[0, 0], torch.from_numpy(stack[t][..., 0]))
    ahead.close()


def test_a_frame_that_fails_to_read_ahead_fails_when_asked_for() -> None:
    class Damaged(np.ndarray):
        pass

    frames = np.zeros((4, 8, 8), np.uint8)

    class Stack(FrameStack):
        def raw(self, index: int) -> np.ndarray:
            if index == 2:
                raise ValueError("frame 2 is damaged")
            return super().raw(index)

    feed = FrameFeed(Stack(frames), "cpu", threaded=True)
    feed.expect([1, 2, 3])
    assert feed.get(1).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="frame 2 is damaged"):
        feed.get(2)
    feed.close()


def test_masks_cut_from_their_patches_follow_roi_align_on_the_patch() -> None:
    """A track's previous mask is cut from its patch as an image of its own (region mode's rule)."""
    rng = np.random.default_rng(6)
    shape, size = (120, 140), 32
    labels = torch.zeros(shape, dtype=torch.int32)
    windows, patches, boxes = [], [], []
    for k in range(1, 9):
        t0, l0 = int(rng.integers(0, 80)), int(rng.integers(0, 100))
        t1, l1 = t0 + int(rng.integers(12, 40)), l0 + int(rng.integers(12, 40))
        t1, l1 = min(t1, shape[0]), min(l1, shape[1])
        bt, bl = t0 + int(rng.integers(0, 4)), l0 + int(rng.integers(0, 4))  # the object touches the patch's edges
        labels[bt:t1, bl:l1] = k
        patches.append((t0, l0, t1, l1))
        boxes.append((bt, bl, t1, l1))
        cy, cx, side = (t0 + t1) / 2 + rng.uniform(-6, 6), (l0 + l1) / 2 + rng.uniform(-6, 6), rng.uniform(20, 70)
        windows.append((cy - side / 2, cx - side / 2, cy + side / 2, cx + side / 2))
    image = torch.rand(1, *shape)
    _, masks = cut_windows(image, windows, size, labels, list(range(1, 9)), boxes, patches)
    for k, ((t0, l0, t1, l1), w) in enumerate(zip(patches, windows)):
        patch = (labels[t0:t1, l0:l1] == k + 1).float()[None, None]
        roi = torch.tensor([[0, w[1] - l0, w[0] - t0, w[3] - l0, w[2] - t0]], dtype=torch.float32)
        torch.testing.assert_close(masks[k], roi_align(patch, roi, (size, size), 1.0, 2, aligned=True)[0, 0],
                                   rtol=0, atol=1e-5)


def test_results_on_the_cpu_need_no_transfer() -> None:
    values, more = torch.arange(5), torch.ones(2, 3)
    got = to_host(values, more)
    assert got[0] is values and got[1] is more
