"""PropagationOptions and open_session: one meaning of the working size, one session factory for
the command line, the Propagate widget's job, the accuracy benchmark and training validation, and
reference features kept per keyframe. Random weights, tiny generated frames, CPU."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks import accuracy
from napari_rgmp import propagate_job
from rgmp_model import PropagationOptions, PropagationSession, build_rgmp, open_session, resolve_max_size, save_checkpoint
from rgmp_model.inference import session as session_module
from rgmp_model.inference import working_size as working_size_module
from rgmp_model.cli import main as rgmp
from rgmp_model.io.label_io import open_label_stack
from rgmp_model.io.stack_io import open_image_stack
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout
from training import validation as validation_module
from training.validation import validate

H, W = 40, 64


def tiny_checkpoint(path, working_size=None):
    torch.manual_seed(0)
    metadata = {"recipe": "test"} if working_size is None else {"recipe": "test", "working_size": working_size}
    return save_checkpoint(path, build_rgmp("resnet18", 8), metadata)


@pytest.fixture
def davis(tmp_path):
    root = tmp_path / "davis"
    sequence = synthetic_video(num_frames=4, height=H, width=W, num_objects=2, seed=3)
    save_davis_layout(dataclasses.replace(sequence, name="tiny"), root)
    return root


@pytest.fixture
def opened(monkeypatch):
    """Every session the project's callers open, in order."""
    sessions = []
    real = session_module.open_session

    def recording(*args, **kwargs):
        sessions.append(real(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(session_module, "open_session", recording)
    monkeypatch.setattr(propagate_job, "open_session", recording)
    monkeypatch.setattr(validation_module, "open_session", recording)
    return sessions


def summary(session: PropagationSession) -> tuple:
    """What makes two sessions the same: options, working size, device, model, frames, keyframes."""
    return (session.options, session.working_size, str(session.device), session.scales,
            session.checkpoint.sha256, session.frames.shape, session.keyframes, tuple(session.object_ids))


# ---------------------------------------------------------------------------------- options
def test_options_are_frozen_and_checked_when_made() -> None:
    options = PropagationOptions(direction="both", max_size=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_size = 64
    for bad, message in [({"direction": "sideways"}, "direction must be one of"),
                         ({"max_size": 10}, r"max_size must be an integer >= 32 \(pixels\), 0 \(full size\) or None"),
                         ({"max_size": True}, "max_size must be"),
                         ({"mode": "fast"}, "mode must be one of"),
                         ({"flow": "farneback"}, "flow must be None or one of"),
                         ({"flow": "tvl1", "mode": "official"}, "authors' procedure"),
                         ({"object_batch": 0}, "object_batch must be >= 1"),
                         ({"scales": ()}, "scales must be a non-empty list"),
                         ({"precision": "fp8"}, "precision must be one of")]:
        with pytest.raises(ValueError, match=message):
            PropagationOptions(**bad)
    assert PropagationOptions(scales=[1, 0.5]).scales == (1.0, 0.5)
    assert PropagationOptions(max_size=np.int64(64)).max_size == 64


def test_working_size_has_one_meaning() -> None:
    assert resolve_max_size(None) == 0  # no size given, none recorded: full size
    assert resolve_max_size(None, 384) == 384  # the model's recorded working size
    assert resolve_max_size(0, 384) == 0  # 0: full size, whatever the model says
    assert resolve_max_size(256, 384) == 256
    assert resolve_max_size(None, None, fallback=480) == 480  # a caller's documented default
    assert PropagationOptions().resolved(384).max_size == 384
    assert PropagationOptions(max_size=0).resolved(384).max_size == 0
    assert PropagationOptions(mode="official").resolved().scales == (0.5, 0.75, 1.0)


def test_open_session_applies_the_recorded_working_size_and_caches_the_model(tmp_path) -> None:
    frames = synthetic_video(num_frames=3, height=H, width=W, num_objects=1, seed=1).frames
    path = tiny_checkpoint(tmp_path / "sized.pt", working_size=32)
    cpu = PropagationOptions(device="cpu")
    session = open_session(path, frames, cpu)
    assert session.working_size == (20, 32) and session.options.max_size == 32
    assert session.checkpoint.working_size == 32
    assert open_session(path, frames, cpu.replace(max_size=0)).working_size == (H, W)
    assert open_session(path, frames, cpu.replace(max_size=48)).working_size == (30, 48)
    assert open_session(str(path), frames, cpu).model is session.model  # loaded once
    tiny_checkpoint(path, working_size=32)  # the file is written again: read again
    assert open_session(path, frames, cpu).model is not session.model
    network = build_rgmp("resnet18", 8)  # a network records no size: None is full size
    bare = open_session(network, frames, cpu)
    assert bare.working_size == (H, W) and bare.checkpoint is None and bare.model is network
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        open_session(tmp_path / "missing.pt", frames, cpu)


def test_keyword_options_are_the_same_options() -> None:
    frames = synthetic_video(num_frames=2, height=H, width=W, num_objects=1, seed=1).frames
    model = build_rgmp("resnet18", 8)
    old = PropagationSession(model, frames, multiscale=True, max_size=48, device="cpu")
    new = PropagationSession(model, frames, PropagationOptions(scales=(0.5, 0.75, 1.0), max_size=48, device="cpu"))
    assert old.options == new.options and old.working_size == new.working_size == (30, 48)
    with pytest.raises(TypeError, match="either options or keyword options"):
        PropagationSession(model, frames, PropagationOptions(), device="cpu")
    with pytest.raises(TypeError, match="unknown propagation option"):
        PropagationSession(model, frames, max_sise=48)


# ---------------------------------------------------------------------------------- session
def test_session_reports_its_plan_and_total() -> None:
    sequence = synthetic_video(num_frames=9, height=H, width=W, num_objects=2, seed=2)
    session = open_session(build_rgmp("resnet18", 8), sequence.frames, PropagationOptions(direction="both", device="cpu"))
    session.add_keyframe(0, sequence.labels[0])
    session.add_keyframe(8, sequence.labels[8])
    assert [s.keyframe for s in session.plan()] == [0, 8]
    assert session.total_frames() == 9 == len(list(session.propagate()))
    assert session.total_frames("forward") == 9 and session.total_frames("backward") == 9
    session.add_keyframe(4, sequence.labels[4])
    assert session.total_frames(from_keyframes=[4]) == 4 == len(list(session.propagate(from_keyframes=[4])))
    assert session.total_frames(from_keyframes=[4], include_keyframes=False) == 3


def test_propagating_again_encodes_only_the_keyframes_that_changed() -> None:
    sequence = synthetic_video(num_frames=9, height=H, width=W, num_objects=2, seed=2)
    session = PropagationSession(build_rgmp("resnet18", 8), sequence.frames, PropagationOptions(direction="both", device="cpu"))
    encoded = []
    encode = session.propagator.encode_reference
    session.propagator.encode_reference = lambda frame, masks: encoded.append(masks.shape) or encode(frame, masks)
    session.add_keyframe(0, sequence.labels[0])
    session.add_keyframe(8, sequence.labels[8])
    first = {t: labels for t, labels, _ in session.propagate()}
    assert len(encoded) == 2
    session.add_keyframe(0, sequence.labels[0].copy())  # the same labels again: the features stay
    correction = sequence.labels[4].copy()
    session.add_keyframe(4, correction)
    partial = {t: labels for t, labels, _ in session.propagate(from_keyframes=[4])}
    assert len(encoded) == 3  # keyframe 4 only
    again = {t: labels for t, labels, _ in session.propagate()}
    assert len(encoded) == 3  # everything kept: 0, 4 and 8
    fresh = PropagationSession(session.model, sequence.frames, session.options)
    fresh.set_keyframes({0: sequence.labels[0], 4: correction, 8: sequence.labels[8]})
    for t, labels, _ in fresh.propagate():  # the kept features give the results of a new session
        np.testing.assert_array_equal(again[t], labels)
        np.testing.assert_array_equal(partial.get(t, first[t]), labels)
    session.add_keyframe(8, np.where(sequence.labels[8] == 1, 1, 0).astype(sequence.labels.dtype))  # changed
    list(session.propagate())
    assert len(encoded) == 4
    session.remove_keyframe(4)
    session.add_keyframe(4, correction)
    list(session.propagate(from_keyframes=[4]))
    assert len(encoded) == 5  # removed, then added: encoded again


def test_set_keyframes_holds_exactly_those_and_keeps_refined_boxes() -> None:
    sequence = synthetic_video(num_frames=5, height=H, width=W, num_objects=2, seed=2)
    session = PropagationSession(build_rgmp("resnet18", 8), sequence.frames, device="cpu")
    boxes = np.zeros((H, W), np.uint16)
    boxes[4:20, 4:30] = 1
    session.set_keyframes({0: sequence.labels[0], 4: sequence.labels[4]}, {2: boxes})
    assert session.keyframes == (0, 2, 4)
    refined = session.add_box_keyframe(2, boxes)
    steps = []
    step = session.propagator.step
    session.propagator.step = lambda *args: steps.append(1) or step(*args)
    session.set_keyframes({0: sequence.labels[0]}, {2: boxes})  # the same boxes: not refined again
    assert session.keyframes == (0, 2) and steps == []
    np.testing.assert_array_equal(session.add_box_keyframe(2, boxes), refined)
    assert steps == []


# ---------------------------------------------------------------------------------- callers
def test_rgmp_propagate_max_size_0_is_full_size_with_a_model_that_records_a_working_size(tmp_path, davis, opened, capsys,
                                                                                         monkeypatch):
    model = tiny_checkpoint(tmp_path / "sized.pt", working_size=32)
    images, labels = davis / "JPEGImages" / "480p" / "tiny", davis / "Annotations" / "480p" / "tiny" / "00000.png"
    common = ["propagate", str(images), "--labels", str(labels), "--checkpoint", str(model), "--device", "cpu"]
    # The tiny clip's objects are a few px at 32 px: small objects get full size (test_object_working_size.py) ...
    assert rgmp([*common, "--out", str(tmp_path / "fitted.tif")]) == 0
    assert opened[-1].working_size == (H, W) and f"working size {W}x{H}" in capsys.readouterr().out
    # ... and objects large enough at the recorded size keep it.
    monkeypatch.setattr(working_size_module, "SMALL_OBJECT_SIDE", 1)
    assert rgmp([*common, "--out", str(tmp_path / "recorded.tif")]) == 0
    assert opened[-1].working_size == (20, 32) and "working size 32x20" in capsys.readouterr().out
    assert rgmp([*common, "--max-size", "0", "--out", str(tmp_path / "full.tif")]) == 0
    assert opened[-1].working_size == (H, W) and opened[-1].options.max_size == 0
    out = capsys.readouterr().out
    assert f"working size {W}x{H}" in out and "4 frames (1 keyframe(s), 2 object(s))" in out
    assert rgmp([*common, "--max-size", "10", "--out", str(tmp_path / "tiny.tif")]) == 2
    assert "max_size must be an integer >= 32" in capsys.readouterr().err


@pytest.mark.parametrize("max_size", [None, 0, 48])
def test_cli_widget_job_and_accuracy_benchmark_build_identical_sessions(tmp_path, davis, opened, max_size):
    model = tiny_checkpoint(tmp_path / "sized.pt", working_size=32)
    images = davis / "JPEGImages" / "480p" / "tiny"
    labels = davis / "Annotations" / "480p" / "tiny"
    size = [] if max_size is None else ["--max-size", str(max_size)]
    assert rgmp(["propagate", str(images), "--labels", str(labels / "00000.png"), "--checkpoint", str(model),
                 "--direction", "forward", "--device", "cpu", "--out", str(tmp_path / "cli.tif"), *size]) == 0
    # the widget's job, with the options its controls give (untouched working size: None)
    job = propagate_job.PropagationJob(
        ("image", "selection", str(model)), str(model), open_image_stack(images),
        PropagationOptions(direction="forward", max_size=max_size, device="cpu"),
        keyframes={0: np.asarray(open_label_stack(labels)[0])})
    keeper = propagate_job.SessionKeeper()
    results = list(propagate_job.propagate_job(job, keeper))
    assert len(results) == 4 and results[-1].total == 4 and keeper.session is opened[-1]
    assert accuracy.main([str(davis), "tiny", "--methods", "model", "--checkpoint", str(model), "--device", "cpu",
                          *size]) == 0
    cli, widget, benchmark = opened
    assert summary(cli) == summary(widget) == summary(benchmark)
    # None: the recorded 32 px, made full size for the tiny clip's small objects (object_working_size)
    expected = {None: (H, W), 0: (H, W), 48: (30, 48)}[max_size]
    assert cli.working_size == expected


def test_validation_opens_its_sessions_the_same_way(opened) -> None:
    sequence = synthetic_video(num_frames=3, height=H, width=W, num_objects=2, seed=4)
    validation = SimpleNamespace(name="val", frames=sequence.frames, labels=sequence.labels, annotated=(0, 1, 2))
    model = build_rgmp("resnet18", 8)
    result = validate(model, [validation], "cpu", max_size=0)  # 0: full size (an error before)
    assert len(result.sequences) == 1
    assert opened[-1].model is model and opened[-1].working_size == (H, W)
    # validation always propagates full frames (region="off"): scores comparable across runs
    assert opened[-1].options == PropagationOptions(direction="forward", device="cpu", max_size=0, region="off").resolved()
    validate(model, [validation], "cpu", max_size=48)
    assert opened[-1].working_size == (30, 48)
