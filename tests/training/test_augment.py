"""Stage-1 deformations (rgmp_model.adapt.augment): geometric transforms, thin-plate splines, the
previous-mask deformation, colour jitter and pasting (CPU, generated data)."""

from __future__ import annotations

import numpy as np
import pytest

from rgmp_model.adapt.augment import (
    color_jitter, deform_previous_mask, paste_object, random_geometric_transform, thin_plate_spline_displacement,
)
from tests.helpers.shapes import disc as _disc, iou as _iou  # noqa: F401

# Bounds derived from the default parameters (see the docstrings of rgmp_model.adapt.augment).
S_LO, S_HI, TPS_AREA = 0.8, 1.2, 1.25  # random_geometric_transform: scale range, spline area change
PREV_SCALE, PREV_AREA = 0.05, 1.5  # deform_previous_mask: per-axis scale, spline area change
RASTER = 0.04  # relative area error of rasterising the outline of a disc of radius >= 30 px



# --------------------------------------------------------------------------- deformations


def _asymmetric(h: int = 40, w: int = 52) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random image with an L-shaped object of a colour that appears nowhere else."""
    image = np.random.default_rng(7).uniform(0.0, 0.5, (h, w, 3)).astype(np.float32)
    mask = np.zeros((h, w), bool)
    mask[5:30, 4:10] = True
    mask[24:30, 4:25] = True
    colour = np.array([1.0, 0.9, 0.8], np.float32)
    image[mask] = colour
    return image, mask, colour


def test_mirror_only_transform_is_exact() -> None:
    image, mask, colour = _asymmetric()
    mirror = random_geometric_transform(
        np.random.default_rng(0), mask.shape, flip_probability=1.0, max_rotation=0.0, scale_range=(1.0, 1.0),
        max_shear=0.0, max_translation=0.0, tps_strength=0.0)
    assert mirror.flipped
    out = mirror.apply_to_image(image)
    np.testing.assert_array_equal(out, image[:, ::-1])
    labels = mask.astype(np.int32) * 5
    np.testing.assert_array_equal(mirror.apply_to_mask(labels), labels[:, ::-1])
    warped = mirror.apply_to_mask(mask)
    assert warped.dtype == bool
    np.testing.assert_array_equal(warped, (out == colour).all(-1))  # exactly the object's pixels
    assert not np.array_equal(warped, mask)  # the pattern is asymmetric
    identity = random_geometric_transform(
        np.random.default_rng(0), mask.shape, flip_probability=0.0, max_rotation=0.0, scale_range=(1.0, 1.0),
        max_shear=0.0, max_translation=0.0, tps_strength=0.0)
    np.testing.assert_array_equal(identity.apply_to_image(image), image)


@pytest.mark.parametrize("seed", range(5))
def test_warped_mask_lines_up_with_warped_image(seed: int) -> None:
    """Uniform background b and object colour o: the warped image is b + soft * (o - b) where soft is the
    warped mask's bilinear value, and the binary warped mask is exactly where the colour is nearer o."""
    h, w = 64, 72
    mask = _disc((h, w), (30, 40), 14) | ((np.arange(h)[:, None] > 40) & (np.arange(w)[None] < 20))
    back, obj = np.array([0.1, 0.3, 0.2], np.float32), np.array([0.9, 0.6, 0.1], np.float32)
    image = np.where(mask[..., None], obj, back).astype(np.float32)
    warp = random_geometric_transform(np.random.default_rng(seed), (h, w))
    out = warp.apply_to_image(image, fill=back)
    soft = warp.apply_to_image(mask.astype(np.float32))
    np.testing.assert_allclose(out, back + soft[..., None] * (obj - back), atol=1e-5)
    binary = warp.apply_to_mask(mask.astype(np.float32))
    assert binary.dtype == np.float32 and set(np.unique(binary)) <= {0.0, 1.0}
    nearer_obj = np.linalg.norm(out - obj, axis=-1) < np.linalg.norm(out - back, axis=-1)
    assert (binary.astype(bool) != nearer_obj).sum() <= 2  # ties at exactly 0.5 only
    assert 0.3 * mask.sum() < binary.sum() < 3 * mask.sum()


