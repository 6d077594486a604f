"""Tests for the stage-2 video clip data (training.video_clips): sources and the clip dataset."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rgmp_model.io.label_io import write_palette_png
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout, save_tiff
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
from training.video_clips import VideoClipDataset
from training.video_sources import (
    DavisSource,
    SyntheticVideoSource,
    TiffVideoSource,
    VideoSequence,
    YouTubeVOSSource,
    validation_sequences,
)


class Counting:
    """Array-like over a numpy stack that records the frame indices read."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, t: int) -> np.ndarray:
        assert isinstance(t, (int, np.integer)), f"whole-stack read {t!r}"
        self.reads.append(int(t))
        return self.data[t]


class ArraySource:
    """In-memory source: one sequence per (frames, labels, annotated) triple, read through Counting."""

    def __init__(self, *sequences: tuple[np.ndarray, np.ndarray, tuple[int, ...]]) -> None:
        self.seqs = [VideoSequence(f"s{i}", Counting(f), Counting(l), a) for i, (f, l, a) in enumerate(sequences)]
        self.names = tuple(s.name for s in self.seqs)

    def __len__(self) -> int:
        return len(self.seqs)

    def sequence(self, i: int) -> VideoSequence:
        return self.seqs[i]


def _index_sequence(num_frames: int = 24, size: tuple[int, int] = (40, 48)) -> tuple[np.ndarray, np.ndarray]:
    """Grey frames of constant value 10 * t (the frame index is readable anywhere) and one
    static object on every frame."""
    frames = (np.arange(num_frames, dtype=np.uint8) * 10)[:, None, None] * np.ones(size, np.uint8)
    labels = np.zeros((num_frames, *size), np.uint8)
    labels[:, 10:25, 12:30] = 1
    return frames, labels


def _decode(clip: torch.Tensor) -> list[int]:
    return [int(round(float(f.median()) * 255 / 10)) for f in clip]


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("davis")
    for seed, name in enumerate(["bear", "libby", "scooter-black"]):
        seq = synthetic_video(num_frames=8, height=48, width=64, num_objects=2 + seed, seed=seed)
        save_davis_layout(dataclasses.replace(seq, name=name), root)
    return root


# --------------------------------------------------------------------------- sources


def test_davis_source_lists_sequences_and_every_frame_is_annotated(davis_root: Path) -> None:
    source = DavisSource(davis_root)
    assert source.names == ("bear", "libby", "scooter-black")
    assert len(source) == 3
    seq = source.sequence(2)
    assert seq.name == "scooter-black"
    assert seq.annotated == tuple(range(8))
    assert seq.frames.shape == (8, 48, 64, 3) and seq.labels.shape == (8, 48, 64)
    expected = synthetic_video(num_frames=8, height=48, width=64, num_objects=4, seed=2).labels[5]
    np.testing.assert_array_equal(np.asarray(seq.labels[5]), expected)


def test_davis_source_excludes_validation_sequences(davis_root: Path, tmp_path: Path) -> None:
    source = DavisSource(davis_root, exclude=("libby", "scooter-black"))
    assert source.names == ("bear",)
    assert [s.name for s in validation_sequences(DavisSource(davis_root, sequences=["libby", "scooter-black"]))] == [
        "libby", "scooter-black"]
    assert DavisSource(davis_root, sequences=["scooter-black", "bear"], exclude=["scooter-black"]).names == ("bear",)
    with pytest.raises(ValueError, match="libbby"):
        DavisSource(davis_root, exclude=("libbby",))
    with pytest.raises(FileNotFoundError, match="cows"):
        DavisSource(davis_root, sequences=["cows"])
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        DavisSource(tmp_path)


