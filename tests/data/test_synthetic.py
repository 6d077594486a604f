"""Tests for the synthetic sequences (rgmp_model.data.synthetic / rgmp_model.data.synthetic_microscopy)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from rgmp_model.data.synthetic import SyntheticSequence, synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout, save_tiff
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy

SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def videos() -> dict[int, SyntheticSequence]:
    return {s: synthetic_video(seed=s) for s in SEEDS}


@pytest.fixture(scope="module")
def cells() -> dict[int, SyntheticSequence]:
    return {s: synthetic_microscopy(seed=s) for s in SEEDS}


def _areas(labels: np.ndarray, oid: int) -> np.ndarray:
    return (labels == oid).sum(axis=(1, 2))


def _aligned_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two masks after moving b's centroid onto a's (integer shift)."""
    shift = np.round(np.array(ndi.center_of_mass(a)) - np.array(ndi.center_of_mass(b))).astype(int)
    pad = int(np.abs(shift).max()) + 1
    a = np.pad(a, pad)
    b = np.roll(np.pad(b, pad), tuple(shift), axis=(0, 1))
    return float((a & b).sum() / (a | b).sum())


def _border_pixels(mask: np.ndarray) -> int:
    return int(mask[0].sum() + mask[-1].sum() + mask[:, 0].sum() + mask[:, -1].sum())


def _occlusion_events(labels: np.ndarray, window: int = 6, drop: float = 0.4, contact: int = 12) -> list:
    """(id, t, t_ref, occluder) events: the id's visible area at t is <= (1 - drop) of its area at a
    nearby frame t_ref, not because it left the frame (no more border pixels than at t_ref), while
    another object sits right against it (>= ``contact`` pixels of its 1-px outer ring)."""
    events = []
    t_n = len(labels)
    for oid in range(1, int(labels.max()) + 1):
        masks = labels == oid
        areas = masks.sum(axis=(1, 2))
        for t in range(t_n):
            for r in range(max(0, t - window), min(t_n, t + window + 1)):
                if areas[r] < 50 or areas[t] > (1 - drop) * areas[r]:
                    continue
                if _border_pixels(masks[t]) > _border_pixels(masks[r]):
                    continue
                ring = ndi.binary_dilation(masks[t]) & ~masks[t]
                near = labels[t][ring]
                near = near[(near != 0) & (near != oid)]
                if near.size >= contact:
                    events.append((oid, t, r, int(np.bincount(near).argmax())))
    return events


# --------------------------------------------------------------------------- dataclass


def test_sequence_dataclass() -> None:
    labels = np.zeros((2, 4, 4), np.uint16)
    labels[0, 0, 0], labels[1, 1, 1] = 2, 5
    seq = SyntheticSequence("x", np.zeros((2, 4, 4), np.uint16), labels)
    assert seq.num_objects == 2
    assert seq.divisions == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        seq.name = "y"  # type: ignore[misc]


# --------------------------------------------------------------------------- natural video


def test_video_shapes_and_dtypes(videos: dict[int, SyntheticSequence]) -> None:
    seq = videos[0]
    assert seq.frames.shape == (24, 128, 160, 3) and seq.frames.dtype == np.uint8
    assert seq.labels.shape == (24, 128, 160) and seq.labels.dtype == np.uint16
    assert seq.divisions == () and seq.num_objects == 3 and isinstance(seq.name, str)
    other = synthetic_video(num_frames=7, height=72, width=96, num_objects=5, seed=3)
    assert other.frames.shape == (7, 72, 96, 3) and other.labels.shape == (7, 72, 96)
    assert set(np.unique(other.labels[0])) == set(range(6))


def test_video_deterministic(videos: dict[int, SyntheticSequence]) -> None:
    again = synthetic_video(seed=0)
    np.testing.assert_array_equal(again.frames, videos[0].frames)
    np.testing.assert_array_equal(again.labels, videos[0].labels)
    assert not np.array_equal(videos[0].frames, videos[1].frames)
    assert not np.array_equal(videos[0].labels, videos[1].labels)


@pytest.mark.parametrize("seed", SEEDS)
def test_video_ids_and_visibility(videos: dict[int, SyntheticSequence], seed: int) -> None:
    labels = videos[seed].labels
    assert set(np.unique(labels[0]).tolist()) == {0, 1, 2, 3}
    assert int(labels.max()) == 3
    for oid in (1, 2, 3):
        visible = _areas(labels, oid) >= 20
        assert visible.mean() >= 0.8, (oid, visible.mean())


@pytest.mark.parametrize("seed", SEEDS)
def test_video_objects_move(videos: dict[int, SyntheticSequence], seed: int) -> None:
    labels = videos[seed].labels
    for oid in (1, 2, 3):
        frames = [t for t in range(len(labels)) if (labels[t] == oid).sum() >= 20]
        cents = np.array([ndi.center_of_mass(labels[t] == oid) for t in frames])
        travel = np.hypot(*(cents - cents[0]).T).max()
        assert travel > 6.0, (oid, travel)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])  # seeds whose lone object is fully in view early and late
