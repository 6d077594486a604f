"""rgmp_model.io.stack_io: lazy image stacks (frame folders, TIFF, compressed TIFF, zarr)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rgmp_model.io.label_io import open_label_stack, read_label_image
from rgmp_model.io.stack_io import (
    FrameFolder,
    TiffFrames,
    natural_sort_key,
    open_image_stack,
    read_image,
)

from tests.helpers.io_fixtures import RNG, grey_frames as _grey_frames, palette_png as _palette_png  # noqa: F401

# ----------------------------------------------------------------------------- FrameFolder


def test_natural_sort_key_orders_digit_runs_by_value() -> None:
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.png", "a.png"]
    assert sorted(names, key=natural_sort_key) == ["a.png", "frame1.png", "frame2.png", "Frame3.png", "frame10.png"]


def test_frame_folder_files_in_natural_order_skipping_hidden_and_other_files(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        Image.fromarray(np.full((4, 5), i, np.uint8)).save(tmp_path / f"frame{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._frame1.png").write_bytes(b"macOS resource fork")
    (tmp_path / "sub.png").mkdir()
    ff = FrameFolder(tmp_path)
    assert [f.name for f in ff.files] == ["frame1.png", "frame2.png", "frame10.png"]
    assert [int(ff[i][0, 0]) for i in range(3)] == [1, 2, 10]


def test_frame_folder_shape_dtype_and_indexing(tmp_path: Path) -> None:
    frames = _grey_frames(tmp_path, count=5)
    ff = FrameFolder(tmp_path)
    assert ff.shape == (5, 6, 8) and ff.dtype == np.uint8 and ff.ndim == 3 and len(ff) == 5
    assert isinstance(ff.files, tuple) and all(isinstance(f, Path) for f in ff.files)
    np.testing.assert_array_equal(ff[0], frames[0])
    np.testing.assert_array_equal(ff[np.int64(3)], frames[3])
    np.testing.assert_array_equal(ff[-1], frames[4])
    np.testing.assert_array_equal(ff[1:4], frames[1:4])
    np.testing.assert_array_equal(ff[::2], frames[::2])
    np.testing.assert_array_equal(ff[[4, 0]], frames[[4, 0]])
    np.testing.assert_array_equal(ff[2, 1:3, ::2], frames[2, 1:3, ::2])
    np.testing.assert_array_equal(ff[1:3, 0], frames[1:3, 0])
    np.testing.assert_array_equal(np.asarray(ff), frames)
    assert ff[5:].shape == (0, 6, 8)
    with pytest.raises(IndexError):
        ff[5]


def test_frame_folder_reads_only_the_files_asked_for(tmp_path: Path) -> None:
    frames = _grey_frames(tmp_path, count=6)
    calls: list[str] = []

    def reader(path: Path) -> np.ndarray:
        calls.append(path.name)
        return read_image(path)

    ff = FrameFolder(tmp_path, reader=reader)
    assert calls == ["00000.png"]  # shape and dtype from the first file only
    calls.clear()
    np.testing.assert_array_equal(ff[4], frames[4])
    assert calls == ["00004.png"]
    calls.clear()
    ff[2:4]
    assert calls == ["00002.png", "00003.png"]


def test_open_image_stack_davis_jpeg_folder(tmp_path: Path) -> None:
    seq = tmp_path / "JPEGImages" / "480p" / "bear"
    seq.mkdir(parents=True)
    for i in range(12):
        rgb = RNG.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(seq / f"{i:05d}.jpg", quality=90)
    stack = open_image_stack(seq)
    assert isinstance(stack, FrameFolder)
    assert stack.shape == (12, 16, 24, 3) and stack.dtype == np.uint8
    assert [f.name for f in stack.files][:3] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    expected = np.array(Image.open(seq / "00011.jpg"))  # JPEG is lossy: compare with the decoded file
    np.testing.assert_array_equal(stack[11], expected)
    with pytest.raises(ValueError, match=r"JPEGImages/480p/<sequence>"):
        open_image_stack(tmp_path)  # the DAVIS root itself has no frames


def test_open_image_stack_uint16_tiff_is_memmapped(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, size=(7, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", data)
    stack = open_image_stack(tmp_path / "stack.tif")
    assert isinstance(stack, np.memmap)
    assert stack.shape == (7, 20, 30) and stack.dtype == np.uint16
    np.testing.assert_array_equal(stack[3], data[3])
    np.testing.assert_array_equal(stack, data)


def test_open_image_stack_imagej_hyperstack_with_singleton_axis(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, size=(5, 1, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "TCYX"})
    stack = open_image_stack(tmp_path / "hyper.tif")
    assert isinstance(stack, np.memmap)
    assert stack.shape == (5, 20, 30)
    np.testing.assert_array_equal(stack, data[:, 0])


def test_open_image_stack_multichannel_hyperstack_puts_channels_last(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, size=(4, 2, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "tc.tif", data, imagej=True, metadata={"axes": "TCYX"})
    stack = open_image_stack(tmp_path / "tc.tif")
    assert stack.shape == (4, 20, 30, 2)
    np.testing.assert_array_equal(stack, np.moveaxis(data, 1, -1))


def test_open_image_stack_compressed_tiff_reads_one_page_per_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = RNG.integers(0, 65536, size=(6, 20, 30), dtype=np.uint16)
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, data, compression="zlib")
    stack = open_image_stack(path)
    assert isinstance(stack, TiffFrames)
    assert stack.shape == (6, 20, 30) and stack.dtype == np.uint16
    decoded = []
    original = tifffile.TiffPage.asarray

    def counting(page, *args, **kwargs):  # type: ignore[no-untyped-def]
        decoded.append(page.index)
        return original(page, *args, **kwargs)

    monkeypatch.setattr(tifffile.TiffPage, "asarray", counting)
    np.testing.assert_array_equal(stack[4], data[4])
    assert len(decoded) == 1
    monkeypatch.undo()
    np.testing.assert_array_equal(stack[:], tifffile.imread(path))
    clone = pickle.loads(pickle.dumps(stack))  # e.g. for dask workers
    np.testing.assert_array_equal(clone[2], data[2])
    stack.close()
    clone.close()


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_open_image_stack_rgb_tiff_stack(tmp_path: Path, compression: str | None) -> None:
    data = RNG.integers(0, 256, size=(5, 12, 14, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb", compression=compression)
    stack = open_image_stack(tmp_path / "rgb.tif")
    assert stack.shape == (5, 12, 14, 3) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack[2], data[2])
    np.testing.assert_array_equal(stack[:], data)
    if isinstance(stack, TiffFrames):
        stack.close()


def test_open_image_stack_single_png_has_one_frame(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "one.png")
    stack = open_image_stack(tmp_path / "one.png")
    assert stack.shape == (1, 9, 11, 3)
    np.testing.assert_array_equal(stack[0], rgb)


def test_open_image_stack_2d_tiff_has_one_frame(tmp_path: Path) -> None:
    data = RNG.integers(0, 65536, size=(10, 12), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "one.tif", data)
    stack = open_image_stack(tmp_path / "one.tif")
    assert stack.shape == (1, 10, 12)
    np.testing.assert_array_equal(stack[0], data)


def test_open_image_stack_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="contains no image files"):
        open_image_stack(tmp_path)


@pytest.mark.parametrize(
    "func", [open_image_stack, open_label_stack, read_label_image, read_image, FrameFolder]
)
def test_missing_path_raises_file_not_found(tmp_path: Path, func) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        func(tmp_path / "nope.tif")


def test_not_an_image_raises_value_error(tmp_path: Path) -> None:
    (tmp_path / "fake.png").write_text("not a png")
    (tmp_path / "fake.tif").write_text("not a tiff")
    with pytest.raises(ValueError, match="fake.png"):
        open_image_stack(tmp_path / "fake.png")
    with pytest.raises(ValueError, match="fake.tif"):
        open_image_stack(tmp_path / "fake.tif")


# ----------------------------------------------------------------------------- label images


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd"])
def test_compressed_tiff_input_equals_the_uncompressed_one(tmp_path: Path, compression: str) -> None:
    """LZW (Fiji, Cell Tracking Challenge), deflate and zstd stacks read like the uncompressed
    file, frame by frame, for images (uint16 time-lapse, RGB) and label stacks."""
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 4000, (6, 40, 56), dtype=np.uint16)
    rgb = rng.integers(0, 256, (4, 32, 48, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, (6, 40, 56)).astype(np.uint16)
    for name, data, kwargs in (("grey", grey, {}), ("rgb", rgb, {"photometric": "rgb"}), ("labels", labels, {})):
        plain, packed = tmp_path / f"{name}.tif", tmp_path / f"{name}-{compression}.tif"
        tifffile.imwrite(plain, data, **kwargs)
        tifffile.imwrite(packed, data, compression=compression, **kwargs)
        opener = open_label_stack if name == "labels" else open_image_stack
        a, b = opener(plain), opener(packed)
        assert a.shape == b.shape == data.shape and a.dtype == b.dtype
        for t in range(len(data)):
            assert np.array_equal(np.asarray(b[t]), np.asarray(a[t])), (name, t)


def test_zarr_arrays_and_ome_zarr_groups_open_lazily(tmp_path: Path) -> None:
    import zarr

    rng = np.random.default_rng(5)
    movie = rng.integers(0, 4000, (5, 24, 32), dtype=np.uint16)
    array = zarr.create_array(str(tmp_path / "movie.zarr"), shape=movie.shape, chunks=(1, 24, 32), dtype="uint16")
    array[:] = movie
    stack = open_image_stack(tmp_path / "movie.zarr")
    assert stack.shape == movie.shape and stack.dtype == np.uint16
    np.testing.assert_array_equal(stack[3], movie[3])
    ome = rng.integers(0, 999, (4, 1, 1, 24, 32), dtype=np.uint16)  # OME-Zarr t, c, z, y, x
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.attrs["multiscales"] = [{"axes": [{"name": n} for n in "tczyx"], "datasets": [{"path": "0"}]}]
    group.create_array("0", shape=ome.shape, dtype="uint16")[:] = ome
    stack = open_image_stack(tmp_path / "ome.zarr")
    assert stack.shape == (4, 24, 32)
    np.testing.assert_array_equal(np.asarray(stack), ome[:, 0, 0])
