"""rgmp_model.io.label_io: label images, label stacks and label outputs (TIFF, PNG folders, zarr)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rgmp_model.io.label_io import (
    LabelStackWriter,
    davis_palette,
    frame_names,
    open_label_stack,
    read_label_image,
    write_palette_png,
)
from rgmp_model.io.stack_io import FrameFolder, open_image_stack, read_image

from tests.helpers.io_fixtures import RNG, grey_frames as _grey_frames, palette_png as _palette_png  # noqa: F401

# ----------------------------------------------------------------------------- label files


def test_frame_folder_mismatched_frame_names_the_file(tmp_path: Path) -> None:
    _grey_frames(tmp_path, count=3)
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(tmp_path / "00001.png")  # wrong width
    Image.fromarray(np.zeros((6, 8), np.uint16)).save(tmp_path / "00002.png")  # wrong dtype
    ff = FrameFolder(tmp_path)
    np.testing.assert_array_equal(ff[0].shape, (6, 8))
    with pytest.raises(ValueError, match=r"00001\.png"):
        ff[1]
    with pytest.raises(ValueError, match=r"00002\.png.*uint16"):
        ff[2]




def test_read_label_image_palette_png_gives_indices(tmp_path: Path) -> None:
    ids = RNG.integers(0, 20, size=(10, 12)).astype(np.uint8)
    palette = RNG.integers(0, 256, size=768).tolist()  # another tool's palette: colours do not matter
    _palette_png(tmp_path / "p.png", ids, palette)
    labels = read_label_image(tmp_path / "p.png")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, ids)


def test_read_label_image_binary_grey_mask_becomes_0_1(tmp_path: Path) -> None:
    mask = RNG.integers(0, 2, size=(10, 12)).astype(bool)
    Image.fromarray((mask * 255).astype(np.uint8)).save(tmp_path / "m.png")
    labels = read_label_image(tmp_path / "m.png")
    np.testing.assert_array_equal(labels, mask.astype(np.uint8))
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "m01.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "m01.png"), mask.astype(np.uint8))
    grey = np.array([[0, 3], [255, 7]], np.uint8)  # not binary: values kept
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "g.png"), grey)


def test_read_label_image_16bit_grey_png_keeps_ids_above_255(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 256], [300, 1000, 65535]], np.uint16)
    Image.fromarray(ids).save(tmp_path / "g16.png")
    labels = read_label_image(tmp_path / "g16.png")
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, ids)


def test_read_label_image_rgb_davis_colours_and_unknown_colours(tmp_path: Path) -> None:
    pal = np.array(davis_palette(), np.uint8).reshape(256, 3)
    ids = np.array([[0, 1, 1, 2], [3, 0, 9, 9]])
    rgb = pal[ids]
    rgb[0, 0] = (10, 20, 30)  # unknown colour, first in raster order
    rgb[1, 1] = (200, 201, 202)  # second unknown colour
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    labels = read_label_image(tmp_path / "rgb.png")
    expected = np.array([[10, 1, 1, 2], [3, 11, 9, 9]])  # unknown colours: 10, 11 after the largest id 9
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.uint8
    rgba = np.dstack([pal[ids], np.full(ids.shape, 255, np.uint8)])
    rgba[0, 1, 3] = 0  # transparent -> background
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "rgba.png"), [[0, 0, 1, 2], [3, 0, 9, 9]])


def test_read_label_image_rgb_with_equal_channels_is_grey(tmp_path: Path) -> None:
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    Image.fromarray(np.dstack([mask] * 3)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_label_image(tmp_path / "grey_rgb.png"), [[0, 1], [1, 0]])


def test_read_label_image_tiffs(tmp_path: Path) -> None:
    ids = np.array([[0, 255], [7, 2**31 - 1]], np.int32)
    tifffile.imwrite(tmp_path / "l.tif", ids)
    labels = read_label_image(tmp_path / "l.tif")
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, ids)
    tifffile.imwrite(tmp_path / "f.tif", ids.astype(np.float32))
    with pytest.raises(ValueError, match="labels must be integers"):
        read_label_image(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "c5.tif", np.zeros((5, 6, 5), np.uint16), photometric="minisblack", planarconfig="contig")
    with pytest.raises(ValueError, match="not a palette/label image"):
        read_label_image(tmp_path / "c5.tif")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 6, 7), np.uint16), photometric="minisblack")
    with pytest.raises(ValueError, match="holds 3 frames"):
        read_label_image(tmp_path / "stack.tif")


def test_open_label_stack_folder_of_palette_pngs(tmp_path: Path) -> None:
    ids = RNG.integers(0, 5, size=(4, 8, 10)).astype(np.uint8)
    for i, frame in enumerate(ids):
        _palette_png(tmp_path / f"{i:05d}.png", frame, davis_palette())
    stack = open_label_stack(tmp_path)
    assert isinstance(stack, FrameFolder)
    assert stack.shape == (4, 8, 10) and stack.dtype == np.uint8
    np.testing.assert_array_equal(stack[2], ids[2])
    np.testing.assert_array_equal(stack[:], ids)


def test_open_label_stack_uint64_tiff_with_large_ids(tmp_path: Path) -> None:
    ids = np.zeros((3, 8, 10), np.uint64)
    ids[0, 1, 1], ids[1, 2:4, 3:5], ids[2, -1, -1] = 7, 300, 2**40
    tifffile.imwrite(tmp_path / "l.tif", ids, photometric="minisblack")
    stack = open_label_stack(tmp_path / "l.tif")
    assert isinstance(stack, np.memmap)
    assert stack.shape == (3, 8, 10) and stack.dtype == np.uint64
    np.testing.assert_array_equal(stack[:], ids)
    assert int(stack[2, -1, -1]) == 2**40


def test_open_label_stack_three_frames_stored_as_planar_rgb(tmp_path: Path) -> None:
    # tifffile.imwrite(path, (3,H,W) array) without photometric stores a planar RGB image
    ids = RNG.integers(0, 1000, size=(3, 8, 10)).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(tmp_path / "l3.tif", ids)
    with tifffile.TiffFile(tmp_path / "l3.tif") as tif:
        assert tif.series[0].axes == "SYX"  # the ambiguous case this test is about
    stack = open_label_stack(tmp_path / "l3.tif")
    assert stack.shape == (3, 8, 10)
    np.testing.assert_array_equal(stack[:], ids)
    with pytest.raises(ValueError, match="holds 3 frames"):
        read_label_image(tmp_path / "l3.tif")


def test_open_label_stack_2d_tiff_single_image_and_float_error(tmp_path: Path) -> None:
    ids = np.array([[0, 1], [2, 3]], np.uint16)
    tifffile.imwrite(tmp_path / "one.tif", ids)
    stack = open_label_stack(tmp_path / "one.tif")
    assert stack.shape == (1, 2, 2)
    np.testing.assert_array_equal(stack[0], ids)
    _palette_png(tmp_path / "one.png", ids, davis_palette())
    np.testing.assert_array_equal(open_label_stack(tmp_path / "one.png"), ids[None])
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((3, 4, 5), np.float32), photometric="minisblack")
    with pytest.raises(ValueError, match="labels must be integers"):
        open_label_stack(tmp_path / "f.tif")




def test_davis_palette_first_entries() -> None:
    pal = davis_palette()
    assert len(pal) == 768 and all(isinstance(v, int) for v in pal)
    assert pal[:24] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128, 128, 0, 128, 0, 128, 128, 128, 128, 128]
    assert pal[24:27] == [64, 0, 0]  # id 8
    assert pal[-3:] == [224, 224, 192]  # id 255
    pal[0] = 99  # callers get a copy
    assert davis_palette()[0] == 0


def test_write_palette_png_round_trip(tmp_path: Path) -> None:
    ids = RNG.integers(0, 256, size=(9, 13)).astype(np.int64)
    ids[0, 0], ids[0, 1] = 0, 255
    write_palette_png(tmp_path / "l.png", ids)
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P"
        assert im.getpalette()[:768] == davis_palette()
    labels = read_label_image(tmp_path / "l.png")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, ids)
    with pytest.raises(ValueError, match="write the labels as a TIFF"):
        write_palette_png(tmp_path / "big.png", np.array([[0, 256]]))
    with pytest.raises(ValueError, match="0..255"):
        write_palette_png(tmp_path / "neg.png", np.array([[0, -1]]))
    assert not (tmp_path / "big.png").exists()


def test_frame_names(tmp_path: Path) -> None:
    assert frame_names(np.zeros((3, 2, 2)), 3) == ["00000", "00001", "00002"]
    for name in ("cam_b", "cam_a10", "cam_a2"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / f"{name}.png")
    assert frame_names(FrameFolder(tmp_path), 3) == ["cam_a2", "cam_a10", "cam_b"]


def test_label_stack_writer_tiff(tmp_path: Path) -> None:
    out = tmp_path / "out" / "labels.tif"
    ids = np.zeros((4, 5, 6), np.uint64)
    ids[0, 0, 0], ids[2, 1, 1], ids[3, 4, 5] = 7, 2**63, 2**64 - 1
    with LabelStackWriter(out, shape=ids.shape, dtype=np.uint64) as writer:
        for t in (3, 0, 2):  # out of order; frame 1 is never written
            writer[t] = ids[t]
        assert writer.written == [0, 2, 3]
        assert not out.exists()  # nothing under the final name before close
        partial = [p for p in out.parent.iterdir() if p != out]
        assert len(partial) == 1 and partial[0].name.startswith(".labels.tif")
    assert sorted(p.name for p in out.parent.iterdir()) == ["labels.tif"]
    back = open_label_stack(out)
    assert back.dtype == np.uint64 and back.shape == (4, 5, 6)
    np.testing.assert_array_equal(back[:], ids)
    assert int(back[2, 1, 1]) == 2**63
    np.testing.assert_array_equal(tifffile.imread(out), ids)


def test_label_stack_writer_tiff_removed_on_exception(tmp_path: Path) -> None:
    out = tmp_path / "labels.tif"
    with pytest.raises(RuntimeError, match="boom"):
        with LabelStackWriter(out, shape=(2, 3, 3), dtype=np.int32) as writer:
            writer[0] = np.ones((3, 3), np.int32)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_label_stack_writer_checks_frames(tmp_path: Path) -> None:
    with LabelStackWriter(tmp_path / "l.tif", shape=(2, 3, 3), dtype=np.uint8) as writer:
        with pytest.raises(ValueError, match="do not fit uint8"):
            writer[0] = np.full((3, 3), 300)
        with pytest.raises(ValueError, match="shape"):
            writer[0] = np.zeros((3, 4), np.uint8)
        with pytest.raises(ValueError, match="labels must be integers"):
            writer[0] = np.zeros((3, 3), np.float32)
        with pytest.raises(IndexError):
            writer[2] = np.zeros((3, 3), np.uint8)
        writer[-1] = np.full((3, 3), 5, np.int64)  # fits: accepted
        assert writer.written == [1]
    with pytest.raises(ValueError, match="is closed"):
        writer[0] = np.zeros((3, 3), np.uint8)


def test_label_stack_writer_folder_uses_input_stems(tmp_path: Path) -> None:
    src = tmp_path / "frames"
    _grey_frames(src, count=3, fmt="img_{}.jpg")
    names = frame_names(FrameFolder(src), 3)
    out = tmp_path / "Annotations" / "seq"
    ids = RNG.integers(0, 4, size=(3, 6, 8)).astype(np.uint16)
    with LabelStackWriter(out, shape=ids.shape, dtype=np.uint16, frame_names=names) as writer:
        writer[2] = ids[2]
        assert sorted(p.name for p in out.iterdir()) == ["img_2.png"]  # written immediately
        writer[0] = ids[0]
        writer[1] = ids[1]
        big = ids[1].copy()
        big[0, 0] = 256
        with pytest.raises(ValueError, match="write the labels as a TIFF"):
            writer[1] = big
        assert writer.written == [0, 1, 2]
    assert sorted(p.name for p in out.iterdir()) == ["img_0.png", "img_1.png", "img_2.png"]
    np.testing.assert_array_equal(open_label_stack(out)[:], ids)
    default = LabelStackWriter(tmp_path / "davis", shape=(2, 2, 2))
    default[1] = np.ones((2, 2), np.uint8)
    default.close()
    assert [p.name for p in (tmp_path / "davis").iterdir()] == ["00001.png"]


def test_label_output_to_zarr_equals_the_in_memory_labels(tmp_path: Path) -> None:
    labels = np.zeros((6, 20, 30), np.uint16)
    labels[:, 5:10, 5:12] = 3
    labels[2:, 12:18, 20:28] = 400
    with LabelStackWriter(tmp_path / "out.zarr", labels.shape, np.uint16) as writer:
        for t in (5, 0, 3, 1, 2, 4):
            writer[t] = labels[t]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary store was renamed
    reread = open_label_stack(tmp_path / "out.zarr")
    np.testing.assert_array_equal(np.asarray(reread), labels)


def test_labels_saved_as_jpeg_or_photos_given_as_labels_are_refused_with_the_count(tmp_path: Path) -> None:
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 12:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.jpg", quality=80)
    with pytest.raises(ValueError, match=r"mask.jpg does not look like a label image: JPEG is lossy.*"
                                         r"\(\d+ distinct values\).*palette PNG"):
        read_label_image(tmp_path / "mask.jpg")
    photo = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match=r"photo.png does not look like a label image: a colour label image has "
                                         r"at most 1024 colours \(\d{4} distinct values\)"):
        read_label_image(tmp_path / "photo.png")


def test_truncated_files_name_the_file_and_say_what_to_do(tmp_path: Path) -> None:
    frames = RNG.integers(0, 256, (5, 32, 32), dtype=np.uint8)
    for compression in (None, "zlib"):
        path = tmp_path / f"stack-{compression}.tif"
        tifffile.imwrite(path, frames, compression=compression, photometric="minisblack")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 6 // 10])
        with pytest.raises(ValueError, match=rf"stack-{compression}.tif is truncated.*copy or export the file again"):
            open_image_stack(path)
    Image.fromarray(frames[0]).save(tmp_path / "frame.png")
    data = (tmp_path / "frame.png").read_bytes()
    (tmp_path / "frame.png").write_bytes(data[: len(data) // 2])
    for reader in (read_image, read_label_image):
        with pytest.raises(ValueError, match=r"frame.png cannot be read \(.*truncated.*\): the file is damaged"):
            reader(tmp_path / "frame.png")
