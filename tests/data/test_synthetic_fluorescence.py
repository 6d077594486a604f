"""Realistic synthetic fluorescence nuclei (rgmp_model.data.synthetic_fluorescence), the training
sources' "fluorescence" flavour and the fluorescence set of benchmarks/accuracy.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from rgmp_model.data.synthetic_fluorescence import (
    FluorescenceSequence, dimmest_ids, fluorescence_cell_range, object_brightness, random_fluorescence,
    synthetic_fluorescence,
)

SIDE = 192


@pytest.fixture(scope="module")
def sparse() -> FluorescenceSequence:
    return synthetic_fluorescence(10, SIDE, SIDE, 12, seed=1, dtype="uint8")


@pytest.fixture(scope="module")
def dense() -> FluorescenceSequence:
    return synthetic_fluorescence(10, SIDE, SIDE, 50, seed=2, dtype="uint16")


def _background(seq: FluorescenceSequence, t: int) -> np.ndarray:
    """Frame t's pixels at least 4 px away from every nucleus (out of the PSF halos)."""
    return seq.frames[t][~ndi.binary_dilation(seq.labels[t] > 0, iterations=4)].astype(np.float64)


def test_deterministic_by_seed() -> None:
    a = synthetic_fluorescence(5, 64, 80, 6, seed=7, division_rate=0.2)
    b = synthetic_fluorescence(5, 64, 80, 6, seed=7, division_rate=0.2)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.divisions == b.divisions and a.brightness == b.brightness
    assert not np.array_equal(a.frames, synthetic_fluorescence(5, 64, 80, 6, seed=8).frames)


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_dtypes_shapes_and_ids(request: pytest.FixtureRequest, name: str) -> None:
    seq = request.getfixturevalue(name)
    assert seq.frames.shape == seq.labels.shape == (10, SIDE, SIDE) and seq.labels.dtype == np.uint16
    assert seq.frames.dtype == (np.uint8 if name == "sparse" else np.uint16)
    n = 12 if name == "sparse" else 50
    assert seq.num_objects == n and set(np.unique(seq.labels[0])) == set(range(n + 1))
    assert sorted(seq.brightness) == list(range(1, n + 1))
    if name == "dense":  # a low dynamic range: a few hundred to a few thousand counts
        assert 200 < int(seq.frames.max()) < 6000


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_brightness_spans_a_decade_in_every_frame(request: pytest.FixtureRequest, name: str) -> None:
    seq = request.getfixturevalue(name)
    ratios = []
    for t in range(len(seq.frames)):
        b = np.array(list(object_brightness(seq.frames[t : t + 1], seq.labels[t : t + 1]).values()))
        ratios.append(b.max() / b.min())
    assert min(ratios) >= 8.0 and np.median(ratios) <= 16.0  # small dim nuclei lose more to their blurred edge


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_background_near_zero_and_dimmest_nuclei_barely_above_it(request: pytest.FixtureRequest, name: str) -> None:
    seq = request.getfixturevalue(name)
    bright = max(seq.brightness.values())
    for t in (0, 9):
        bg = _background(seq, t)
        noise = bg.std()
        assert np.median(bg) < 0.1 * bright and np.median(bg) < 3 * noise + 2  # near black, little offset
        dim = object_brightness(seq.frames[t : t + 1], seq.labels[t : t + 1])
        dimmest = min(dim.values())  # mean counts above the background median
        assert 1.0 * noise < dimmest < 6.0 * noise  # visible, but only a few noise sigmas up
    assert seq.dimmest(0.1) == dimmest_ids(seq.brightness, 0.1)
    assert len(seq.dimmest(0.1)) == max(1, round(0.1 * seq.num_objects))


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_nucleus_diameters_are_2_to_6_percent_of_the_side(request: pytest.FixtureRequest, name: str) -> None:
    areas = np.bincount(request.getfixturevalue(name).labels[0].ravel())[1:]
    diameters = 2 * np.sqrt(areas / np.pi) / SIDE
    assert diameters.min() >= 0.02 and diameters.max() <= 0.06


def test_labels_match_the_drawn_nuclei(dense: FluorescenceSequence) -> None:
    lab, img = dense.labels[5], dense.frames[5].astype(np.float64)
    near = ndi.binary_dilation(lab > 0, iterations=3)
    for i in range(1, dense.num_objects + 1):
        mask = lab == i
        ring = ndi.binary_dilation(mask, iterations=7) & ~near
        assert img[mask].mean() > img[ring].mean() + 0.5 * _background(dense, 5).std(), i


