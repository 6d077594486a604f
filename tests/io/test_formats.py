"""The format registry (rgmp_model.io.formats): each format once, every suffix through the public
readers and writers, and a new format accepted by the command line and label I/O from one entry."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rgmp_model.io.formats import (
    BUILTIN_FORMATS,
    FileFormat,
    file_formats,
    format_of,
    format_of_name,
    frame_suffixes,
    register_format,
    registered,
)
from rgmp_model.io.label_io import LabelStackWriter, open_label_stack, read_label_image
from rgmp_model.io.outputs import output_kind, output_kinds, output_path
from rgmp_model.io.stack_io import open_image_stack, read_image

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = [(f.name, s) for f in BUILTIN_FORMATS for s in f.suffixes]
LABELS = np.zeros((3, 12, 16), np.uint8)
LABELS[:, 2:6, 3:9], LABELS[1:, 7:11, 9:15] = 1, 2


def test_each_format_and_suffix_is_listed_once() -> None:
    names = [f.name for f in file_formats()]
    suffixes = [s for f in file_formats() for s in f.suffixes]
    assert len(names) == len(set(names)) and len(suffixes) == len(set(suffixes))
    assert {".tif", ".tiff", ".zarr", ".png", ".jpg", ".jpeg", ".bmp"} == set(suffixes)
    assert all(format_of_name(f"x{s.upper()}").name == name for name, s in SUFFIXES)  # any case
    assert set(frame_suffixes()) == {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
    with pytest.raises(ValueError, match="clashes"):
        register_format(FileFormat(name="other tiff", suffixes=(".tif",), description="taken"))


def test_no_module_tests_a_suffix_but_the_registry() -> None:
    """The suffix literals of the formats appear in no other module's code (docs and messages aside):
    a line comparing or listing them, e.g. ``in (".tif", ".tiff")`` or ``== ".zarr"``."""
    listed = re.compile(r"""(==|!=|\bin|endswith\()\s*\(?\s*["']\.(tif|tiff|zarr|png|jpe?g|bmp)["']""")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for package in ("rgmp_model", "napari_rgmp", "training")
                 for p in sorted((ROOT / package).rglob("*.py")) if p.name != "formats.py"
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if listed.search(line)]
    assert offenders == []


def _image(path: Path, frames: np.ndarray) -> None:
    """``frames`` (T, H, W) as a stack file, or frame 0 alone for a one-frame format."""
    fmt = format_of_name(path)
    if fmt.name == "tif":
        tifffile.imwrite(path, frames if len(frames) > 1 else frames[0], photometric="minisblack")
    elif fmt.name == "zarr":
        import zarr

        zarr.create_array(str(path), shape=frames.shape, dtype=frames.dtype)[:] = frames
    else:
        Image.fromarray(frames[0]).save(path)


@pytest.mark.parametrize(("name", "suffix"), SUFFIXES)
def test_every_suffix_reads_as_an_image_stack(tmp_path: Path, name: str, suffix: str) -> None:
    frames = (LABELS * 100).astype(np.uint8)
    path = tmp_path / f"images{suffix}"
    _image(path, frames)
    assert format_of(path).name == name
    stack = np.asarray(open_image_stack(path))
    expected = frames if stack.shape[0] == 3 else frames[:1]
    assert stack.shape == expected.shape
    if name == "jpeg":  # lossy
        assert np.abs(stack.astype(int) - expected).mean() < 8
    else:
        np.testing.assert_array_equal(stack, expected)
        if name != "zarr":
            path_of_one = tmp_path / f"one{suffix}"
            _image(path_of_one, frames[:1])
            np.testing.assert_array_equal(read_image(path_of_one), frames[0])


@pytest.mark.parametrize(("name", "suffix"), SUFFIXES)
def test_every_suffix_round_trips_labels_or_says_why_not(tmp_path: Path, name: str, suffix: str) -> None:
    fmt = format_of_name(f"x{suffix}")
    path = tmp_path / f"labels{suffix}"
    if fmt.create_store is not None:  # a stack format: written by the writer, read back whole
        with LabelStackWriter(path, LABELS.shape, np.uint8) as writer:
            for t, frame in enumerate(LABELS):
                writer[t] = frame
        assert output_kind(path) == name and path.exists()
        np.testing.assert_array_equal(np.asarray(open_label_stack(path)), LABELS)
    elif fmt.holds_labels:  # a frame format: one label image, or a folder of them
        Image.fromarray(LABELS[1]).save(path)
        np.testing.assert_array_equal(read_label_image(path), LABELS[1])
        np.testing.assert_array_equal(np.asarray(open_label_stack(path)), LABELS[1:2])
    else:  # lossy: refused with what to do
        Image.fromarray(LABELS[1] * 100).save(path)
        with pytest.raises(ValueError, match="lossy"):
            read_label_image(path)


def test_an_output_folder_holds_frames_of_the_folder_format(tmp_path: Path) -> None:
    out = tmp_path / "result"
    assert output_kind(out) == "png" and output_path("clip.tif")[0] == Path("clip_rgmp.tif")
    with LabelStackWriter(out, LABELS.shape, np.uint8) as writer:
        for t, frame in enumerate(LABELS):
            writer[t] = frame
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    np.testing.assert_array_equal(np.asarray(open_label_stack(out)), LABELS)


class NpyStore:
    """A test-only stack store: a .npy file written through a memory map."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str) -> None:
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=tuple(shape))

    def write(self, index: tuple[int, ...], frame: np.ndarray) -> None:
        self.array[index] = frame

    def close(self) -> None:
        self.array.flush()
        del self.array


def _npy(path: Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


NPY = FileFormat(name="npy", suffixes=(".npy",), description="NumPy array (test only)", holds_labels=True,
                 open_stack=_npy, open_label_stack=_npy, create_store=NpyStore)


def test_a_new_format_is_one_entry(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Registering a .npy format makes the readers, the writer, `rgmp propagate` and `rgmp evaluate`
    take .npy files, with no other edit; unregistered, .npy is not a format again."""
    from rgmp_model.cli import find_sequences, main

    images, labels, out = tmp_path / "clip.npy", tmp_path / "clip_labels.npy", tmp_path / "result.npy"
    frames = np.repeat((LABELS * 90 + 20)[..., np.newaxis], 3, axis=-1).astype(np.uint8)
    np.save(images, frames)
    np.save(labels, LABELS[:1])
    assert format_of(images) is None and output_kind(out) == "png"
    with registered(NPY):
        assert format_of(images) is NPY and "npy" in output_kinds()
        assert np.asarray(open_image_stack(images)).shape == frames.shape
        np.testing.assert_array_equal(open_label_stack(labels), LABELS[:1])
        assert output_path(images) == (Path("clip_rgmp.tif"), "tif")
        assert main(["propagate", str(images), "--labels", str(labels), "--checkpoint", str(checkpoint),
                     "--out", str(out), "--direction", "forward"]) == 0
        result = np.load(out)
        assert result.shape == LABELS.shape and result.dtype.kind == "u"
        np.testing.assert_array_equal(result[0], LABELS[0])  # the keyframe is kept
        capsys.readouterr()
        truth = tmp_path / "truth.npy"
        np.save(truth, LABELS)
        assert main(["evaluate", str(out), str(truth)]) == 0
        assert "result" in capsys.readouterr().out  # one sequence scored, named after the prediction
    assert format_of(images) is None and "npy" not in output_kinds()
    with pytest.raises(ValueError, match="a single file must be a label TIFF stack"):
        find_sequences(out)
