"""Bad input to fine-tuning (``finetune_on_stack`` and ``rgmp-train finetune``): each case asserts
the message, or for odd but valid input that a checkpoint comes out, and that the arrays, the base
checkpoint and the data files are unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from tests.helpers.bad_input_checks import (
    assert_unchanged, assert_user_message, digest, non_finite_checkpoint, run_main, snapshot, truncated_checkpoint,
)
from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from training.finetune import finetune_config, finetune_on_stack

T, H, W = 3, 64, 64
QUICK = ["optim.iterations=1", "data.batch_size=1", "data.crop_size=[64,64]", "schedule.log_every=1"]


def frames(dtype: Any = np.uint8) -> np.ndarray:
    return (np.random.default_rng(0).random((T, H, W)) * 200).astype(dtype)


def labels(value: Any = 1, dtype: Any = np.uint16, frames_labelled: tuple[int, ...] = (0, 2)) -> np.ndarray:
    stack = np.zeros((T, H, W), dtype)
    for t in frames_labelled:
        stack[t, 16:40, 20:44] = value
    return stack


def config(tmp_path: Path, base: Path, out: Path | None = None, *extra: str):
    return finetune_config(base, out or tmp_path / "tuned.pt", [*QUICK, *extra], output_dir=tmp_path / "work")


# ------------------------------------------------------------------------------- refused stacks
STACK_CASES = [
    pytest.param(frames(), labels(-2, np.int32), "negative ids", id="negative-ids"),
    pytest.param(frames(), labels(1.0, np.float32), "must be integer ids", id="float-labels"),
    pytest.param(frames(), labels()[:, :32], "do not match", id="labels-shape"),
    pytest.param(frames(), labels()[0], "do not match", id="labels-2d"),
    pytest.param(frames()[:2], labels(), "do not match", id="fewer-frames"),
    pytest.param(frames(), labels(frames_labelled=()), "label at least one frame", id="no-labelled-frame"),
]


@pytest.mark.parametrize(("images", "label_stack", "expected"), STACK_CASES)
def test_stacks_fine_tuning_cannot_use(tmp_path, checkpoint, images, label_stack, expected) -> None:
    before, files = snapshot(images, label_stack), digest(checkpoint)
    with pytest.raises(ValueError) as error:
        finetune_on_stack(images, label_stack, config(tmp_path, checkpoint))
    assert_user_message(str(error.value), expected)
    assert_unchanged(before)
    assert digest(checkpoint) == files and not (tmp_path / "tuned.pt").exists()


# ------------------------------------------------------------------------------- refused bases and outputs
def _wider_claim(path: Path) -> None:
    save_checkpoint(path, build_rgmp("resnet18", 8))
    payload = torch.load(path, weights_only=True)
    payload["config"]["backbone"] = "resnet50"
    torch.save(payload, path)


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: non_finite_checkpoint(p, float("inf")), "NaN or infinite weights"),
    (lambda p: truncated_checkpoint(p, 5000), "truncated"),
    (_wider_claim, "does not fit an RGMP network:\nmissing keys"),
    (lambda p: p.write_bytes(b"\x00" * 64), "cannot be read as a PyTorch checkpoint"),
], ids=["inf-weights", "truncated", "config-not-matching-tensors", "zeros"])
def test_damaged_base_checkpoints(tmp_path, make, expected) -> None:
    base = tmp_path / "base.pt"
    make(base)
    images, label_stack = frames(), labels()
    before, files = snapshot(images, label_stack), digest(base)
    with pytest.raises(ValueError) as error:
        finetune_on_stack(images, label_stack, config(tmp_path, base))
    assert_user_message(str(error.value), "base.pt", expected)
    assert_unchanged(before)
    assert digest(base) == files and not (tmp_path / "tuned.pt").exists()


@pytest.mark.parametrize("which", ["images", "labels"])
def test_output_equal_to_the_data_files(tmp_path, checkpoint, which) -> None:
    paths = {"images": tmp_path / "images.tif", "labels": tmp_path / "labels.tif"}
    tifffile.imwrite(paths["images"], frames(), photometric="minisblack")
    tifffile.imwrite(paths["labels"], labels(), photometric="minisblack")
    before = digest(tmp_path)
    run = config(tmp_path, checkpoint, paths[which], *(f"finetune.{k}={v}" for k, v in paths.items()))
    with pytest.raises(ValueError) as error:
        finetune_on_stack(frames(), labels(), run)
    assert_user_message(str(error.value), f"{which}.tif is an input of this run", "never overwritten")
    assert digest(tmp_path) == before


# ------------------------------------------------------------------------------- odd but valid
@pytest.mark.parametrize(("images", "label_stack"), [
    pytest.param(frames(), labels(2**40, np.int64), id="ids-2**40"),
    pytest.param(frames(), labels(2**64 - 1, np.uint64), id="largest-uint64-id"),
    pytest.param(frames(), labels(True, bool), id="bool-labels"),
    pytest.param(frames(np.float64) - 50, labels(7, np.uint8), id="float64-negative-frames"),
])
def test_odd_but_valid_stacks_fine_tune(tmp_path, checkpoint, images, label_stack) -> None:
    before, files = snapshot(images, label_stack), digest(checkpoint)
    out = finetune_on_stack(images, label_stack, config(tmp_path, checkpoint))
    model, info = load_checkpoint(out)  # finite weights (the loader checks)
    assert info.metadata["frames_used"] == [0, 2]
    assert_unchanged(before)
    assert digest(checkpoint) == files


# ------------------------------------------------------------------------------- rgmp-train finetune
def _label_jpeg(folder: Path) -> Path:
    Image.fromarray(labels(120, np.uint8)[0]).save(folder / "labels.jpg", quality=60)
    return folder / "labels.jpg"


def _cut_images(folder: Path) -> Path:
    path = folder / "images.tif"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    return path


@pytest.mark.parametrize(("change", "expected"), [
    (lambda f: ("--labels", _label_jpeg(f)), ["labels.jpg does not look like a label image", "JPEG"]),
    (lambda f: ("--images", _cut_images(f)), ["images.tif is truncated"]),
    (lambda f: ("--out", f / "labels.tif"), ["labels.tif is an input of this run"]),
    (lambda f: ("--base", f / "missing.pt"), ["missing.pt does not exist"]),
], ids=["label-jpeg", "truncated-images", "out-is-labels", "missing-base"])
def test_rgmp_train_finetune_refuses_bad_files(tmp_path, checkpoint, monkeypatch, change, expected) -> None:
    from training.cli import main

    folder = tmp_path / "data"
    folder.mkdir()
    tifffile.imwrite(folder / "images.tif", frames(), photometric="minisblack")
    tifffile.imwrite(folder / "labels.tif", labels(), photometric="minisblack")
    option, value = change(folder)
    argv = {"--images": folder / "images.tif", "--labels": folder / "labels.tif", "--base": checkpoint,
            "--out": tmp_path / "tuned.pt", option: value}
    before = digest(folder, checkpoint)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(main, ["finetune", *(str(x) for pair in argv.items() for x in pair), *QUICK,
                                   f"output_dir={tmp_path / 'work'}"])
    assert code != 0
    assert_user_message(err, *expected)
    assert digest(folder, checkpoint) == before and not (tmp_path / "tuned.pt").exists()