def test_video_objects_rotate_and_deform(seed: int) -> None:
    """A lone object (no occluder) changes its shape: aligned IoU first vs last full view < 0.85."""
    labels = synthetic_video(num_objects=1, seed=seed).labels
    full = [t for t in range(len(labels)) if labels[t].any() and not (
        labels[t, 0].any() or labels[t, -1].any() or labels[t, :, 0].any() or labels[t, :, -1].any())]
    assert len(full) >= 6 and full[-1] - full[0] >= 12, full
    first, last = labels[full[0]] == 1, labels[full[-1]] == 1
    iou = _aligned_iou(first, last)
    assert 0.2 < iou < 0.85, iou
    # consecutive frames stay similar (smooth motion): mean aligned IoU of neighbours is high
    step = np.mean([_aligned_iou(labels[a] == 1, labels[b] == 1) for a, b in zip(full, full[1:]) if b == a + 1])
    assert step > 0.8, step


@pytest.mark.parametrize("seed", SEEDS)
def test_video_occlusion_happens(videos: dict[int, SyntheticSequence], seed: int) -> None:
    """With >= 2 objects one pair is made to cross, so some object loses a large part of its visible
    area to another object within a few frames."""
    events = _occlusion_events(videos[seed].labels)
    assert events, "no occlusion found"


def test_video_textured(videos: dict[int, SyntheticSequence]) -> None:
    """Objects and background are textured (grey std well above the <= 3.5 grey-level pixel noise)."""
    for seq in videos.values():
        grey = seq.frames[0].astype(np.float64).mean(axis=-1)
        for oid in (1, 2, 3):
            inner = ndi.binary_erosion(seq.labels[0] == oid, iterations=2)
            if inner.sum() >= 100:
                assert grey[inner].std() > 8.0, (seq.name, oid, grey[inner].std())
        bg = ndi.binary_erosion(seq.labels[0] == 0, iterations=3)
        assert grey[bg].std() > 8.0
        # pixel noise itself is small: high-pass residual of the background
        resid = grey - ndi.uniform_filter(grey, 3)
        assert np.median(np.abs(resid[bg])) < 6.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_video_texture_moves_with_object(seed: int) -> None:
    """The object's appearance in frame t+1, aligned by the centroid shift, matches frame t."""
    seq = synthetic_video(num_objects=1, seed=seed)
    grey = seq.frames.astype(np.float64).mean(axis=-1)
    corrs = []
    for t in range(len(grey) - 1):
        a, b = seq.labels[t] == 1, seq.labels[t + 1] == 1
        inner = ndi.binary_erosion(a, iterations=3)
        if inner.sum() < 150 or b.sum() < 150:
            continue
        shift = np.round(np.array(ndi.center_of_mass(b)) - np.array(ndi.center_of_mass(a))).astype(int)
        moved = np.roll(grey[t + 1], tuple(-shift), axis=(0, 1))
        corrs.append(np.corrcoef(grey[t][inner], moved[inner])[0, 1])
    assert len(corrs) >= 10
    assert np.median(corrs) > 0.6, corrs


def test_video_large_smoke() -> None:
    seq = synthetic_video(num_frames=3, height=240, width=427, num_objects=6, seed=11)
    assert seq.frames.shape == (3, 240, 427, 3) and seq.labels.max() == 6


# --------------------------------------------------------------------------- microscopy


def test_microscopy_shapes_and_intensities(cells: dict[int, SyntheticSequence]) -> None:
    seq = cells[0]
    assert seq.frames.shape == (24, 128, 128) and seq.frames.dtype == np.uint16
    assert seq.labels.shape == (24, 128, 128) and seq.labels.dtype == np.uint16
    assert set(np.unique(seq.labels[0]).tolist()) == set(range(7))
    for s in cells.values():
        assert int(s.labels.max()) == 6
        f0 = s.frames[0].astype(np.float64)
        bg = ~ndi.binary_dilation(s.labels[0] > 0, iterations=5)
        assert 60 < np.median(f0[bg]) < 350
        inner = ndi.binary_erosion(s.labels[0] > 0, iterations=2)
        assert 600 < np.median(f0[inner]) < 5000
        assert f0[inner].std() > 100  # internal texture (nucleus, granules)


def test_microscopy_deterministic(cells: dict[int, SyntheticSequence]) -> None:
    again = synthetic_microscopy(seed=0)
    np.testing.assert_array_equal(again.frames, cells[0].frames)
    np.testing.assert_array_equal(again.labels, cells[0].labels)
    assert again.divisions == cells[0].divisions
    assert not np.array_equal(cells[0].frames, cells[1].frames)


def test_microscopy_poisson_background() -> None:
    """Temporal variance ~ mean (+ small read noise) in cell-free background pixels."""
    seq = synthetic_microscopy(num_frames=64, num_cells=2, seed=7)
    free = ~ndi.binary_dilation((seq.labels > 0).any(axis=0), iterations=6)
    assert free.sum() > 3000
    stack = seq.frames.astype(np.float64)[:, free]
    mean, var = stack.mean(axis=0), stack.var(axis=0, ddof=1)
    ratio = var.mean() / mean.mean()
    assert 0.8 < ratio < 1.35, ratio
    # brighter background pixels are noisier (shot noise), and the offset is uneven
    lo, hi = np.percentile(mean, [10, 90])
    assert hi - lo > 15
    assert var[mean > hi].mean() > var[mean < lo].mean()