def test_davis2016_binary_masks_are_one_object(tmp_path: Path) -> None:
    images = tmp_path / "JPEGImages" / "480p" / "blob"
    masks = tmp_path / "Annotations" / "480p" / "blob"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    for t in range(5):
        Image.fromarray(np.full((40, 50, 3), 30 * t, np.uint8)).save(images / f"{t:05d}.jpg")
        mask = np.zeros((40, 50), np.uint8)
        mask[5 + t : 25 + t, 10:30] = 255
        Image.fromarray(mask, mode="L").save(masks / f"{t:05d}.png")
    seq = DavisSource(tmp_path).sequence(0)
    assert sorted(np.unique(np.asarray(seq.labels[3])).tolist()) == [0, 1]
    data = VideoClipDataset(DavisSource(tmp_path), clip_length=3, crop_size=(32, 32), max_skip=1)
    item = data[0]
    assert int(item["num_objects"]) == 1
    assert item["object_valid"].tolist() == [True, False, False]
    assert set(item["labels"].unique().tolist()) == {0, 1}


def _youtube_layout(root: Path, frame_split: str, num_frames: int, every: int) -> None:
    """One sequence 'abc' with ``num_frames`` frames in ``frame_split`` and annotations (two
    objects) for every ``every``-th frame in train/Annotations."""
    images = root / frame_split / "JPEGImages" / "abc"
    masks = root / "train" / "Annotations" / "abc"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for t in range(num_frames):
        Image.fromarray(np.full((36, 44, 3), 5 * t, np.uint8)).save(images / f"{t * (5 // every):05d}.jpg")
        if t % every == 0:
            lab = np.zeros((36, 44), np.uint8)
            lab[2:20, 2:20], lab[20:34, 25:40] = 1, 2
            write_palette_png(masks / f"{t * (5 // every):05d}.png", lab)


def test_youtube_vos_every_fifth_frame_annotated(tmp_path: Path) -> None:
    _youtube_layout(tmp_path, "train_all_frames", num_frames=22, every=5)
    source = YouTubeVOSSource(tmp_path, images_split_dir="train_all_frames")
    assert source.names == ("abc",)
    seq = source.sequence(0)
    assert len(seq.frames) == 22
    assert seq.annotated == (0, 5, 10, 15, 20)
    assert not np.asarray(seq.labels[3]).any()
    assert sorted(np.unique(np.asarray(seq.labels[10])).tolist()) == [0, 1, 2]
    data = VideoClipDataset(source, clip_length=3, crop_size=(32, 32), max_skip=2, colour_jitter=0.0)
    for k in range(10):
        used = data.sample(k).frame_indices
        assert set(used) <= {0, 5, 10, 15, 20}, used


def test_youtube_vos_split_folder_as_root_and_exclude(tmp_path: Path) -> None:
    _youtube_layout(tmp_path, "train", num_frames=4, every=1)  # train/: every 5th frame, all annotated
    (tmp_path / "train" / "JPEGImages" / "zzz").mkdir()
    (tmp_path / "train" / "Annotations" / "zzz").mkdir()
    Image.fromarray(np.zeros((36, 44, 3), np.uint8)).save(tmp_path / "train" / "JPEGImages" / "zzz" / "00000.jpg")
    write_palette_png(tmp_path / "train" / "Annotations" / "zzz" / "00000.png", np.ones((36, 44), np.uint8))
    assert YouTubeVOSSource(tmp_path).names == ("abc", "zzz")
    source = YouTubeVOSSource(tmp_path / "train", exclude=["zzz"])
    assert source.names == ("abc",)
    seq = source.sequence(0)
    assert [f.name for f in seq.frames.files] == ["00000.jpg", "00005.jpg", "00010.jpg", "00015.jpg"]
    assert seq.annotated == (0, 1, 2, 3)


