"""Bad input to the engine (PropagationSession, open_session): each case asserts the message a user
gets, or for odd but valid input the result, and that the caller's arrays are untouched."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from tests.helpers.bad_input_checks import assert_unchanged, assert_user_message, digest, snapshot
from rgmp_model import PropagationSession, load_checkpoint, open_session

H, W = 32, 40


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)[0]


def disc_labels(value: Any = 1, dtype: Any = np.uint16) -> np.ndarray:
    labels = np.zeros((H, W), dtype)
    labels[8:20, 10:24] = value
    return labels


def grey_frames(t: int = 3, dtype: Any = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((t, H, W)) * 200).astype(dtype)


# ------------------------------------------------------------------------------- refused frames
def _frames_cases() -> list[Any]:
    nan = np.full((2, H, W), np.nan, np.float32)
    nan[1] = np.inf
    return [
        pytest.param(np.zeros((H, W), np.uint8), "expected (T, H, W)", id="2d-frames"),
        pytest.param(np.zeros((2, 2, H, W, 3), np.uint8), "expected (T, H, W)", id="5d-frames"),
        pytest.param(np.zeros((0, H, W), np.uint8), "at least one frame", id="empty-stack"),
        pytest.param(np.zeros((2, 0, W), np.uint8), "at least one frame", id="zero-size-frames"),
        pytest.param(np.zeros((2, H, W, 5), np.uint8), "C = 1, 3 or 4 channels last", id="5-channels"),
        pytest.param(np.zeros((2, H, W), np.complex64), "not a numeric image type", id="complex-frames"),
        pytest.param(np.zeros((2, H, W), bool), "not a numeric image type", id="bool-frames"),
        pytest.param(nan, "no finite values", id="all-nan-and-inf"),
    ]


@pytest.mark.parametrize(("frames", "expected"), _frames_cases())
def test_frames_that_cannot_be_propagated_are_refused(model, frames, expected) -> None:
    before = snapshot(frames)
    with pytest.raises(ValueError) as error:
        PropagationSession(model, frames, device="cpu")
    assert_user_message(str(error.value), expected)
    assert_unchanged(before)


def test_frames_without_shape_are_refused(model) -> None:
    frames = [[[0, 1], [2, 3]]]
    with pytest.raises(ValueError) as error:
        PropagationSession(model, frames, device="cpu")
    assert_user_message(str(error.value), "wrap it with numpy.asarray")
    assert frames == [[[0, 1], [2, 3]]]


# ------------------------------------------------------------------------------- refused labels
def _empty_stack() -> np.ndarray:
    return np.zeros((3, H, W), np.uint16)


LABEL_CASES: list[Any] = [
    pytest.param(lambda s: s.add_keyframe(0, disc_labels(-3, np.int32)), "negative ids", id="negative-ids"),
    pytest.param(lambda s: s.add_keyframe(0, disc_labels(1.0, np.float32)), "must be integer ids", id="float-labels"),
    pytest.param(lambda s: s.add_keyframe(0, np.ones((H + 1, W), np.uint8)), "same image grid", id="shape-mismatch"),
    pytest.param(lambda s: s.add_keyframe(0, disc_labels(0)), "empty (all 0)", id="no-object"),
    pytest.param(lambda s: s.add_keyframe(5, disc_labels()), "outside the stack (0..2)", id="keyframe-past-end"),
    pytest.param(lambda s: s.add_keyframe(-1, disc_labels()), "outside the stack (0..2)", id="keyframe-negative"),
    pytest.param(lambda s: s.add_keyframes_from_stack(np.zeros((2, H, W), np.uint8)), "one (H, W) label image per frame",
                 id="label-stack-too-short"),
    pytest.param(lambda s: s.add_keyframes_from_stack(_empty_stack()), "no labels on any frame", id="label-stack-empty"),
    pytest.param(lambda s: s.add_box_keyframe(0, disc_labels(0)), "draw at least one rectangle", id="no-box"),
    pytest.param(lambda s: next(s.propagate()), "no keyframe", id="propagate-without-keyframe"),
    pytest.param(lambda s: s.uses_region(1), "not a keyframe", id="not-a-keyframe"),
]


@pytest.mark.parametrize(("call", "expected"), LABEL_CASES)
def test_labels_that_cannot_be_used_are_refused(model, call: Callable[[Any], Any], expected: str) -> None:
    frames = grey_frames()
    before = snapshot(frames)
    session = PropagationSession(model, frames, device="cpu")
    with pytest.raises(ValueError) as error:
        call(session)
    assert_user_message(str(error.value), expected)
    assert_unchanged(before)
    assert session.keyframes == ()


def test_a_refused_label_array_is_left_as_it_was(model) -> None:
    frames, labels = grey_frames(), disc_labels(-1, np.int16)
    before = snapshot(frames, labels)
    session = PropagationSession(model, frames, device="cpu")
    with pytest.raises(ValueError, match="negative ids"):
        session.add_keyframe(0, labels)
    assert_unchanged(before)


@pytest.mark.parametrize(("write", "expected"), [
    (lambda p: p.write_text("not weights"), "cannot be read as a PyTorch checkpoint"),
    (None, "does not exist"),
], ids=["text-file", "missing-file"])
def test_open_session_with_a_bad_checkpoint_path(tmp_path, write, expected) -> None:
    path = tmp_path / "model.pt"
    if write is not None:
        write(path)
    before, frames = digest(tmp_path), grey_frames()
    frozen = snapshot(frames)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        open_session(path, frames)
    assert_user_message(str(error.value), expected)
    assert digest(tmp_path) == before
    assert_unchanged(frozen)


# ------------------------------------------------------------------------------- odd but valid
def run(model, frames: Any, labels: Any, keyframe: int = 0) -> dict[int, np.ndarray]:
    session = PropagationSession(model, frames, device="cpu", direction="both")
    session.add_keyframe(keyframe, labels)
    return {t: out for t, out, _ in session.propagate()}


def _nan_frames() -> np.ndarray:
    frames = grey_frames(dtype=np.float32)
    frames[1, :4] = np.nan
    frames[2, 5:9, 3] = np.inf
    frames[2, 0, 0] = -np.inf
    return frames


VALID_CASES: list[Any] = [
    pytest.param(_nan_frames, lambda: disc_labels(), {1}, id="nan-and-inf-in-frames"),
    pytest.param(lambda: grey_frames(dtype=np.float64), lambda: disc_labels(), {1}, id="float64-frames"),
    pytest.param(lambda: grey_frames(dtype=np.int16) - 100, lambda: disc_labels(), {1}, id="int16-negative-values"),
    pytest.param(lambda: np.full((3, H, W), 7, np.uint16), lambda: disc_labels(), {1}, id="constant-frames"),
    pytest.param(grey_frames, lambda: disc_labels(True, bool), {1}, id="bool-labels"),
    pytest.param(grey_frames, lambda: disc_labels(2**40, np.int64), {2**40}, id="ids-2**40"),
    pytest.param(grey_frames, lambda: disc_labels(2**64 - 1, np.uint64), {2**64 - 1}, id="largest-uint64-id"),
]


@pytest.mark.parametrize(("make_frames", "make_labels", "ids"), VALID_CASES)
def test_odd_but_valid_input_propagates_and_is_untouched(model, make_frames, make_labels, ids) -> None:
    frames, labels = make_frames(), make_labels()
    before = snapshot(frames, labels)
    out = run(model, frames, labels)
    assert sorted(out) == [0, 1, 2]
    for t, result in out.items():
        assert result.shape == (H, W)
        assert set(np.unique(result).tolist()) <= ids | {0}
    np.testing.assert_array_equal(out[0], labels.astype(out[0].dtype))
    assert_unchanged(before)


def test_read_only_and_strided_inputs_are_read_as_they_are(model) -> None:
    base = grey_frames(6)
    frames = base[::2, :, ::-1]  # a strided, reversed view
    labels = disc_labels(4, np.uint8)
    frames_before = snapshot(base)
    labels.flags.writeable = False
    before = snapshot(frames, labels)
    out = run(model, frames, labels, keyframe=2)
    assert sorted(out) == [0, 1, 2] and set(np.unique(out[0]).tolist()) <= {0, 4}
    assert_unchanged(before + frames_before)
    assert not labels.flags.writeable
