"""Stage-1 static training pairs: image sources, deformations and the pair dataset (CPU, generated data)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from rgmp_model.inference.frames import FrameStack
from rgmp_model.io.label_io import davis_palette
from rgmp_model.adapt.pairs import StaticPairDataset
from training.still_sources import FolderSource, VideoStills, VOCSource
from training.video_sources import DavisSource, SyntheticVideoSource, TiffVideoSource
from tests.helpers.shapes import disc as _disc, iou as _iou  # noqa: F401


def davis_stills(root: Path, sequences=None, exclude=(), every: int = 1) -> VideoStills:
    """The stills of a DAVIS folder, as the pretrain stage builds them."""
    return VideoStills(DavisSource(root, sequences=sequences, exclude=exclude), every=every)


def tiff_stills(images: Path, labels: Path) -> VideoStills:
    """The stills of a TIFF image stack and its label stack: its labelled frames."""
    return VideoStills(TiffVideoSource([(images, labels)]))


def synthetic_stills(flavour: str, count: int = 8, size: tuple[int, int] = (64, 80), seed: int = 0) -> VideoStills:
    """``count`` one-frame synthetic sequences, as the pretrain stage builds them."""
    return VideoStills(SyntheticVideoSource(flavour, count=count, num_frames=1, size=size, seed=seed))


def _frame_names(stills: VideoStills) -> list[tuple[str, str]]:
    """(sequence, frame file name) of each still of a folder-based source."""
    return [(stills.source.names[s], stills.source.sequence(s).frames.files[t].name) for s, t in stills.items]

# Bounds derived from the default parameters (see the docstrings of rgmp_model.adapt.augment).
S_LO, S_HI, TPS_AREA = 0.8, 1.2, 1.25  # random_geometric_transform: scale range, spline area change
PREV_SCALE, PREV_AREA = 0.05, 1.5  # deform_previous_mask: per-axis scale, spline area change
RASTER = 0.04  # relative area error of rasterising the outline of a disc of radius >= 30 px


def _palette_png(path: Path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(davis_palette())
    im.save(path)




class ListSource:
    """In-memory source for the dataset tests."""

    def __init__(self, items: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.items[i]


def _disc_source(n: int = 4, size: int = 200, radius: float = 40.0,
                 colour: tuple[float, ...] = (0.9, 0.2, 0.1)) -> ListSource:
    rng = np.random.default_rng(5)
    items = []
    for _ in range(n):
        image = (0.2 + 0.5 * rng.random((size, size, 3))).astype(np.float32)
        disc = _disc((size, size), (size / 2, size / 2), radius)
        image[disc] = colour
        items.append((image, disc.astype(np.int32)))
    return ListSource(items)


# --------------------------------------------------------------------------- sources


def test_folder_source_reads_label_and_binary_masks(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "a.png")
    labels = np.zeros((20, 30), np.uint8)
    labels[2:8, 3:9], labels[10:18, 12:25] = 1, 7
    _palette_png(masks / "a.png", labels)
    grey16 = np.linspace(100, 5000, 20 * 30).reshape(20, 30).astype(np.uint16)
    tifffile.imwrite(images / "b.tif", grey16)
    binary = np.zeros((20, 30), np.uint8)
    binary[5:15, 5:15] = 255
    Image.fromarray(binary).save(masks / "b.png")
    smooth = np.stack([*np.meshgrid(np.linspace(0, 200, 30), np.linspace(50, 250, 20)), np.full((20, 30), 90.0)], -1)
    Image.fromarray(smooth.astype(np.uint8)).save(images / "c.jpg", quality=95)
    _palette_png(masks / "c.png", labels)

    source = FolderSource(images, masks)
    assert len(source) == 3
    image, lab = source[0]
    assert image.dtype == np.float32 and image.shape == (20, 30, 3) and lab.dtype == np.int32
    np.testing.assert_allclose(image, rgb / 255.0, atol=1e-6)
    np.testing.assert_array_equal(lab, labels)
    image, lab = source[1]  # uint16 grey -> [0, 1] by percentiles, three equal channels
    assert image.shape == (20, 30, 3) and 0.0 <= image.min() and image.max() <= 1.0
    assert image[0, 0, 0] == 0.0 and image[-1, -1, 0] == 1.0 and (image[..., 0] == image[..., 2]).all()
    assert set(np.unique(lab).tolist()) == {0, 1} and lab.sum() == 100  # 0/255 -> one object
    image, lab = source[2]
    assert np.abs(image - smooth / 255.0).mean() < 0.02 and set(np.unique(lab).tolist()) == {0, 1, 7}


def test_folder_source_unmatched_files_are_listed(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for stem in ("frame_a", "frame_b", "frame_c"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"{stem}.png")
    _palette_png(masks / "frame_a.png", np.ones((8, 8)))
    _palette_png(masks / "orphan.png", np.ones((8, 8)))
    with pytest.raises(ValueError, match="without a mask: frame_b, frame_c") as err:
        FolderSource(images, masks)
    assert "orphan" in str(err.value)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        FolderSource(tmp_path / "missing", masks)


def test_folder_source_is_lazy(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    (images / "x.png").write_bytes(b"not an image")
    (masks / "x.png").write_bytes(b"not an image")
    source = FolderSource(images, masks)  # only lists the files
    assert len(source) == 1
    with pytest.raises(ValueError, match="not an image file"):
        source[0]


def _voc(root: Path, with_list: bool) -> np.ndarray:
    for sub in ("JPEGImages", "SegmentationObject", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    labels = np.zeros((24, 32), np.uint8)
    labels[4:12, 4:12], labels[14:22, 16:30] = 1, 2
    labels[3, 3:13] = 255  # void border
    labels[13, 15:31] = 255
    for name in ("2007_000001", "2007_000002", "2008_000003"):
        Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        _palette_png(root / "SegmentationObject" / f"{name}.png", labels)
    if with_list:
        (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2008_000003\n")
    return labels


def test_voc_source_void_is_background_and_split_list(tmp_path: Path) -> None:
    labels = _voc(tmp_path / "VOC2012", with_list=True)
    source = VOCSource(tmp_path / "VOC2012")
    assert source.ids == ["2007_000001", "2008_000003"]
    image, lab = source[1]
    assert image.shape == (24, 32, 3) and lab.dtype == np.int32
    assert set(np.unique(lab).tolist()) == {0, 1, 2}  # 255 never counted as an object
    np.testing.assert_array_equal(lab, np.where(labels == 255, 0, labels))
    assert len(VOCSource(tmp_path / "VOC2012", split=None)) == 3  # every PNG without the list
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCSource(tmp_path)


def _davis(root: Path) -> None:
    for seq, frames, annotated in (("bear", 6, range(6)), ("car", 4, (0, 2)), ("dog", 3, range(3))):
        (root / "JPEGImages/480p" / seq).mkdir(parents=True)
        (root / "Annotations/480p" / seq).mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(np.full((16, 20, 3), 10 * t, np.uint8)).save(root / f"JPEGImages/480p/{seq}/{t:05d}.jpg")
        for t in annotated:
            mask = np.zeros((16, 20), np.uint8)
            mask[4:10, 5:12] = 255
            Image.fromarray(mask).save(root / f"Annotations/480p/{seq}/{t:05d}.png")


def test_davis_frames_source_selects_sequences(tmp_path: Path) -> None:
    _davis(tmp_path)
    everything = davis_stills(tmp_path)
    assert len(everything) == 6 + 2 + 3  # only annotated frames
    train = davis_stills(tmp_path, exclude=["dog"])
    assert len(train) == 8 and all(seq != "dog" for seq, _ in _frame_names(train))
    only = davis_stills(tmp_path, sequences=["car"])
    assert [name for _, name in _frame_names(only)] == ["00000.jpg", "00002.jpg"]
    assert len(davis_stills(tmp_path, sequences=["bear"], every=2)) == 3
    image, lab = only[1]
    assert image.shape == (16, 20, 3) and lab.dtype == np.int32 and lab.sum() == 6 * 7
    with pytest.raises(FileNotFoundError, match="zebra"):
        davis_stills(tmp_path, sequences=["zebra"])


def test_tiff_stack_source_uint16_and_labelled_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stack = rng.integers(200, 4000, (5, 24, 24)).astype(np.uint16)
    labels = np.zeros((5, 24, 24), np.uint16)
    labels[1, 5:15, 5:15] = 3
    labels[4, 2:6, 2:6] = 1
    tifffile.imwrite(tmp_path / "img.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    source = tiff_stills(tmp_path / "img.tif", tmp_path / "lab.tif")
    assert source.items == ((0, 1), (0, 4)) and len(source) == 2
    image, lab = source[0]
    assert image.dtype == np.float32 and image.shape == (24, 24, 3)
    assert image.min() == 0.0 and image.max() == 1.0 and (image[..., 0] == image[..., 1]).all()
    np.testing.assert_array_equal(image, FrameStack(stack)[1])  # the stack's percentiles, not the frame's
    np.testing.assert_array_equal(lab, labels[1].astype(np.int32))
    again = pickle.loads(pickle.dumps(source))  # for DataLoader workers
    np.testing.assert_array_equal(again[1][0], source[1][0])
    tifffile.imwrite(tmp_path / "short.tif", labels[:3], photometric="minisblack")
    with pytest.raises(ValueError, match="one label frame per image frame"):
        tiff_stills(tmp_path / "img.tif", tmp_path / "short.tif")


def test_tiff_stack_source_rgb(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    labels = np.ones((3, 16, 16), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "lab.tif", labels, photometric="minisblack")
    image, _ = tiff_stills(tmp_path / "rgb.tif", tmp_path / "lab.tif")[2]
    np.testing.assert_allclose(image, rgb[2] / 255.0, atol=1e-6)


@pytest.mark.parametrize("flavour", ["video", "microscopy"])
def test_synthetic_source(flavour: str) -> None:
    source = synthetic_stills(flavour, count=5, size=(64, 80), seed=3)
    image, lab = source[2]
    assert image.shape == (64, 80, 3) and image.dtype == np.float32 and lab.shape == (64, 80) and lab.dtype == np.int32
    assert 0.0 <= image.min() and image.max() <= 1.0 and lab.max() >= 1
    again, lab2 = synthetic_stills(flavour, count=5, size=(64, 80), seed=3)[2]
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(lab, lab2)
    assert not np.array_equal(image, source[3][0])
    assert not np.array_equal(image, synthetic_stills(flavour, count=5, size=(64, 80), seed=4)[2][0])
    with pytest.raises(ValueError, match="flavour"):
        synthetic_stills("photo")


# --------------------------------------------------------------------------- dataset


def test_dataset_item_shapes_dtypes_ranges() -> None:
    ds = StaticPairDataset([_disc_source(), synthetic_stills("video", 4, (64, 80))], crop_size=(96, 128), length=50)
    assert len(ds) == 50
    for k in range(8):
        item = ds[k]
        assert set(item) == {"reference_frame", "reference_mask", "frame", "mask", "previous_mask"}
        for key in ("reference_frame", "frame"):
            assert item[key].dtype == torch.float32 and item[key].shape == (3, 96, 128)
            assert 0.0 <= item[key].min() and item[key].max() <= 1.0
        for key in ("reference_mask", "mask", "previous_mask"):
            assert item[key].dtype == torch.float32 and item[key].shape == (96, 128)
            assert set(item[key].unique().tolist()) <= {0.0, 1.0}
        ref = item["reference_mask"].numpy() > 0
        rows, cols = np.flatnonzero(ref.any(1)), np.flatnonzero(ref.any(0))
        side = max((rows[-1] - rows[0] + 1) / 96, (cols[-1] - cols[0] + 1) / 128)
        assert 0.2 <= side <= 0.95, side  # the box's larger side: object_fraction (0.25..0.6), up to 0.9
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["frame"].shape == (3, 3, 96, 128)
    with pytest.raises(IndexError):
        ds[50]


def test_dataset_is_deterministic_per_seed_and_index() -> None:
    def make(seed: int) -> StaticPairDataset:
        return StaticPairDataset([_disc_source()], crop_size=(64, 64), seed=seed, paste_probability=0.5)

    ds = make(0)
    a, b, c = ds[3], make(0)[3], ds[4]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["frame"], c["frame"]) and not torch.equal(a["previous_mask"], c["previous_mask"])
    assert not torch.equal(a["frame"], make(1)[3]["frame"])
    ds[10]  # other items in between do not change item 3
    assert torch.equal(ds[3]["frame"], a["frame"])


def test_dataset_pair_plausibility() -> None:
    """Target / reference area within the transform's bounds for unclipped objects (most of them),
    previous / target area and IoU within deform_previous_mask's bounds."""
    ds = StaticPairDataset([_disc_source()], crop_size=(128, 128), length=200, box_probability=0.0,
                           paste_probability=0.0, object_fraction=(0.35, 0.5))
    unclipped, prev_ratio, ious = [], [], []
    for k in range(60):
        item = ds[k]
        ref, mask, prev = item["reference_mask"].numpy(), item["mask"].numpy(), item["previous_mask"].numpy()
        if not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()):
            unclipped.append(mask.sum() / ref.sum())
        prev_ratio.append(prev.sum() / mask.sum())
        ious.append(_iou(prev, mask))
    assert len(unclipped) >= 40
    assert S_LO**2 / TPS_AREA * (1 - RASTER) <= min(unclipped) <= max(unclipped) <= S_HI**2 * TPS_AREA * (1 + RASTER)
    assert 0.4 <= min(prev_ratio) and max(prev_ratio) <= 2.2
    assert 0.35 <= min(ious) and max(ious) <= 0.98 and 0.55 < np.mean(ious) < 0.92