def test_microscopy_division() -> None:
    seq = synthetic_microscopy(seed=0)
    assert len(seq.divisions) >= 1
    frame, oid = seq.divisions[0]
    assert 1 <= frame < 24 and 1 <= oid <= 6
    n_before = ndi.label(seq.labels[frame - 1] == oid)[1]
    n_after = ndi.label(seq.labels[frame] == oid)[1]
    assert n_before == 1 and n_after >= 2, (n_before, n_after)
    # daughters keep the parent's id: ids stay within 1..6 and every id persists
    assert int(seq.labels.max()) == 6


def test_microscopy_divisions_common(cells: dict[int, SyntheticSequence]) -> None:
    assert sum(len(s.divisions) > 0 for s in cells.values()) >= 4
    for s in cells.values():
        for frame, oid in s.divisions:
            assert ndi.label(s.labels[frame] == oid)[1] >= 2


def test_microscopy_cells_stay_visible(cells: dict[int, SyntheticSequence]) -> None:
    for s in cells.values():
        for oid in range(1, 7):
            areas = _areas(s.labels, oid)
            assert (areas >= 0.6 * areas[0]).all(), (s.name, oid, areas)
        # cells stay inside the frame mostly: few labelled pixels on the border
        border = np.concatenate([s.labels[:, 0], s.labels[:, -1], s.labels[:, :, 0], s.labels[:, :, -1]], axis=1)
        assert (border > 0).mean() < 0.05


def test_microscopy_cells_move_and_wobble(cells: dict[int, SyntheticSequence]) -> None:
    s = cells[1]
    for oid in range(1, 7):
        a, b = s.labels[0] == oid, s.labels[-1] == oid
        if oid in {i for _, i in s.divisions}:
            continue
        travel = np.hypot(*(np.array(ndi.center_of_mass(b)) - np.array(ndi.center_of_mass(a))))
        assert travel > 1.0 or _aligned_iou(a, b) < 0.9


# --------------------------------------------------------------------------- writing


def test_save_davis_layout_video(tmp_path, videos: dict[int, SyntheticSequence]) -> None:
    seq = videos[0]
    out = save_davis_layout(seq, tmp_path)
    assert out == tmp_path / "JPEGImages" / "480p" / seq.name
    jpgs = sorted(out.glob("*.jpg"))
    pngs = sorted((tmp_path / "Annotations" / "480p" / seq.name).glob("*.png"))
    assert [p.name for p in jpgs] == [f"{k:05d}.jpg" for k in range(24)]
    assert [p.name for p in pngs] == [f"{k:05d}.png" for k in range(24)]
    img = np.asarray(Image.open(jpgs[5]))
    assert img.shape == (128, 160, 3)
    assert np.abs(img.astype(int) - seq.frames[5]).mean() < 4.0
    for k, p in enumerate(pngs):
        ann = Image.open(p)
        assert ann.mode == "P"
        np.testing.assert_array_equal(np.asarray(ann), seq.labels[k])
    pal = np.array(Image.open(pngs[0]).getpalette()[:12]).reshape(4, 3)
    assert pal.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]


def test_save_davis_layout_microscopy(tmp_path, cells: dict[int, SyntheticSequence]) -> None:
    seq = cells[0]
    out = save_davis_layout(seq, tmp_path)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 24 and not list(out.glob("*.jpg"))
    img = np.asarray(Image.open(pngs[0]))
    assert img.dtype == np.uint8 and img.shape == (128, 128)
    assert img.max() == 255 and img.min() == 0  # percentile-stretched
    inside = seq.labels[0] > 0
    assert img[inside].mean() > img[~inside].mean() + 50
    ann = np.asarray(Image.open(tmp_path / "Annotations" / "480p" / seq.name / "00023.png"))
    np.testing.assert_array_equal(ann, seq.labels[23])


def test_save_davis_layout_rejects_large_ids(tmp_path) -> None:
    labels = np.zeros((1, 4, 4), np.uint16)
    labels[0, 0, 0] = 300
    with pytest.raises(ValueError):
        save_davis_layout(SyntheticSequence("big", np.zeros((1, 4, 4, 3), np.uint8), labels), tmp_path)


@pytest.mark.parametrize("flavour", ["video", "cells"])
def test_save_tiff_round_trip(tmp_path, flavour: str, videos, cells) -> None:
    import tifffile

    seq = videos[0] if flavour == "video" else cells[0]
    save_tiff(seq, tmp_path / "sub" / "images.tif", tmp_path / "labels.tif")
    frames = tifffile.imread(tmp_path / "sub" / "images.tif")
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert frames.dtype == seq.frames.dtype and labels.dtype == np.uint16
    np.testing.assert_array_equal(frames, seq.frames)
    np.testing.assert_array_equal(labels, seq.labels)
