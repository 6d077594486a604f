"""The large low-contrast nuclei generator, its validation set and the final-area measure."""

from __future__ import annotations

import numpy as np
import pytest

from rgmp_model.data.synthetic_low_contrast import random_low_contrast, synthetic_low_contrast
from rgmp_model.eval.areas import final_area_ratios


def test_nuclei_are_large_dim_and_keep_their_ids() -> None:
    seq = synthetic_low_contrast(12, 160, 176, 3, seed=4, dtype="uint16", contrast=(1.15, 1.3),
                                 diameter=(40, 50), division_rate=0.0)
    assert seq.frames.shape == (12, 160, 176) and seq.frames.dtype == np.uint16
    assert seq.labels.dtype == np.uint16 and sorted(np.unique(seq.labels[0])) == [0, 1, 2, 3]
    areas = np.bincount(seq.labels[0].ravel())[1:]
    assert np.all(areas > np.pi * 18**2) and np.all(areas < np.pi * 28**2)  # 40-50 px across, wobbling
    frame, labels = seq.frames[0].astype(float), seq.labels[0]
    ring = (labels == 0) & (np.hypot(*np.gradient((labels > 0).astype(float))) == 0)  # away from edges
    background = np.median(frame[ring])
    for i in (1, 2, 3):  # dim: the nucleus's mean within 1.05-1.5x the background's median
        assert 1.05 < frame[labels == i].mean() / background < 1.5
    again = synthetic_low_contrast(12, 160, 176, 3, seed=4, dtype="uint16", contrast=(1.15, 1.3),
                                   diameter=(40, 50), division_rate=0.0)
    np.testing.assert_array_equal(seq.frames, again.frames)


def test_daughters_keep_the_parent_id_and_uint8_works() -> None:
    seq = synthetic_low_contrast(30, 192, 192, 2, seed=1, dtype="uint8", diameter=(40, 44), division_rate=0.2)
    assert seq.frames.dtype == np.uint8 and seq.divisions
    t, oid = seq.divisions[0]
    from scipy import ndimage as ndi
    assert ndi.label(seq.labels[t] == oid)[1] == 2  # two separate parts, one id


def test_bad_settings_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="contrast"):
        synthetic_low_contrast(2, 128, 128, 1, contrast=(0.9, 1.2), diameter=(20, 30))
    with pytest.raises(ValueError, match="diameter"):
        synthetic_low_contrast(2, 128, 128, 1, diameter=(40, 90))
    with pytest.raises(ValueError, match="do not fit"):
        synthetic_low_contrast(2, 128, 128, 20, diameter=(20, 30))
    with pytest.raises(ValueError, match="dtype"):
        synthetic_low_contrast(2, 128, 128, 1, dtype="float32", diameter=(20, 30))


def test_training_sequences_fit_small_crops() -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        seq = random_low_contrast(rng, 4, 96, 128)
        assert seq.frames.shape == (4, 96, 128) and 1 <= seq.num_objects <= 6


def test_final_area_ratios_take_each_objects_last_frame() -> None:
    truth = np.zeros((3, 10, 10), np.uint8)
    truth[:, 0:4, 0:4] = 1  # 16 px on every frame
    truth[:2, 6:10, 6:10] = 2  # 16 px, gone on the last frame
    predicted = truth.copy()
    predicted[2, 0:2, 0:4] = 0  # object 1 ends at half its size
    predicted[1, 6:10, 6:10] = 0  # object 2 lost on its last frame
    assert final_area_ratios(predicted, truth) == {1: 0.5, 2: 0.0}
    with pytest.raises(ValueError, match="one shape"):
        final_area_ratios(predicted[:2], truth)


def test_accuracy_benchmark_runs_the_low_contrast_set(monkeypatch, capsys) -> None:
    from benchmarks import accuracy, fluorescence_set
    from benchmarks.fluorescence_set import LowContrastCase

    tiny = {"tiny-lc": LowContrastCase(4, 128, 128, 2, "uint16", (1.2, 1.3), (30, 40))}
    monkeypatch.setattr(fluorescence_set, "LOW_CONTRAST_SET", tiny)
    assert accuracy.main(["lowcontrast", "--methods", "copy"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("copy ") and len(line.split()) == 9]
    assert [r[1] for r in rows] == ["tiny-lc", "mean"]
    assert all(0.0 < float(r[6]) for r in rows)  # the final area of copy: frame 0's mask
    with pytest.raises(SystemExit):
        accuracy.main(["lowcontrast", "nonexistent", "--methods", "copy"])