def test_tiff_source_annotated_frames_are_the_labelled_ones(tmp_path: Path) -> None:
    cells = synthetic_microscopy(num_frames=6, height=40, width=48, num_cells=3, seed=1)
    labels = np.zeros_like(cells.labels)
    labels[[1, 4]] = cells.labels[[1, 4]]
    save_tiff(dataclasses.replace(cells, labels=labels), tmp_path / "cells.tif", tmp_path / "cells_labels.tif")
    rgb = synthetic_video(num_frames=5, height=40, width=48, num_objects=2, seed=3)
    save_tiff(rgb, tmp_path / "rgb.tif", tmp_path / "rgb_labels.tif")
    pairs = [(tmp_path / "cells.tif", tmp_path / "cells_labels.tif"), (tmp_path / "rgb.tif", tmp_path / "rgb_labels.tif")]
    source = TiffVideoSource(pairs)
    assert source.names == ("cells", "rgb")
    seq = source.sequence(0)
    assert seq.annotated == (1, 4)
    assert seq.frames.dtype == np.uint16 and seq.frames.shape == (6, 40, 48)
    assert source.sequence(1).annotated == tuple(range(5))
    assert source.sequence(1).frames.shape == (5, 40, 48, 3)
    assert TiffVideoSource(pairs[:1], all_annotated=True).sequence(0).annotated == tuple(range(6))
    assert TiffVideoSource(pairs, exclude=["cells"]).names == ("rgb",)
    data = VideoClipDataset(TiffVideoSource(pairs[:1]), clip_length=2, crop_size=(32, 32), min_object_pixels=4)
    for k in range(6):
        clip = data.sample(k)
        assert sorted(clip.frame_indices) == [1, 4]
        assert clip.frames.shape == (2, 3, 32, 32) and 0 <= float(clip.frames.min()) <= float(clip.frames.max()) <= 1
    with pytest.raises(FileNotFoundError, match="missing.tif"):
        TiffVideoSource([(tmp_path / "missing.tif", tmp_path / "cells_labels.tif")])


def test_synthetic_source_is_deterministic_per_seed_and_index() -> None:
    a = SyntheticVideoSource("video", count=3, num_frames=5, size=(32, 40), seed=7)
    b = SyntheticVideoSource("video", count=3, num_frames=5, size=(32, 40), seed=7, cache_size=1)
    assert len(a) == 3 and len(a.names) == 3
    np.testing.assert_array_equal(a.sequence(1).frames, b.sequence(1).frames)
    np.testing.assert_array_equal(a.sequence(1).labels, b.sequence(1).labels)
    assert not np.array_equal(a.sequence(0).frames, a.sequence(1).frames)
    assert a.sequence(2).annotated == tuple(range(5))
    micro = SyntheticVideoSource("microscopy", count=2, num_frames=4, size=(32, 32))
    assert micro.sequence(0).frames.dtype == np.uint16
    with pytest.raises(ValueError, match="flavour"):
        SyntheticVideoSource("cartoon")


# --------------------------------------------------------------------------- clips


def test_clip_shapes_dtypes_and_ranges(davis_root: Path) -> None:
    data = VideoClipDataset(DavisSource(davis_root), clip_length=4, crop_size=(32, 40), max_objects=3, length=50,
                            min_object_pixels=8)
    assert len(data) == 50
    for k in range(8):
        item = data[k]
        assert set(item) == {"frames", "labels", "object_valid", "num_objects"}
        assert item["frames"].shape == (4, 3, 32, 40) and item["frames"].dtype == torch.float32
        assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
        assert item["labels"].shape == (4, 32, 40) and item["labels"].dtype == torch.int64
        assert item["object_valid"].shape == (3,) and item["object_valid"].dtype == torch.bool
        assert item["num_objects"].shape == () and item["num_objects"].dtype == torch.int64
        num = int(item["num_objects"])
        assert 1 <= num <= 3
        assert item["object_valid"].tolist() == [True] * num + [False] * (3 - num)
        assert int(item["labels"].max()) <= num and int(item["labels"].min()) >= 0
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert batch["frames"].shape == (2, 4, 3, 32, 40) and batch["num_objects"].shape == (2,)


def test_items_depend_only_on_seed_and_index(davis_root: Path) -> None:
    kwargs = dict(clip_length=3, crop_size=(32, 32), seed=3)
    a, b = VideoClipDataset(DavisSource(davis_root), **kwargs), VideoClipDataset(DavisSource(davis_root), **kwargs)
    for _ in range(2):  # b sees the items in another order (and with warm caches the second time)
        for k in (5, 0, 9):
            x, y = a[k], b[k]
            for key in x:
                assert torch.equal(x[key], y[key]), key
    restored = pickle.loads(pickle.dumps(a))
    assert torch.equal(restored[9]["frames"], a[9]["frames"])
    assert not torch.equal(a[5]["frames"], a[6]["frames"])
    other_seed = VideoClipDataset(DavisSource(davis_root), **{**kwargs, "seed": 4})
    assert not torch.equal(other_seed[5]["frames"], a[5]["frames"])