def test_tps_zero_displacement_is_identity() -> None:
    points = np.array([[10.0, 12.0], [40.0, 30.0], [25.0, 50.0], [5.0, 60.0]])
    field = thin_plate_spline_displacement((48, 64), points, np.zeros_like(points))
    assert field.shape == (2, 48, 64) and field.dtype == np.float32 and not field.any()
    moves = np.array([[2.0, -1.0], [0.0, 3.0], [-2.5, 0.5], [1.0, 1.0]])
    field = thin_plate_spline_displacement((48, 64), points, moves, grid_step=1.0)
    got = field[:, points[:, 0].astype(int), points[:, 1].astype(int)].T
    np.testing.assert_allclose(got, moves, atol=1e-4)  # the spline interpolates its control points
    assert np.abs(field).max() < 3 * np.abs(moves).max()


def test_geometric_transform_area_bounds() -> None:
    """An object well inside the frame: area ratio in [S_LO^2 / TPS_AREA, S_HI^2 * TPS_AREA] (+- RASTER),
    and without the spline in [S_LO^2, S_HI^2]; the ranges are actually used."""
    disc = _disc((256, 256), (128, 128), 30)
    ratios, affine_only = [], []
    for seed in range(120):
        rng = np.random.default_rng(seed)
        ratios.append(random_geometric_transform(rng, (256, 256)).apply_to_mask(disc).sum() / disc.sum())
        rng = np.random.default_rng(seed)
        warp = random_geometric_transform(rng, (256, 256), tps_strength=0.0)
        affine_only.append(warp.apply_to_mask(disc).sum() / disc.sum())
    assert S_LO**2 / TPS_AREA * (1 - RASTER) <= min(ratios) and max(ratios) <= S_HI**2 * TPS_AREA * (1 + RASTER)
    assert S_LO**2 * (1 - RASTER) <= min(affine_only) and max(affine_only) <= S_HI**2 * (1 + RASTER)
    assert min(affine_only) < 0.75 and max(affine_only) > 1.3
    assert np.std(np.array(ratios) - np.array(affine_only)) > 0.005  # the spline changes areas a little


def test_previous_mask_bounds() -> None:
    """Disc of radius 40 (box 80 px): warp area factor in [(1-PREV_SCALE)^2 / PREV_AREA, (1+PREV_SCALE)^2 *
    PREV_AREA] = [0.60, 1.65], then +-1..5 px of dilation / 1..3 px of erosion on a radius of 31..52 px:
    area ratio in [0.60 * (1 - 3/31)^2, 1.65 * (1 + 5/52)^2] = [0.49, 1.99]; never identical to the target,
    never unrelated (IoU in [0.4, 0.97], centroid within 20% of the box size per axis)."""
    target = _disc((200, 200), (100, 100), 40)
    lo = (1 - PREV_SCALE) ** 2 / PREV_AREA * (1 - 3 / 31) ** 2 * (1 - RASTER)
    hi = (1 + PREV_SCALE) ** 2 * PREV_AREA * (1 + 5 / 52) ** 2 * (1 + RASTER)
    ratios, ious = [], []
    for seed in range(150):
        prev = deform_previous_mask(np.random.default_rng(seed), target, box_probability=0.0)
        assert prev.dtype == np.float32 and prev.shape == target.shape and set(np.unique(prev)) <= {0.0, 1.0}
        ratios.append(prev.sum() / target.sum())
        ious.append(_iou(prev, target))
        shift = np.argwhere(prev > 0).mean(0) - 100
        assert np.abs(shift).max() < 0.2 * 80  # translation <= 10% of the box, the spline's share below 10%
    assert lo <= min(ratios) and max(ratios) <= hi, (min(ratios), max(ratios))
    assert 0.4 <= min(ious) and max(ious) <= 0.97, (min(ious), max(ious))
    assert 0.6 < np.mean(ious) < 0.9
    assert min(ratios) < 0.9 and max(ratios) > 1.1  # both erosion and dilation happen