def test_dataset_mask_matches_object_colour() -> None:
    """The object has a unique colour; without colour jitter the target mask is where that colour is."""
    colour = (0.95, 0.05, 0.95)
    source = _disc_source(colour=colour)
    ds = StaticPairDataset([source], crop_size=(96, 96), paste_probability=0.0)
    for k in range(5):
        item = ds[k]
        ref = item["reference_frame"].numpy().transpose(1, 2, 0)
        near = np.linalg.norm(ref - np.array(colour), axis=-1) < 0.1
        inside = item["reference_mask"].numpy() > 0
        assert (near & ~inside).sum() == 0 and (inside & ~near).sum() <= 0.1 * inside.sum()
        rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
        assert min(rows[0], cols[0]) >= 0.1 * 96 - 1 and max(rows[-1], cols[-1]) <= 0.9 * 96  # box kept inside


def test_dataset_source_weights_and_retries() -> None:
    red, blue = _disc_source(colour=(1.0, 0.0, 0.0)), _disc_source(colour=(0.0, 0.0, 1.0))
    empty = ListSource([(np.zeros((50, 50, 3), np.float32), np.zeros((50, 50), np.int32))] * 3)

    def colours(ds: StaticPairDataset) -> set[str]:
        found = set()
        for k in range(12):
            item = ds[k]
            ref = item["reference_frame"].numpy()[:, item["reference_mask"].numpy() > 0].mean(1)
            found.add("red" if ref[0] > ref[2] else "blue")
        return found

    assert colours(StaticPairDataset([red, blue], crop_size=(48, 48), paste_probability=0)) == {"red", "blue"}
    assert colours(StaticPairDataset([red, blue], crop_size=(48, 48), weights=(0, 1), paste_probability=0)) == {"blue"}
    assert colours(StaticPairDataset([empty, red], crop_size=(48, 48), paste_probability=0)) == {"red"}
    with pytest.raises(ValueError, match="min_object_pixels"):
        StaticPairDataset([empty], crop_size=(48, 48))[0]
    with pytest.raises(ValueError, match="weights"):
        StaticPairDataset([red], weights=(1, 1))
    with pytest.raises(ValueError, match="at least one"):
        StaticPairDataset([])
