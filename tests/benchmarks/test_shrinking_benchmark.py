"""benchmarks/shrinking.py (why masks shrink) on a tiny clip with LocalRuleModel: each variant
builds the tracker it names and reports areas and speed. CPU."""

from __future__ import annotations

import numpy as np

from benchmarks import shrinking
from tests.helpers.local_rule_model import LocalRuleModel
from rgmp_model.inference.region import RegionOptions


def _clip(frames: int = 12, shape: tuple[int, int] = (96, 96)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = np.stack([((yy - 48) ** 2 + (xx - 40 - t) ** 2 <= 100).astype(np.int64) for t in range(frames)])
    return truth.astype(np.float32) * 200 + 20, truth


def test_each_variant_builds_the_tracker_it_names() -> None:
    model = LocalRuleModel()
    shipped = shrinking._tracker(model, "region, stretched")
    before = shrinking._tracker(model, "region, stretched, crop scale 1")
    plain = shrinking._tracker(model, "region, unstretched")
    assert shipped.normalise and before.normalise and not plain.normalise
    assert shipped.options.crop_scale == plain.options.crop_scale == RegionOptions.crop_scale == 2.0
    assert before.options.crop_scale == 1.0


def test_one_step_and_free_run_report_areas_near_one_on_an_easy_clip() -> None:
    frames, truth = _clip()
    model = LocalRuleModel()
    for variant in ("region, stretched", "region, stretched, crop scale 1"):
        step = shrinking.one_step(model, frames, truth, 4, variant)
        areas, speed = shrinking.free_run(model, frames, truth, variant)
        assert 0.8 < step < 1.2, (variant, step)
        assert sorted(areas) == [1, 10, 11] and all(0.8 < a < 1.2 for a in areas.values()), (variant, areas)
        assert speed > 0


def test_one_step_at_a_fixed_crop_size_uses_it(monkeypatch) -> None:
    frames, truth = _clip(4)
    sizes = []
    real = shrinking._tracker

    def recording(model, variant, crop_size=None):
        tracker = real(model, variant, crop_size)
        sizes.append(tracker.options.crop_size)
        return tracker

    monkeypatch.setattr(shrinking, "_tracker", recording)
    assert 0.8 < shrinking.one_step(LocalRuleModel(), frames, truth, 2, "region, unstretched", 96) < 1.2
    assert sizes == [96, 96]