def test_spline_area_guard_with_a_strong_spline() -> None:
    """A strong spline alone (no affine part): the backward map's Jacobian determinant, hence the local
    area change, stays within [1/TPS_AREA, TPS_AREA] while pixels still move by several px."""
    moved = 0.0
    for seed in range(20):
        warp = random_geometric_transform(
            np.random.default_rng(seed), (128, 160), flip_probability=0.0, max_rotation=0.0, scale_range=(1.0, 1.0),
            max_shear=0.0, max_translation=0.0, tps_points=8, tps_strength=0.15)
        dr_dr, dr_dc = np.gradient(warp.rows.astype(np.float64))
        dc_dr, dc_dc = np.gradient(warp.cols.astype(np.float64))
        det = dr_dr * dc_dc - dr_dc * dc_dr
        assert 1 / TPS_AREA - 0.01 <= det.min() and det.max() <= TPS_AREA + 0.01, (det.min(), det.max())
        moved = max(moved, float(np.abs(warp.rows - np.arange(128)[:, None]).max()))
    assert moved > 2.0


def test_previous_mask_morphology_alone() -> None:
    """Without warp: a dilation by 1..5 px (a strict superset) or an erosion by 1..3 px (a strict subset)."""
    target, radius = _disc((200, 200), (100, 100), 40), 40
    kinds = set()
    for seed in range(40):
        prev = deform_previous_mask(np.random.default_rng(seed), target, box_probability=0.0, max_scale=0.0,
                                    max_translation=0.0, tps_strength=0.0) > 0
        ratio = prev.sum() / target.sum()
        if prev.sum() > target.sum():
            assert prev[target].all() and (1 + 0.5 / radius) ** 2 <= ratio <= (1 + 5.5 / radius) ** 2, ratio
            kinds.add("dilation")
        else:
            assert not prev[~target].any() and (1 - 3.5 / radius) ** 2 <= ratio <= (1 - 0.5 / radius) ** 2, ratio
            kinds.add("erosion")
    assert kinds == {"dilation", "erosion"}


def test_box_previous_mask_contains_object() -> None:
    target = np.zeros((100, 120), bool)
    target[20:60, 30:50] = True
    target[55:70, 45:90] = True  # box rows 20..69, cols 30..89
    for seed in range(20):
        prev = deform_previous_mask(np.random.default_rng(seed), target, box_probability=1.0)
        assert prev[target].all()
        rows, cols = np.flatnonzero(prev.any(1)), np.flatnonzero(prev.any(0))
        assert prev.sum() == len(rows) * len(cols)  # a filled rectangle
        assert rows[0] >= 20 - 5 - 1 and rows[-1] <= 69 + 5 + 1 and cols[0] >= 30 - 6 - 1 and cols[-1] <= 89 + 6 + 1


def test_previous_mask_of_empty_mask_is_empty() -> None:
    for probability in (0.0, 1.0):
        empty = np.zeros((30, 40), np.float32)
        prev = deform_previous_mask(np.random.default_rng(0), empty, box_probability=probability)
        assert prev.dtype == np.float32 and prev.shape == (30, 40) and not prev.any()


def test_color_jitter_bounds() -> None:
    image = np.random.default_rng(3).random((32, 40, 3)).astype(np.float32)
    same = color_jitter(np.random.default_rng(0), image, 0.0, 0.0, 0.0, 0.0, 0.0)
    np.testing.assert_allclose(same, image, atol=1e-5)
    for seed in range(10):
        out = color_jitter(np.random.default_rng(seed), image)
        assert out.dtype == np.float32 and out.shape == image.shape and out.min() >= 0.0 and out.max() <= 1.0
        assert 0.003 < np.abs(out - image).mean() < 0.25
    again = color_jitter(np.random.default_rng(4), image)
    np.testing.assert_array_equal(color_jitter(np.random.default_rng(4), image), again)


def test_paste_object_keeps_object_and_uses_background() -> None:
    image = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    mask = _disc((40, 50), (20, 25), 10)
    background = np.zeros((90, 70, 3), np.float32) + np.array([0.2, 0.4, 0.6], np.float32)
    out = paste_object(np.random.default_rng(1), image, mask, background)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[mask], image[mask])
    np.testing.assert_allclose(out[~mask], np.broadcast_to(background[0, 0], out[~mask].shape), atol=1e-6)


def test_no_global_random_state_is_used() -> None:
    state = np.random.get_state()[1].copy()
    rng = np.random.default_rng(0)
    random_geometric_transform(rng, (32, 32))
    deform_previous_mask(rng, _disc((32, 32), (16, 16), 8))
    color_jitter(rng, np.zeros((8, 8, 3)))
    np.testing.assert_array_equal(np.random.get_state()[1], state)
