"""napari reader and writer contributions: DAVIS annotation folders and label TIFFs open as Labels
layers with their ids, frame folders as one image stack, photos are left to napari, and a Labels
layer saved as TIFF or DAVIS PNGs reads back the same."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_rgmp.file_io import get_reader
from rgmp_model.io.label_io import looks_like_label_image, write_palette_png

PLUGIN = "napari-rgmp"


def label_stack() -> np.ndarray:
    labels = np.zeros((4, 30, 40), np.uint8)
    for t in range(4):
        labels[t, 5:12, 3 + t : 10 + t] = 1
        labels[t, 15:25, 20:30] = 7  # DAVIS palette index 7
    return labels


def test_reader_opens_a_davis_annotation_folder_as_labels(make_napari_viewer, tmp_path) -> None:
    from napari.layers import Labels

    folder = tmp_path / "Annotations" / "480p" / "blackswan"
    folder.mkdir(parents=True)
    labels = label_stack()
    for t, frame in enumerate(labels):
        write_palette_png(folder / f"{t:05d}.png", frame)
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert len(layers) == 1 and isinstance(layers[0], Labels)
    np.testing.assert_array_equal(np.asarray(layers[0].data), labels)
    assert set(np.unique(layers[0].data)) == {0, 1, 7}


def test_reader_opens_a_label_tiff_as_labels_and_leaves_photos_alone(make_napari_viewer, tmp_path) -> None:
    from napari.layers import Labels

    labels = label_stack().astype(np.uint16) * 300  # ids above 255
    tifffile.imwrite(tmp_path / "result.tif", labels, photometric="minisblack")
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "result.tif"), plugin=PLUGIN)
    assert isinstance(layers[0], Labels)
    np.testing.assert_array_equal(np.asarray(layers[0].data), labels)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 4096, (3, 64, 64), dtype=np.uint16)  # a uint16 time-lapse
    tifffile.imwrite(tmp_path / "movie.tif", photo, photometric="minisblack")
    assert get_reader(str(tmp_path / "movie.tif")) is None
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    assert get_reader(str(tmp_path / "photo.png")) is None


def test_reader_opens_a_jpeg_frame_folder_as_one_image_stack(make_napari_viewer, tmp_path) -> None:
    from napari.layers import Image as ImageLayer

    folder = tmp_path / "JPEGImages" / "480p" / "clip"
    folder.mkdir(parents=True)
    for t in range(3):
        Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(folder / f"{t:05d}.jpg")
    viewer = make_napari_viewer()
    layers = viewer.open(str(folder), plugin=PLUGIN)
    assert len(layers) == 1 and isinstance(layers[0], ImageLayer) and layers[0].rgb
    assert layers[0].data.shape == (3, 24, 32, 3)


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_writer_round_trips_a_labels_layer(make_napari_viewer, tmp_path, suffix) -> None:
    viewer = make_napari_viewer()
    labels = label_stack()
    layer = viewer.add_labels(labels, name="cells")
    written = viewer.layers.save(str(tmp_path / f"cells{suffix}"), selected=False, plugin=PLUGIN)
    assert written
    reopened = viewer.open(written[0], plugin=PLUGIN)[0]
    np.testing.assert_array_equal(np.asarray(reopened.data), np.asarray(layer.data))
    if suffix == ".png":  # a folder of DAVIS palette PNGs
        assert sorted(p.name for p in (tmp_path / "cells").iterdir())[0] == "00000.png"
        with Image.open(tmp_path / "cells" / "00000.png") as image:
            assert image.mode == "P"


def test_label_likeness_rule() -> None:
    rng = np.random.default_rng(1)
    assert looks_like_label_image(label_stack()[0])
    assert not looks_like_label_image(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    assert not looks_like_label_image(rng.integers(100, 4000, (64, 64), dtype=np.uint16))
    assert not looks_like_label_image(rng.random((64, 64)))  # floats are never labels
    assert looks_like_label_image(rng.integers(0, 5000, (64, 64), dtype=np.uint16), "man_seg_mask.tif")