def test_frames_in_temporal_order_with_skips_over_annotated_frames() -> None:
    frames, labels = _index_sequence(24)
    annotated = tuple(range(0, 24, 2))  # every other frame has ground truth
    data = VideoClipDataset(ArraySource((frames, labels, annotated)), clip_length=4, crop_size=(32, 32), max_skip=3,
                            colour_jitter=0.0)
    directions = set()
    for k in range(60):
        clip = data.sample(k)
        used = _decode(clip.frames)
        assert used == list(clip.frame_indices)
        positions = [annotated.index(t) for t in used]
        steps = np.diff(positions)
        assert np.all(np.abs(steps) >= 1) and np.all(np.abs(steps) <= 3), used
        assert len(set(np.sign(steps))) == 1, used
        directions.add(int(np.sign(steps[0])))
    assert directions == {-1, 1}
    forward = VideoClipDataset(ArraySource((frames, labels, annotated)), clip_length=4, crop_size=(32, 32),
                               colour_jitter=0.0, reverse=False)
    assert all(np.all(np.diff(_decode(forward[k]["frames"])) > 0) for k in range(20))


def test_skips_shrink_near_the_end_and_short_sequences_repeat_the_last_frame() -> None:
    frames, labels = _index_sequence(6)
    data = VideoClipDataset(ArraySource((frames, labels, tuple(range(6)))), clip_length=6, crop_size=(32, 32),
                            max_skip=3, colour_jitter=0.0, reverse=False)
    assert _decode(data[0]["frames"]) == [0, 1, 2, 3, 4, 5]
    short = VideoClipDataset(ArraySource((frames, labels, (1, 3))), clip_length=4, crop_size=(32, 32),
                             colour_jitter=0.0, reverse=False)
    assert _decode(short[0]["frames"]) == [1, 3, 3, 3]


def test_start_frame_has_an_object() -> None:
    frames, labels = _index_sequence(20)
    labels[:12] = 0  # objects only from frame 12 on
    data = VideoClipDataset(ArraySource((frames, labels, tuple(range(20)))), clip_length=3, crop_size=(32, 32),
                            max_skip=2, colour_jitter=0.0)
    for k in range(20):
        clip = data.sample(k)
        assert clip.frame_indices[0] >= 12
        assert (clip.labels[0] == 1).any()


def test_objects_subset_renumbered_and_aligned_with_the_frames() -> None:
    size, ids = (64, 80), (3, 5, 6, 9, 11)
    frames = np.zeros((8, *size), np.uint8)
    labels = np.zeros((8, *size), np.uint16)
    for j, oid in enumerate(ids):  # static rectangles; the frame value inside is 20 * id
        labels[:, 8 + 10 * j : 16 + 10 * j, 5 + 12 * j : 20 + 12 * j] = oid
    labels[:, 60:62, 70:72] = 12  # 4 pixels: below min_object_pixels
    frames[:] = np.where(labels > 0, 20 * labels, 0).astype(np.uint8)
    data = VideoClipDataset(ArraySource((frames, labels, tuple(range(8)))), clip_length=3, crop_size=size,
                            max_objects=3, min_object_pixels=32, scale_range=(1.0, 1.0), colour_jitter=0.0)
    chosen_sets, flips = set(), set()
    for k in range(25):
        clip = data.sample(k)
        assert int(clip.num_objects) == 3 and len(clip.object_ids) == 3
        assert set(clip.object_ids) <= set(ids)
        chosen_sets.add(tuple(sorted(clip.object_ids)))
        assert set(clip.labels.unique().tolist()) <= {0, 1, 2, 3}
        for new, oid in enumerate(clip.object_ids, 1):
            mask = clip.labels[0] == new
            assert mask.sum() > 0, (k, oid)
        values = np.round(clip.frames[:, 0].numpy() * 255)
        for new, oid in enumerate(clip.object_ids, 1):
            assert set(values[clip.labels.numpy() == new].tolist()) == {20 * oid}
        for oid in [i for i in ids if i not in clip.object_ids] + [12]:  # the others are background
            assert (values == 20 * oid).sum() == (labels[0] == oid).sum() * 3
            assert not clip.labels[torch.from_numpy(values == 20 * oid)].any()
        flips.add(clip.flipped)
    assert len(chosen_sets) > 3 and flips == {False, True}


