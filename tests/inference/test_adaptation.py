"""Test-time adaptation (rgmp_model.adapt, PropagationOptions(adapt=N), rgmp propagate --adapt):
a copy of the network fine-tuned on the session's keyframes, kept across corrections."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from rgmp_model import PropagationOptions, build_rgmp, open_session, save_checkpoint
from rgmp_model.adapt import AdaptationError, AdaptOptions, adapt_model
from rgmp_model.cli import main
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
from rgmp_model.inference.frames import FrameStack
from rgmp_model.inference.session import load_model


@pytest.fixture(scope="module")
def stack():
    return synthetic_microscopy(num_frames=6, height=64, width=64, num_cells=3, seed=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", build_rgmp("resnet18", 8), {"recipe": "random"})


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_adapting_trains_a_copy_and_never_the_callers_network(stack) -> None:
    torch.manual_seed(0)
    model = build_rgmp("resnet18", 8)
    before = weights(model)
    seen = []
    adapted = adapt_model(model, FrameStack(stack.frames), {0: stack.labels[0]},
                          AdaptOptions(iterations=3, batch_size=2, crop_size=64),
                          on_progress=lambda i, n, loss: seen.append((i, n, np.isfinite(loss))))
    assert seen == [(1, 3, True), (2, 3, True), (3, 3, True)]
    assert same(weights(model), before) and adapted is not model and not adapted.training
    assert not same(weights(adapted), before)  # it did learn
    stopped = adapt_model(model, FrameStack(stack.frames), {0: stack.labels[0]}, AdaptOptions(iterations=5),
                          should_stop=lambda: True)
    assert same(weights(stopped), before)  # stopped before the first step


def test_a_session_adapts_once_reuses_the_copy_across_a_correction_and_adapts_again_when_a_keyframe_changes(
        stack, checkpoint) -> None:
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    cached = weights(load_model(checkpoint, "cpu")[0])
    session = open_session(checkpoint, stack.frames, PropagationOptions(adapt=2, device="cpu", direction="forward"))
    session.add_keyframe(0, stack.labels[0])
    assert session.adapt() is True and session.adaptation.runs == 1
    assert session.adapt() is False  # nothing changed: the copy is kept
    first = list(session.propagate())
    assert len(first) == 6 and session.adaptation.runs == 1
    session.add_keyframe(3, stack.labels[3])  # a correction: a new keyframe
    again = {t: labels for t, labels, _ in session.propagate(from_keyframes=[3])}
    assert sorted(again) == [3, 4, 5] and session.adaptation.runs == 1  # reused
    changed = stack.labels[0].copy()
    changed[changed == 1] = 0
    session.add_keyframe(0, changed)  # a keyframe it learnt from changed
    list(session.propagate())
    assert session.adaptation.runs == 2 and set(session.adaptation.learnt_from) == {0, 3}
    # neither the model file nor the cached network the session started from were changed
    assert hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest() == digest
    assert same(weights(load_model(checkpoint, "cpu")[0]), cached)


def test_adaptation_results_differ_from_the_plain_model_and_off_means_off(stack, checkpoint) -> None:
    def labels(adapt: int) -> np.ndarray:
        session = open_session(checkpoint, stack.frames, PropagationOptions(adapt=adapt, device="cpu"))
        session.add_keyframe(0, stack.labels[0])
        return np.stack([lab for _, lab, _ in session.propagate()])

    plain = open_session(checkpoint, stack.frames, PropagationOptions(device="cpu"))
    plain.add_keyframe(0, stack.labels[0])
    with pytest.raises(ValueError, match="opened without adaptation.*--adapt N"):
        plain.adapt()
    assert plain.adaptation.runs == 0
    assert not np.array_equal(labels(3), labels(0))


def test_adaptation_refuses_to_run_without_labelled_frames(stack, checkpoint) -> None:
    session = open_session(checkpoint, stack.frames, PropagationOptions(adapt=2, device="cpu"))
    with pytest.raises(ValueError, match="add labels on at least one frame"):
        session.adapt()
    with pytest.raises(AdaptationError, match="label at least one frame"):
        adapt_model(build_rgmp("resnet18", 8), FrameStack(stack.frames), {})
    for bad in (-1, 1.5, True, 10**6):
        with pytest.raises(ValueError, match="adapt must be a number of iterations"):
            PropagationOptions(adapt=bad)


def test_rgmp_propagate_adapt_leaves_the_checkpoint_as_it_was(tmp_path, stack, checkpoint, capsys) -> None:
    images, labels, out = tmp_path / "cells.tif", tmp_path / "frame0.tif", tmp_path / "out.tif"
    tifffile.imwrite(images, stack.frames)
    tifffile.imwrite(labels, stack.labels[0])
    digest = hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest()
    assert main(["propagate", str(images), "--labels", str(labels), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--adapt", "2"]) == 0
    assert tifffile.imread(out).shape == (6, 64, 64)
    assert hashlib.sha256(Path(checkpoint).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.tif", "frame0.tif", "out.tif"]  # no model written
    assert "adapting to the keyframes" in capsys.readouterr().err


def test_pairs_of_a_grey_stack_in_region_mode_are_shown_as_region_mode_shows_crops(stack) -> None:
    from rgmp_model.adapt.keyframe_pairs import KeyframePairDataset, KeyframeStills

    stills = KeyframeStills(FrameStack(stack.frames), {0: stack.labels[0], 4: stack.labels[4]})
    plain = KeyframePairDataset(stills, crop_size=(64, 64), seed=0, length=8)
    shown = KeyframePairDataset(stills, crop_size=(64, 64), seed=0, length=8, crop_contrast_probability=1.0)
    for k in range(8):  # real pairs and simulated ones alike
        a, b = plain[k], shown[k]
        assert torch.equal(a["mask"], b["mask"]) and torch.equal(a["previous_mask"], b["previous_mask"])
        assert float(b["reference_frame"].amin()) == 0.0 and float(b["reference_frame"].amax()) == 1.0
        assert not torch.equal(a["frame"], b["frame"])


def test_adapting_is_a_generator_whose_early_close_keeps_the_network(stack, checkpoint) -> None:
    session = open_session(checkpoint, stack.frames, PropagationOptions(device="cpu", adapt=4))
    session.set_keyframes({0: stack.labels[0]})
    base, network = session.model, session.network
    steps = session.adapting()
    assert next(steps)[:2] == (1, 4)
    steps.close()  # stopped after one step: nothing kept
    assert session.model is base and session.network is network and session.adaptation.model is None
    assert session.adapt(should_stop=lambda: True) is False and session.model is base
    seen = []
    assert session.adapt(on_progress=lambda i, n, loss: seen.append(i)) is True and seen == [1, 2, 3, 4]
    assert session.model is session.adaptation.model and session.network is not network
    assert list(session.adapting()) == [] and session.adapt() is False  # still valid: no step
