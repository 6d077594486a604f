"""One boundary per entry point (issue 24): an unexpected exception (a bug) in ``rgmp``, ``rgmp-train``
or a dock job becomes one message naming the input and the step it came at, exit code 1, the
traceback only under ``--debug`` (CLI) or in the log (docks). Each test forces one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tests.helpers.bad_input_checks import run_main

FRAMES = np.random.default_rng(0).integers(0, 255, (5, 32, 40), dtype=np.uint8)
LABELS = np.zeros((32, 40), np.uint16)
LABELS[8:20, 10:24] = 1


@pytest.fixture
def stack(tmp_path) -> tuple[Path, Path]:
    tifffile.imwrite(tmp_path / "images.tif", FRAMES, photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels.tif", LABELS)
    return tmp_path / "images.tif", tmp_path / "labels.tif"


def _bug(*_, **__):
    raise TypeError("'NoneType' object is not subscriptable")


def test_rgmp_propagate_names_the_input_and_step_of_an_unexpected_error(tmp_path, stack, checkpoint, monkeypatch) -> None:
    from rgmp_model.cli import main
    from rgmp_model.inference import session

    monkeypatch.setattr(session, "open_session", _bug)
    images, labels = stack
    argv = ["propagate", images, "--labels", labels, "--checkpoint", checkpoint, "--out", tmp_path / "out.tif",
            "--device", "cpu"]
    code, _, err = run_main(main, argv)
    assert code == 1
    assert f"while loading the model {checkpoint} and propagating {images}" in err
    assert "TypeError: 'NoneType' object is not subscriptable" in err and "please report it" in err
    assert "--debug shows the traceback" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    with pytest.raises(TypeError):
        main(["--debug", *map(str, argv)])


def test_rgmp_train_names_the_input_and_step_of_an_unexpected_error(tmp_path, stack, checkpoint, monkeypatch) -> None:
    from training import finetune
    from training.cli import main

    monkeypatch.setattr(finetune, "load_checkpoint", _bug)
    images, _ = stack
    labels = np.zeros(FRAMES.shape, np.uint16)
    labels[0] = LABELS
    tifffile.imwrite(tmp_path / "label_stack.tif", labels, photometric="minisblack")
    argv = ["finetune", "--images", images, "--labels", tmp_path / "label_stack.tif", "--base", checkpoint,
            "--out", tmp_path / "tuned.pt", f"output_dir={tmp_path / 'work'}", "device=cpu", "optim.iterations=1"]
    code, _, err = run_main(main, argv)
    assert code == 1, err
    assert f"rgmp-train finetune: error: the command failed while loading the base checkpoint {checkpoint}" in err
    assert "TypeError" in err and "Traceback" not in err
    with pytest.raises(TypeError):
        main([*map(str, argv[:1]), "--debug", *map(str, argv[1:])])


def test_the_dock_jobs_boundary_logs_the_traceback_and_returns_one_message(caplog) -> None:
    from napari_rgmp.run_guard import JobFailed, guarded_call, guarded_generator
    from rgmp_model.steps import step

    def job():
        step("propagating the frame after frame 2")
        yield 1
        raise KeyError("objects")

    results = []
    generator = guarded_generator("the propagation of 'cells'", job())
    with caplog.at_level(logging.ERROR, logger="napari_rgmp"):
        try:
            while True:
                results.append(next(generator))
        except StopIteration as end:
            message = end.value
    assert results == [1]
    assert message.startswith("the propagation of 'cells' failed while propagating the frame after frame 2: "
                              "an unexpected error (KeyError: 'objects')")
    assert "traceback is in the napari log" in message
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)

    def fit():
        step("training finetune, iteration 3 of 10")
        raise AttributeError("'int' object has no attribute 'detach'")

    with pytest.raises(JobFailed, match=r"fine-tuning base.pt failed while training finetune, iteration 3 of 10"):
        guarded_call("fine-tuning base.pt", fit)
    with pytest.raises(ValueError, match="worded"):  # expected errors keep their own message
        guarded_call("fine-tuning base.pt", lambda: (_ for _ in ()).throw(ValueError("worded for a user")))
