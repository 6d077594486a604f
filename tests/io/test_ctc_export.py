"""Cell Tracking Challenge export: masks + res_track.txt re-read give the same labels and valid tracks."""

from __future__ import annotations

import numpy as np
import pytest

from rgmp_model.io.ctc_export import CTCWriter, Track, read_ctc, write_ctc
from tests.helpers.ctc_checks import assert_valid_ctc


def moving_cells(num_frames: int = 8) -> np.ndarray:
    stack = np.zeros((num_frames, 24, 32), np.uint16)
    for t in range(num_frames):
        stack[t, 2:6, 2 + t : 6 + t] = 1
        if t not in (3, 4):  # cell 2 vanishes on frames 3-4 and comes back
            stack[t, 10:14, 10:14] = 2
        if t >= 5:  # cell 7 appears on frame 5
            stack[t, 18:22, 20:24] = 7
    return stack


def test_round_trip_gives_the_same_labels_and_valid_tracks(tmp_path) -> None:
    stack = moving_cells()
    stack[:, 18:20, 2:4] = 3  # present throughout
    tracks = write_ctc(tmp_path / "res", stack[:, :, :])
    read, reread_tracks = read_ctc(tmp_path / "res")
    assert reread_tracks == tracks
    assert sorted(p.name for p in (tmp_path / "res").iterdir())[:2] == ["mask000.tif", "mask001.tif"]
    assert_valid_ctc(read, tracks)
    # the same labels, except that cell 2 after its gap continues as a new track whose parent is 2
    gap = [t for t in tracks if t.parent == 2]
    assert len(gap) == 1 and gap[0].begin == 5 and gap[0].end == 7
    expected = stack.copy()
    expected[5:][stack[5:] == 2] = gap[0].label
    np.testing.assert_array_equal(read, expected)
    assert Track(1, 0, 7, 0) in tracks and Track(7, 5, 7, 0) in tracks and Track(3, 0, 7, 0) in tracks


def test_frames_in_any_order_and_division_parents(tmp_path) -> None:
    stack = np.zeros((6, 16, 16), np.uint8)
    stack[:3, 4:10, 4:10] = 1  # the mother, frames 0-2
    stack[3:, 2:6, 2:6] = 4  # daughters from frame 3
    stack[3:, 10:14, 10:14] = 5
    with CTCWriter(tmp_path / "res", 6, parents={4: 1, 5: 1}) as writer:
        for t in (2, 1, 0, 3, 4, 5):  # as a "both" propagation from frame 2 yields them
            writer[t] = stack[t]
    read, tracks = read_ctc(tmp_path / "res")
    np.testing.assert_array_equal(read, stack)
    assert tracks == [Track(1, 0, 2, 0), Track(4, 3, 5, 1), Track(5, 3, 5, 1)]
    assert_valid_ctc(read, tracks)
    lines = (tmp_path / "res" / "res_track.txt").read_text().splitlines()
    assert lines == ["1 0 2 0", "4 3 5 1", "5 3 5 1"]


def test_missing_frames_are_written_empty_and_long_stacks_use_four_digits(tmp_path) -> None:
    with CTCWriter(tmp_path / "a", 3) as writer:
        writer[1] = np.ones((4, 4), np.uint8)
    read, tracks = read_ctc(tmp_path / "a")
    assert read.shape == (3, 4, 4) and not read[0].any() and tracks == [Track(1, 1, 1, 0)]
    writer = CTCWriter(tmp_path / "b", 1000)
    writer[0] = np.ones((2, 2), np.uint8)
    assert (tmp_path / "b" / "mask0000.tif").is_file()


def test_refusals_say_what_to_do(tmp_path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty: choose a new folder"):
        CTCWriter(tmp_path / "full", 3)
    writer = CTCWriter(tmp_path / "new", 3)
    with pytest.raises(ValueError, match="uint16"):
        writer[0] = np.full((2, 2), 70000, np.int64)
    with pytest.raises(IndexError, match="outside"):
        writer[3] = np.zeros((2, 2), np.uint8)
    (tmp_path / "bad").mkdir()
    with pytest.raises(ValueError, match="mask000.tif"):
        read_ctc(tmp_path / "bad")


def test_a_mother_that_keeps_its_id_after_dividing_ends_there(tmp_path) -> None:
    """Region mode keeps the mother's id on its larger part: in CTC terms the mother ends at the
    division and that part continues as a daughter (a new label), beside the other daughter."""
    stack = np.zeros((6, 16, 16), np.uint8)
    stack[:, 4:10, 4:10] = 1  # the mother, on every frame
    stack[3:, 12:15, 12:15] = 6  # its daughter, split off on frame 3
    tracks = write_ctc(tmp_path / "res", stack, parents={6: 1})
    read, reread = read_ctc(tmp_path / "res")
    assert reread == tracks and tracks == [Track(1, 0, 2, 0), Track(6, 3, 5, 1), Track(7, 3, 5, 1)]
    assert_valid_ctc(read, tracks)
    expected = stack.copy()
    expected[3:][stack[3:] == 1] = 7
    np.testing.assert_array_equal(read, expected)
