"""Tests of the DAVIS metrics on hand-made masks whose scores are worked out by hand."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

from rgmp_model.eval.metrics import (
    ObjectScores,
    OverallScores,
    SequenceScores,
    boundary_f,
    boundary_map,
    evaluate_sequence,
    format_table,
    jaccard,
    summarize,
    write_csv,
)


def half_plane(width: int, size: int = 100) -> np.ndarray:
    """(size, size) mask whose columns 0 .. width-1 are set: one straight vertical edge."""
    m = np.zeros((size, size), dtype=bool)
    m[:, :width] = True
    return m


def square_stack(t: int, size: int = 20, box=(5, 12, 5, 12), label: int = 1) -> np.ndarray:
    s = np.zeros((t, size, size), dtype=np.int32)
    r0, r1, c0, c1 = box
    s[:, r0:r1, c0:c1] = label
    return s


# ----------------------------------------------------------------------------- J


def test_jaccard_two_squares_known_overlap():
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[0:4, 0:4] = True  # 16 px
    b[2:6, 2:6] = True  # 16 px, overlap rows 2-3 x cols 2-3 = 4 px, union 28
    assert jaccard(a, b) == 4 / 28
    assert jaccard(a, a) == 1.0


def test_jaccard_empty_cases():
    empty = np.zeros((5, 5), dtype=bool)
    full = np.ones((5, 5), dtype=bool)
    assert jaccard(empty, empty) == 1.0
    assert jaccard(empty, full) == 0.0
    assert jaccard(full, empty) == 0.0


def test_jaccard_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        jaccard(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


# ----------------------------------------------------------------------------- boundary map


def test_boundary_map_square():
    m = np.zeros((4, 4), dtype=bool)
    m[1:3, 1:3] = True
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(boundary_map(m), expected)


def test_boundary_map_last_row_column_and_corner():
    m = np.zeros((3, 3), dtype=bool)
    m[2, 2] = True  # only the bottom-right corner pixel is set
    expected = np.zeros((3, 3), dtype=bool)
    expected[1, 1] = True  # bottom-right neighbour differs
    expected[1, 2] = True  # last column: bottom neighbour differs
    expected[2, 1] = True  # last row: right neighbour differs
    # (2, 2) is the corner: never a boundary pixel.
    np.testing.assert_array_equal(boundary_map(m), expected)


def test_boundary_map_full_and_empty_masks_have_no_boundary():
    assert not boundary_map(np.ones((6, 7), bool)).any()
    assert not boundary_map(np.zeros((6, 7), bool)).any()


# ----------------------------------------------------------------------------- F


def test_boundary_f_identical_masks():
    m = np.zeros((30, 40), dtype=bool)
    m[5:20, 8:31] = True
    m[10:12, 2:9] = True
    assert boundary_f(m, m) == 1.0


def test_boundary_f_tolerance_from_diagonal_100px():
    # 100x100: tolerance = ceil(0.008 * 141.42) = 2 px. The boundary of half_plane(w) is the
    # single column w-1 (100 px), so a shift of s columns puts every pixel exactly s px away.
    gt = half_plane(50)
    assert boundary_f(half_plane(51), gt) == 1.0
    assert boundary_f(half_plane(52), gt) == 1.0
    assert boundary_f(half_plane(53), gt) == 0.0
    assert boundary_f(half_plane(47), gt) == 0.0
    assert boundary_f(half_plane(48), gt) == 1.0


def test_boundary_f_tolerance_from_diagonal_davis_size():
    # 480x854: tolerance = ceil(0.008 * 979.63) = 8 px.
    gt = np.zeros((480, 854), dtype=bool)
    gt[:, :400] = True
    shifted = np.zeros_like(gt)
    shifted[:, :408] = True
    assert boundary_f(shifted, gt) == 1.0
    shifted[:, 408] = True
    assert boundary_f(shifted, gt) == 0.0


def test_boundary_f_pixel_tolerance():
    gt = half_plane(50)
    assert boundary_f(half_plane(53), gt, bound_th=3) == 1.0
    assert boundary_f(half_plane(54), gt, bound_th=3) == 0.0
    assert boundary_f(half_plane(51), gt, bound_th=0.0) == 0.0
    with pytest.raises(ValueError, match="bound_th"):
        boundary_f(gt, gt, bound_th=-1)


def test_boundary_f_partial_match_counted_by_hand():
    # GT: columns 0-49 -> boundary = column 49, rows 0-99 (100 px).
    # Pred: columns 0-49 on rows 0-49, columns 0-59 on rows 50-99 (a step of 10 px). Its boundary:
    #   rows 0-48 column 49 (49 px), row 49 columns 49-59 (11 px), rows 50-99 column 59 (50 px)
    #   = 110 px. Tolerance 2 px.
    # Precision: 49 px of column 49 + (49,49),(49,50),(49,51) = 52 of 110.
    # Recall: GT rows 0-49 (50 px, on the pred boundary) + rows 50, 51 (1 and 2 px below
    #   (49,49)) = 52 of 100.
    gt = half_plane(50)
    pred = gt.copy()
    pred[50:, :60] = True
    assert np.count_nonzero(boundary_map(pred)) == 110
    precision, recall = 52 / 110, 52 / 100
    expected = 2 * precision * recall / (precision + recall)
    assert boundary_f(pred, gt) == pytest.approx(expected, abs=1e-15)
    assert expected == pytest.approx(52 / 105, abs=1e-15)


def test_boundary_f_empty_cases():
    empty = np.zeros((20, 20), dtype=bool)
    square = np.zeros((20, 20), dtype=bool)
    square[5:10, 5:10] = True
    full = np.ones((20, 20), dtype=bool)
    assert boundary_f(empty, empty) == 1.0  # both boundaries empty: P = R = 1
    assert boundary_f(empty, square) == 0.0  # P = 1, R = 0
    assert boundary_f(square, empty) == 0.0  # P = 0, R = 1
    assert boundary_f(full, full) == 1.0  # full masks have no boundary pixels
    assert boundary_f(full, square) == 0.0  # pred boundary empty, GT not


def test_boundary_f_small_object_large_tolerance():
    # 3x3 square in a 480x854 frame (tolerance 8 px): the compared region is smaller than the
    # tolerance disk. Shifting by 6 px keeps every boundary pixel 6 px from its twin (F = 1);
    # shifting by 20 px leaves the nearest boundary pixels 17 px apart (F = 0).
    gt = np.zeros((480, 854), dtype=bool)
    gt[100:103, 100:103] = True
    assert boundary_f(np.roll(gt, 6, axis=1), gt) == 1.0
    assert boundary_f(np.roll(gt, 6, axis=0), gt) == 1.0
    assert boundary_f(np.roll(gt, 20, axis=1), gt) == 0.0
    assert boundary_f(np.roll(gt, 20, axis=1), gt, bound_th=20) == 1.0  # every pixel has its twin


def test_disk_dilation_helper_matches_scipy_on_small_arrays():
    # The row-wise dilation clips shifts at the array edges; radii larger than the array included.
    from rgmp_model.eval.metrics import _dilate_disk

    rng = np.random.default_rng(2)
    for shape in [(1, 1), (1, 7), (6, 1), (5, 3), (9, 12)]:
        for radius in [0, 1, 2, 3, 5, 11]:
            for _ in range(4):
                m = rng.random(shape) > 0.8
                expected = binary_dilation(m, disk(radius).astype(bool))
                np.testing.assert_array_equal(_dilate_disk(m, float(radius)), expected)


@pytest.mark.parametrize("density", [0.9995, 0.999, 0.97])  # sparse -> dense boundaries
@pytest.mark.parametrize("bound_th", [0.008, 1, 3, 8, 13])
def test_boundary_f_matches_explicit_disk_dilation(density, bound_th):
    # The fast matching must equal the DAVIS recipe: dilate each boundary with disk(radius).
    rng = np.random.default_rng(1)
    shape = (90, 120)
    radius = int(np.ceil(0.008 * np.hypot(*shape))) if bound_th < 1 else bound_th  # 2 px
    for _ in range(3):
        a = binary_dilation(rng.random(shape) > density, disk(4))
        b = binary_dilation(rng.random(shape) > density, disk(3))
        ab, bb = boundary_map(a), boundary_map(b)
        if not ab.any() or not bb.any():
            continue
        p = np.count_nonzero(ab & binary_dilation(bb, disk(radius))) / np.count_nonzero(ab)
        rec = np.count_nonzero(bb & binary_dilation(ab, disk(radius))) / np.count_nonzero(bb)
        expected = 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)
        assert boundary_f(a, b, bound_th=bound_th) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- sequences


def test_first_and_last_frames_are_not_scored():
    gt = square_stack(5)
    pred = gt.copy()
    pred[0] = 0  # first frame wrong (empty)
    pred[4] = 0
    pred[4, 0:3, 0:3] = 1  # last frame wrong (elsewhere)
    seq = evaluate_sequence(pred, gt, name="s")
    assert seq.num_frames == 5
    assert len(seq.objects) == 1
    obj = seq.objects[0]
    assert obj.sequence == "s" and obj.object_id == 1
    assert obj.j_per_frame == (1.0, 1.0, 1.0)
    assert obj.f_per_frame == (1.0, 1.0, 1.0)
    assert (seq.j_mean, seq.f_mean, seq.jf_mean) == (1.0, 1.0, 1.0)
    # A wrong middle frame does count.
    pred[2] = 0
    obj = evaluate_sequence(pred, gt).objects[0]
    assert obj.j_per_frame == (1.0, 0.0, 1.0)
    assert obj.j_mean == 2 / 3


def test_short_sequences_score_every_frame():
    gt = square_stack(2)
    pred = gt.copy()
    pred[1] = 0
    obj = evaluate_sequence(pred, gt).objects[0]
    assert obj.j_per_frame == (1.0, 0.0)
    assert obj.j_mean == 0.5
    one = evaluate_sequence(gt[:1], gt[:1]).objects[0]
    assert one.j_per_frame == (1.0,) and one.j_decay == 0.0


def test_multi_object_mean_with_one_missed_object():
    gt = square_stack(4, box=(2, 8, 2, 8), label=1)
    gt[:, 12:18, 12:18] = 2
    pred = gt.copy()
    pred[pred == 2] = 0  # object 2 never predicted
    seq = evaluate_sequence(pred, gt)
    assert [o.object_id for o in seq.objects] == [1, 2]
    assert [o.j_mean for o in seq.objects] == [1.0, 0.0]
    assert [o.f_mean for o in seq.objects] == [1.0, 0.0]
    assert seq.j_mean == 0.5 and seq.f_mean == 0.5 and seq.jf_mean == 0.5
    assert seq.objects[0].jf_mean == 1.0


def test_objects_come_from_first_gt_frame():
    gt = square_stack(5)
    gt[2, 15:18, 15:18] = 7  # appears later: not an object of the sequence
    seq = evaluate_sequence(gt.copy(), gt)
    assert [o.object_id for o in seq.objects] == [1]
    # No object in frame 0: every object of the GT is scored.
    gt2 = gt.copy()
    gt2[0] = 0
    assert [o.object_id for o in evaluate_sequence(gt2, gt2).objects] == [1, 7]


def test_recall_and_decay_on_constructed_sequence():
    # One 10-px stripe; predicting its first k pixels gives J = k / 10 exactly.
    ks = [10, 10, 8, 5, 4, 4, 2, 0]  # scored frames 1..8 of a 10-frame sequence
    t = len(ks) + 2
    gt = np.zeros((t, 6, 14), dtype=np.uint8)
    gt[:, 2, 2:12] = 3
    pred = np.zeros_like(gt)
    pred[0] = pred[-1] = gt[0]
    for i, k in enumerate(ks, start=1):
        pred[i, 2, 2 : 2 + k] = 3
    obj = evaluate_sequence(pred, gt).objects[0]
    values = [1.0, 1.0, 0.8, 0.5, 0.4, 0.4, 0.2, 0.0]
    assert obj.j_per_frame == tuple(values)
    assert obj.j_mean == pytest.approx(sum(values) / 8, abs=1e-15)
    assert obj.j_recall == 3 / 8  # 0.5 itself is not > 0.5
    # n = 8: bin edges round(linspace(1, 8, 5)) - 1 = [0, 2, 4, 5, 7];
    # first bin = values[0:3], last bin = values[5:8].
    expected_decay = (1.0 + 1.0 + 0.8) / 3 - (0.4 + 0.2 + 0.0) / 3
    assert obj.j_decay == pytest.approx(expected_decay, abs=1e-12)
    # The F statistics follow the same formulas on the F values.
    f = np.array(obj.f_per_frame)
    assert obj.f_recall == np.count_nonzero(f > 0.5) / 8
    assert obj.f_decay == pytest.approx(f[0:3].mean() - f[5:8].mean(), abs=1e-12)
    assert f[0] == 1.0 and f[-1] == 0.0


def test_lazy_reader_is_read_one_frame_at_a_time():
    class Reader:
        def __init__(self, data: np.ndarray) -> None:
            self.data, self.shape, self.reads = data, data.shape, []

        def __getitem__(self, t):
            assert isinstance(t, int), "only single frames may be read"
            self.reads.append(t)
            return self.data[t]

    gt = square_stack(6)
    pred, truth = Reader(gt.copy()), Reader(gt)
    seq = evaluate_sequence(pred, truth)
    assert seq.jf_mean == 1.0
    assert sorted(pred.reads) == [1, 2, 3, 4]


def test_shape_mismatch_raises():
    msg = r"pred shape \(4, 20, 20\) does not match gt shape \(5, 20, 20\)"
    with pytest.raises(ValueError, match=msg):
        evaluate_sequence(square_stack(4), square_stack(5))


def test_float_labels_raise():
    gt = square_stack(4)
    with pytest.raises(ValueError, match="pred has dtype float32.*integer"):
        evaluate_sequence(gt.astype(np.float32), gt)


def test_wrong_ndim_raises():
    gt = square_stack(4)
    with pytest.raises(ValueError, match=r"gt must be a \(T, H, W\) label stack, got ndim 2"):
        evaluate_sequence(gt, gt[0])


# ----------------------------------------------------------------------------- summaries


def _seq(name: str, j_means: list[float]) -> SequenceScores:
    objs = tuple(
        ObjectScores(name, i + 1, j, j, 0.0, j, j, 0.0, (j,), (j,)) for i, j in enumerate(j_means)
    )
    return SequenceScores(name=name, objects=objs, num_frames=3)


def test_summarize_averages_over_objects_not_sequences():
    a = _seq("a", [1.0])
    b = _seq("b", [0.0, 0.0, 0.0])
    overall = summarize([a, b])
    assert isinstance(overall, OverallScores)
    assert overall.j_mean == 0.25  # over 4 objects; the mean over sequences would be 0.5
    assert overall.f_mean == 0.25 and overall.jf_mean == 0.25
    assert overall.j_recall == 0.25 and overall.f_recall == 0.25 and overall.j_decay == 0.0
    assert (overall.num_objects, overall.num_sequences) == (4, 2)


def test_summarize_real_sequences():
    gt = square_stack(4, box=(2, 8, 2, 8), label=1)
    gt[:, 12:18, 12:18] = 2
    missed = gt.copy()
    missed[missed == 2] = 0
    s1 = evaluate_sequence(square_stack(4), square_stack(4), name="one")  # 1 object, J = 1
    s2 = evaluate_sequence(missed, gt, name="two")  # objects J = 1, 0
    overall = summarize([s1, s2])
    assert overall.num_objects == 3
    assert overall.j_mean == pytest.approx(2 / 3, abs=1e-15)


def test_format_table():
    text = format_table([_seq("bear", [1.0]), _seq("camel", [0.0, 0.0, 0.0])])
    lines = text.splitlines()
    assert lines[0].split() == ["sequence", "J", "F", "J&F", "objects"]
    assert lines[1].split() == ["bear", "1.000", "1.000", "1.000", "1"]
    assert lines[2].split() == ["camel", "0.000", "0.000", "0.000", "3"]
    assert lines[-1].split() == ["overall", "0.250", "0.250", "0.250", "4"]


def test_write_csv_round_trip(tmp_path):
    a = _seq("a", [1.0])
    b = _seq("b", [0.5, 0.0])
    path = tmp_path / "scores.csv"
    write_csv(path, [a, b])
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = ["j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay", "jf_mean"]
    assert list(rows[0]) == ["sequence", "object_id", *cols]
    keys = [(r["sequence"], r["object_id"]) for r in rows]
    assert keys == [
        ("a", "1"), ("a", "mean"), ("b", "1"), ("b", "2"), ("b", "mean"), ("overall", "")
    ]
    values = {k: [float(r[c]) for c in cols] for k, r in zip(keys, rows)}
    assert values[("b", "1")] == [0.5, 0.5, 0.0, 0.5, 0.5, 0.0, 0.5]
    assert values[("b", "mean")] == [0.25, 0.25, 0.0, 0.25, 0.25, 0.0, 0.25]
    assert values[("overall", "")] == [0.5, 0.5, 0.0, 0.5, 0.5, 0.0, 0.5]  # (1 + 0.5 + 0) / 3