def test_drift_is_slow_and_divisions_keep_ids() -> None:
    seq = synthetic_fluorescence(16, 128, 128, 12, seed=4, division_rate=0.08)
    assert seq.divisions, "no division at this rate: pick another seed"
    for t in range(16):  # no new ids: both daughters keep the parent's id
        assert set(np.unique(seq.labels[t])) == set(range(13))
    for t, oid in seq.divisions:
        assert ndi.label(seq.labels[t] == oid)[1] == 2  # the two daughters, apart
    still = [i for i in range(1, 13) if i not in {oid for _, oid in seq.divisions}]
    centres = np.array([ndi.center_of_mass(np.ones((128, 128)), seq.labels[t], still) for t in range(16)])
    steps = np.hypot(*np.diff(centres, axis=0).transpose(2, 0, 1))
    assert np.median(steps) < 1.0 and steps.max() < 3.0


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="dtype"):
        synthetic_fluorescence(2, 64, 64, 3, dtype="float32")
    with pytest.raises(ValueError, match="at most"):
        synthetic_fluorescence(2, 64, 64, 5000)
    assert dimmest_ids({3: 5.0, 1: 2.0, 2: 9.0}, 0.1) == (1,)
    assert fluorescence_cell_range(480, 480) == (5, 150)


def test_random_fluorescence_draws_counts_and_dtypes() -> None:
    rng = np.random.default_rng(0)
    seqs = [random_fluorescence(rng, 2, 64, 64) for _ in range(8)]
    assert {s.frames.dtype.name for s in seqs} == {"uint8", "uint16"}
    lo, hi = fluorescence_cell_range(64, 64)
    assert all(lo <= s.num_objects <= hi for s in seqs)


def test_training_sources_and_stages_take_the_fluorescence_flavour() -> None:
    from training.config import config_from_dict
    from training.data import build_stage
    from training.config import SourceSpec
    from training.sources import still_source
    from training.video_sources import SyntheticVideoSource

    video = SyntheticVideoSource("fluorescence", count=2, num_frames=3, size=(64, 80), seed=5)
    seq = video.sequence(1)
    assert seq.frames.shape == (3, 64, 80) and seq.frames.dtype in (np.uint8, np.uint16) and seq.labels.max() >= 1
    again = SyntheticVideoSource("fluorescence", count=2, num_frames=3, size=(64, 80), seed=5).sequence(1)
    np.testing.assert_array_equal(seq.frames, again.frames)
    image, labels = still_source(SourceSpec("synthetic_fluorescence", count=3, size=(64, 80)), 5)[2]
    assert image.shape == (64, 80, 3) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    assert labels.shape == (64, 80) and labels.dtype == np.int32 and labels.max() >= 1
    spec = {"kind": "synthetic_fluorescence", "count": 4, "size": [128, 128], "num_frames": 4}
    for stage in ("pretrain", "video"):
        config = config_from_dict({"stage": stage, "data": {"sources": [spec], "crop_size": [64, 64], "length": 4}})
        dataset, _, _ = build_stage(config)
        item = dataset[0]
        assert item["frames" if stage == "video" else "frame"].shape[-2:] == (64, 64)


def test_accuracy_benchmark_reports_the_dimmest_tenth(monkeypatch, capsys) -> None:
    from benchmarks import accuracy, fluorescence_set
    from benchmarks.fluorescence_set import FluorescenceCase

    tiny = {"tiny-uint8": FluorescenceCase(4, 96, 96, 10, "uint8"),
            "tiny-uint16": FluorescenceCase(4, 96, 96, 20, "uint16")}
    monkeypatch.setattr(fluorescence_set, "FLUORESCENCE_SET", tiny)
    seq = fluorescence_set.fluorescence_sequences(["tiny-uint16"])[0]
    assert seq.name == "tiny-uint16" and seq.num_objects == 20 and len(seq.dimmest()) == 2
    assert accuracy.main(["fluorescence", "--methods", "copy"]) == 0
    out = capsys.readouterr().out
    assert "J dim10" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("copy ") and len(line.split()) == 9]
    assert [r[1] for r in rows] == ["tiny-uint8", "tiny-uint16", "mean"]
    assert all(0.0 <= float(r[5]) <= 1.0 for r in rows)
    assert all(float(r[6]) > 0 and 0.0 <= float(r[7]) for r in rows)  # area end, |1-area|
    with pytest.raises(SystemExit):
        accuracy.main(["fluorescence", "nonexistent", "--methods", "copy"])
    # sequences without brightness (DAVIS, samples) keep the old table
    run = accuracy.Run("copy", accuracy.evaluate_sequence(seq.labels, seq.labels, name="x"), 3, 1.0)
    assert "J dim10" not in accuracy.format_runs([run], ["copy"])
