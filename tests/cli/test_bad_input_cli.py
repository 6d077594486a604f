"""Bad input to ``rgmp propagate``, ``rgmp evaluate`` and ``rgmp models`` (run in-process): each
case asserts the exit code, the message on stderr (no traceback, no internal names) and that
every input file is byte-identical afterwards. (Interrupts, full disks and partial output are in
tests/cli/test_cli_partial_output.py.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from tests.helpers.bad_input_checks import assert_user_message, digest, run_main
from rgmp_model import build_rgmp, save_checkpoint
from rgmp_model.cli import main

T, H, W = 5, 32, 40
RNG = np.random.default_rng(3)
FRAMES = RNG.integers(0, 255, (T, H, W), dtype=np.uint8)
LABELS = np.zeros((H, W), np.uint16)
LABELS[8:20, 10:24] = 1
LABELS[22:30, 26:36] = 2


@pytest.fixture
def inputs(tmp_path) -> Path:
    """tmp/in: images.tif, labels.tif, a PNG frame folder and a JPEG frame folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "images.tif", FRAMES)
    tifffile.imwrite(folder / "labels.tif", LABELS)
    for name, suffix in (("png_frames", ".png"), ("jpg_frames", ".jpg")):
        (folder / name).mkdir()
        for t, frame in enumerate(FRAMES):
            Image.fromarray(frame).save(folder / name / f"{t:05d}{suffix}")
    return folder