def test_labels_stay_aligned_with_the_frames_through_resize_and_flip() -> None:
    yy, xx = np.mgrid[0:90, 0:120]
    labels = np.zeros((6, 90, 120), np.uint8)
    for t in range(6):  # a moving ellipse, drawn white on black
        labels[t][((yy - 40 - 3 * t) / 25.0) ** 2 + ((xx - 50 - 4 * t) / 35.0) ** 2 <= 1] = 1
    frames = labels * np.uint8(255)
    data = VideoClipDataset(ArraySource((frames, labels, tuple(range(6)))), clip_length=3, crop_size=(48, 64),
                            colour_jitter=0.0)
    for k in range(12):
        clip = data.sample(k)
        bright, mask = clip.frames[:, 0] > 0.5, clip.labels == 1
        iou = float((bright & mask).sum() / (bright | mask).sum())
        assert iou > 0.97, (k, iou)


def test_one_crop_for_the_whole_clip() -> None:
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    frames = np.repeat(texture[None], 10, axis=0)
    labels = np.zeros((10, 70, 90), np.uint8)
    labels[:, 20:50, 30:70] = 1
    data = VideoClipDataset(ArraySource((frames, labels, tuple(range(10)))), clip_length=4, crop_size=(40, 40),
                            colour_jitter=0.1)
    firsts = []
    for k in range(8):
        item = data[k]
        for t in range(1, 4):
            assert torch.equal(item["frames"][t], item["frames"][0])
            assert torch.equal(item["labels"][t], item["labels"][0])
        firsts.append(item["frames"][0])
    assert all(not torch.equal(firsts[i], firsts[j]) for i in range(8) for j in range(i))


def test_small_images_are_padded_with_zeros() -> None:
    frames = np.full((5, 20, 24, 3), 200, np.uint8)
    labels = np.zeros((5, 20, 24), np.uint8)
    labels[:, 5:15, 6:18] = 2
    data = VideoClipDataset(ArraySource((frames, labels, tuple(range(5)))), clip_length=2, crop_size=(32, 32),
                            scale_range=(1.0, 1.0), colour_jitter=0.2)
    item = data[0]
    assert item["frames"].shape == (2, 3, 32, 32)
    padded = item["frames"][0].sum(0) == 0
    assert 32 * 32 - 20 * 24 <= int(padded.sum()) < 32 * 32 - 10 * 10
    assert not item["labels"][0][padded].any()
    assert int((item["labels"][0] == 1).sum()) == 10 * 12


def test_only_the_clip_frames_are_read() -> None:
    frames, labels = _index_sequence(30)
    source = ArraySource((frames, labels, tuple(range(30))), (frames[:12], labels[:12], tuple(range(12))))
    data = VideoClipDataset(source, clip_length=4, crop_size=(32, 32), colour_jitter=0.0)
    for k in range(10):
        for seq in source.seqs:
            seq.frames.reads.clear()
            seq.labels.reads.clear()
        clip = data.sample(k)
        seq = source.seqs[source.names.index(clip.sequence)]
        assert sorted(seq.frames.reads) == sorted(set(clip.frame_indices))
        assert sorted(seq.labels.reads) == sorted(set(clip.frame_indices))
        other = source.seqs[1 - source.names.index(clip.sequence)]
        assert other.frames.reads == [] and other.labels.reads == []


def test_invalid_arguments_raise_value_error(davis_root: Path) -> None:
    source = DavisSource(davis_root)
    with pytest.raises(ValueError, match="clip_length"):
        VideoClipDataset(source, clip_length=1)
    with pytest.raises(ValueError, match="source_weights"):
        VideoClipDataset([source], source_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="sources"):
        VideoClipDataset([])
    empty = np.zeros((6, 40, 48), np.uint8)
    with pytest.raises(ValueError, match="min_object_pixels"):
        VideoClipDataset(ArraySource((empty, empty, tuple(range(6)))), crop_size=(32, 32))[0]
