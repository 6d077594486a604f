"""The Cell Tracking Challenge rules, checked independently of the writer (the CTC export, the
command line's and the Propagate dock's CTC outputs)."""

from __future__ import annotations

import numpy as np

from rgmp_model.io.ctc_export import Track


def assert_valid_ctc(stack: np.ndarray, tracks: list[Track]) -> None:
    """The CTC rules, checked independently of the writer: every label of the masks has one
    track, is present on every frame from B to E and on no other, and a parent exists and ends
    before its child begins."""
    by_label = {t.label: t for t in tracks}
    assert len(by_label) == len(tracks), "a label has two tracks"
    present = {int(i) for i in np.unique(stack) if i}
    assert present == set(by_label), (present, set(by_label))
    for track in tracks:
        frames = [t for t in range(len(stack)) if (stack[t] == track.label).any()]
        assert frames == list(range(track.begin, track.end + 1)), track
        if track.parent:
            assert track.parent in by_label and by_label[track.parent].end < track.begin, track