def cut(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def propagate(inputs: Path, checkpoint: Path, out: Path, images: Any = "images.tif", labels: Any = "labels.tif",
              *options: str) -> tuple[int, str, str]:
    return run_main(main, ["propagate", inputs / images, "--labels", inputs / labels, "--checkpoint", checkpoint,
                           "--out", out, "--device", "cpu", *options])


# ------------------------------------------------------------------------------- damaged or odd images
def _garble_deflate_page(folder: Path) -> str:
    tifffile.imwrite(folder / "garbled.tif", FRAMES, compression="zlib")
    with tifffile.TiffFile(folder / "garbled.tif") as tif:
        offset = tif.pages[2].dataoffsets[0]
    data = bytearray((folder / "garbled.tif").read_bytes())
    data[offset:offset + 40] = bytes(40)
    (folder / "garbled.tif").write_bytes(bytes(data))
    return "garbled.tif"


def _cut_deflate_pages(folder: Path) -> str:
    tifffile.imwrite(folder / "cut.tif", FRAMES, compression="zlib")
    with tifffile.TiffFile(folder / "cut.tif") as tif:
        second = tif.pages[1].offset
    data = (folder / "cut.tif").read_bytes()
    (folder / "cut.tif").write_bytes(data[:second])  # one page of four left, its data intact
    return "cut.tif"


def _write(name: str, data: np.ndarray, **kwargs: Any) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        tifffile.imwrite(folder / name, data, **kwargs)
        return name
    return make


def _cut_file(name: str, fraction: float) -> Callable[[Path], str]:
    def make(folder: Path) -> str:
        cut(folder / name, fraction)
        return name.split("/")[0] if "/" in name else name
    return make


def _zero_size_zarr(folder: Path) -> str:
    import zarr

    zarr.create_array(str(folder / "zero.zarr"), shape=(3, 0, 5), dtype="uint8")
    return "zero.zarr"


def _all_nan() -> np.ndarray:
    return np.full((T, H, W), np.nan, np.float32)


IMAGE_CASES = [
    pytest.param(_cut_file("png_frames/00002.png", 0.3), ["00002.png", "damaged or truncated"], id="truncated-png-frame"),
    pytest.param(_cut_file("jpg_frames/00002.jpg", 0.4), ["00002.jpg", "damaged or truncated"], id="truncated-jpeg-frame"),
    pytest.param(_cut_file("images.tif", 0.6), ["images.tif is truncated"], id="truncated-tiff"),
    pytest.param(_cut_deflate_pages, ["cut.tif is truncated", "5 frames but it holds 1"], id="truncated-deflate-pages"),
    pytest.param(_garble_deflate_page, ["garbled.tif: frame 2 cannot be read", "damaged"], id="corrupt-deflate-page"),
    pytest.param(_zero_size_zarr, ["(3, 0, 5)", "at least one frame"], id="zero-size-frames"),
    pytest.param(_write("five.tif", np.zeros((2, 2, 2, 8, 8), np.uint8)), ["more than two stack axes", "--axes"],
                 id="five-axes"),
    pytest.param(_write("nan.tif", _all_nan()), ["no finite values"], id="all-nan-frames"),
    pytest.param(lambda f: (f / "empty").mkdir() or "empty", ["contains no image files"], id="empty-folder"),
    pytest.param(lambda f: (f / "notes.tif").write_text("hello") and "notes.tif", ["notes.tif is not a readable TIFF"],
                 id="text-as-tiff"),
]


@pytest.mark.parametrize(("make", "expected"), IMAGE_CASES)
def test_damaged_or_unusable_images(tmp_path, inputs, checkpoint, make, expected) -> None:
    images = make(inputs)
    before = digest(inputs, checkpoint)
    code, _, err = propagate(inputs, checkpoint, tmp_path / "out.tif", images)
    assert code != 0
    assert_user_message(err, *expected)
    assert digest(inputs, checkpoint) == before


# ------------------------------------------------------------------------------- bad labels and options
def _label_jpeg(folder: Path) -> str:
    Image.fromarray((LABELS * 100).astype(np.uint8)).save(folder / "labels.jpg", quality=70)
    return "labels.jpg"


LABEL_CASES = [
    pytest.param(_label_jpeg, [], ["labels.jpg does not look like a label image", "JPEG is lossy", "distinct values"],
                 id="label-jpeg"),
    pytest.param(_write("neg.tif", -LABELS.astype(np.int16)), [], ["negative ids"], id="negative-ids"),
    pytest.param(_write("float.tif", LABELS.astype(np.float32)), [], ["labels must be integers", "float32"],
                 id="float-labels"),
    pytest.param(_write("small.tif", LABELS[:10]), [], ["shape (10, 40)", "same image grid"], id="labels-shape"),
    pytest.param(_write("none.tif", np.zeros_like(LABELS)), [], ["empty (all 0)"], id="labels-without-object"),
    pytest.param(lambda f: "labels.tif", ["--reference-frame", "9"], ["frame 9 is outside the stack (0..4)"],
                 id="keyframe-out-of-range"),
    pytest.param(lambda f: "labels.tif", ["--axis", "7"], ["axis 7", "is not a stack axis"], id="axis-out-of-range"),
    pytest.param(lambda f: "labels.tif", ["--channel", "1"], ["has no channel axis"], id="channel-without-channels"),
    pytest.param(lambda f: "labels.tif", ["--at", "3"], ["--at picks an index of the other axis"], id="at-without-z"),
]


@pytest.mark.parametrize(("make", "options", "expected"), LABEL_CASES)
def test_bad_labels_and_options(tmp_path, inputs, checkpoint, make, options, expected) -> None:
    labels = make(inputs)
    before = digest(inputs, checkpoint)
    code, _, err = propagate(inputs, checkpoint, tmp_path / "out.tif", "images.tif", labels, *options)
    assert code != 0
    assert_user_message(err, *expected)
    assert digest(inputs, checkpoint) == before
    assert not (tmp_path / "out.tif").exists()


def test_channel_out_of_range(tmp_path, inputs, checkpoint) -> None:
    tifffile.imwrite(inputs / "two.tif", np.stack([FRAMES, FRAMES], axis=1), metadata={"axes": "TCYX"})
    before = digest(inputs)
    code, _, err = propagate(inputs, checkpoint, tmp_path / "out.tif", "two.tif", "labels.tif", "--channel", "5")
    assert code != 0
    assert_user_message(err, "channel 5 is outside the 2 channels of two.tif: choose 0..1")
    assert digest(inputs) == before


# ------------------------------------------------------------------------------- outputs that would hit an input
@pytest.mark.parametrize(("out", "images"), [
    ("labels.tif", "images.tif"), ("images.tif", "images.tif"), ("png_frames", "png_frames"),
    ("png_frames/result", "png_frames"), ("link.tif", "images.tif"),
], ids=["out-is-labels", "out-is-images", "out-is-frame-folder", "out-inside-frame-folder", "out-links-to-labels"])
def test_output_equal_to_an_input_is_refused(inputs, checkpoint, out, images) -> None:
    (inputs / "link.tif").symlink_to(inputs / "labels.tif")
    before = digest(inputs)
    code, _, err = propagate(inputs, checkpoint, inputs / out, images)
    assert code != 0
    assert_user_message(err, "would overwrite an input", "inputs are never overwritten")
    assert digest(inputs) == before  # no file changed, none added


@pytest.mark.skipif(not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.geteuid() != 0,
                    reason="needs a folder nobody may write to (/sys on Linux)")
def test_read_only_output_folder(inputs, checkpoint) -> None:
    before = digest(inputs)
    code, _, err = propagate(inputs, checkpoint, Path("/sys/rgmp_out.tif"))
    assert code != 0
    assert_user_message(err, "/sys")
    assert "permission denied" in err.lower() or "read-only" in err.lower()
    assert digest(inputs) == before


# ------------------------------------------------------------------------------- odd but valid
def test_huge_ids_and_nan_frames_propagate(tmp_path, inputs, checkpoint) -> None:
    frames = FRAMES.astype(np.float32)
    frames[1, :5] = np.nan
    frames[2, :3] = np.inf
    tifffile.imwrite(inputs / "nan.tif", frames)
    tifffile.imwrite(inputs / "big.tif", LABELS.astype(np.int64) * 2**40)
    before = digest(inputs)
    code, out, err = propagate(inputs, checkpoint, tmp_path / "out.tif", "nan.tif", "big.tif")
    assert code == 0, err
    result = tifffile.imread(tmp_path / "out.tif")
    assert result.shape == (T, H, W) and set(np.unique(result).tolist()) <= {0, 2**40, 2**41}
    np.testing.assert_array_equal(result[0], LABELS.astype(np.int64) * 2**40)
    assert digest(inputs) == before
    code, _, err = propagate(inputs, checkpoint, tmp_path / "pngs", "nan.tif", "big.tif")  # PNGs hold 0..255
    assert code != 0
    assert_user_message(err, "palette PNG holds ids 0..255 only", "write the labels as a TIFF")
    assert digest(inputs) == before


# ------------------------------------------------------------------------------- damaged checkpoints
def _nan_weights(path: Path) -> None:
    model = build_rgmp("resnet18", 8)
    with torch.no_grad():
        model.decoder.pred2.weight[0, 0, 0, 0] = float("nan")
    save_checkpoint(path, model)


def _config_not_matching(path: Path) -> None:
    save_checkpoint(path, build_rgmp("resnet18", 8))
    payload = torch.load(path, weights_only=True)
    payload["config"]["decoder_channels"] = 4096  # a claim that would allocate far more than the file holds
    torch.save(payload, path)


def _truncated(path: Path) -> None:
    save_checkpoint(path, build_rgmp("resnet18", 8))
    cut(path, 0.5)


CHECKPOINT_CASES = [
    pytest.param(lambda p: p.write_text("hello"), ["cannot be read as a PyTorch checkpoint", "not a checkpoint"],
                 id="text-file"),
    pytest.param(_truncated, ["cannot be read as a PyTorch checkpoint", "truncated"], id="truncated"),
    pytest.param(_nan_weights, ["NaN or infinite weights", "decoder.pred2.weight"], id="nan-weights"),
    pytest.param(_config_not_matching, ["do not fit a resnet18 RGMP network as its config describes", "edited"],
                 id="config-not-matching-tensors"),
    pytest.param(lambda p: torch.save([1, 2, 3], p), ["holds a list, not an RGMP checkpoint"], id="a-list"),
]


@pytest.mark.parametrize(("make", "expected"), CHECKPOINT_CASES)
def test_damaged_checkpoints_are_refused_by_propagate_and_models_add(tmp_path, inputs, make, expected) -> None:
    path = tmp_path / "model.pt"
    make(path)
    before = digest(inputs, path)
    code, _, err = propagate(inputs, path, tmp_path / "out.tif")
    assert code != 0
    assert_user_message(err, "model.pt", *expected)
    code, _, err = run_main(main, ["models", "--add", path])
    assert code != 0
    assert_user_message(err, "model.pt was not added", expected[0])
    assert digest(inputs, path) == before
    assert not (tmp_path / "out.tif").exists() and not any(Path(os.environ["RGMP_MODELS_DIR"]).glob("*"))


def test_models_lists_every_file_and_marks_the_damaged_ones(tmp_path, checkpoint, monkeypatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("RGMP_MODELS_DIR", str(folder))
    (folder / "a_good.pt").write_bytes(checkpoint.read_bytes())
    _truncated(folder / "b_cut.pt")
    _nan_weights(folder / "c_nan.pt")
    (folder / "d_notes.pth").write_text("hello")
    before = digest(folder)
    code, out, err = run_main(main, ["models"])
    assert code == 1
    assert_user_message(out, "a_good.pt", "ok", "b_cut.pt\n    DAMAGED:", "c_nan.pt\n    DAMAGED:", "d_notes.pth\n    DAMAGED:")
    assert out.count("DAMAGED") == 3
    assert digest(folder) == before


# ------------------------------------------------------------------------------- rgmp evaluate
EVALUATE_CASES = [
    pytest.param(lambda f: (f / "labels.tif", f / "images.tif"), ["prediction has shape (1, 32, 40), ground truth (5, 32, 40)"],
                 id="images-as-ground-truth"),
    pytest.param(lambda f: (f / "missing", f / "labels.tif"), ["missing does not exist"], id="missing-prediction"),
    pytest.param(lambda f: (f / "png_frames" / "00000.png", f / "labels.tif"), ["a single file must be a label TIFF"],
                 id="single-png"),
    pytest.param(lambda f: (f / "png_frames", f / "jpg_frames"), ["does not look like a label image"],
                 id="photographs-as-labels"),
]


@pytest.mark.parametrize(("paths", "expected"), EVALUATE_CASES)
def test_evaluate_refuses_what_is_not_labels(inputs, paths, expected) -> None:
    pred, gt = paths(inputs)
    before = digest(inputs)
    code, _, err = run_main(main, ["evaluate", pred, gt])
    assert code != 0
    assert_user_message(err, *expected)
    assert digest(inputs) == before


def test_evaluate_with_a_truncated_ground_truth_frame(tmp_path, inputs) -> None:
    for name in ("pred", "gt"):
        (tmp_path / name).mkdir()
        for t in range(T):
            Image.fromarray((LABELS * 40).astype(np.uint8)).save(tmp_path / name / f"{t:05d}.png")
    cut(tmp_path / "gt" / "00002.png", 0.6)
    before = digest(tmp_path / "gt", tmp_path / "pred")
    code, _, err = run_main(main, ["evaluate", tmp_path / "pred", tmp_path / "gt"])
    assert code != 0
    assert_user_message(err, "00002.png", "damaged or truncated")
    assert digest(tmp_path / "gt", tmp_path / "pred") == before
