"""Properties of the engine over generated inputs (hypothesis): for any small stack of a supported
dtype and any sparse ids, a session yields every frame once, with the frame's shape and only the
keyframe's ids, never raises, and never writes to the caller's arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.bad_input_checks import assert_unchanged, snapshot
from rgmp_model import PropagationSession, load_checkpoint

DTYPES = (np.uint8, np.uint16, np.float32, np.int16)


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)[0]


@st.composite
def stacks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(frames (T, H, W), keyframe labels (H, W), keyframe index, direction)."""
    t = draw(st.integers(1, 4))
    h, w = draw(st.integers(8, 48)), draw(st.integers(8, 48))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "f":
        frames = (rng.normal(0, draw(st.sampled_from([1e-3, 1.0, 1e4])), (t, h, w))).astype(dtype)
    else:
        info = np.iinfo(dtype)
        frames = rng.integers(info.min, int(info.max) + 1, (t, h, w), dtype=dtype)
    ids = draw(st.lists(st.integers(1, 2**31 - 1), min_size=1, max_size=4, unique=True))
    labels = np.zeros((h, w), draw(st.sampled_from([np.int32, np.int64, np.uint32])))
    for k, object_id in enumerate(ids):  # one rectangle each, later ones may cover earlier ones
        y, x = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        labels[y:y + draw(st.integers(1, h)), x:x + draw(st.integers(1, w))] = object_id
    keyframe = draw(st.integers(0, t - 1))
    return frames, labels, keyframe, draw(st.sampled_from(["both", "forward", "backward"]))


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=stacks())
def test_any_valid_stack_propagates_every_frame_once_with_the_keyframe_ids(model, case) -> None:
    frames, labels, keyframe, direction = case
    before = snapshot(frames, labels)
    session = PropagationSession(model, frames, device="cpu", direction=direction, max_size=0)
    session.add_keyframe(keyframe, labels)
    results = list(session.propagate())
    reached = {"both": range(len(frames)), "forward": range(keyframe, len(frames)),
               "backward": range(0, keyframe + 1)}[direction]
    assert sorted(t for t, _, _ in results) == list(reached)  # each reachable frame once
    assert len(results) == session.total_frames()
    ids = set(np.unique(labels).tolist()) - {0}
    for t, out, confidence in results:
        assert out.shape == labels.shape
        assert set(np.unique(out).tolist()) <= ids | {0}
        assert set(confidence) <= ids and all(0.0 <= c <= 1.0 for c in confidence.values())
        if t == keyframe:
            np.testing.assert_array_equal(out, labels)
    assert_unchanged(before)
