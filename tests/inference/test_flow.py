"""Optical flow, warping along it, the flow-guided engine and the non-learned baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from benchmarks.baselines import copy_propagation, flow_propagation, main as baselines_main
from rgmp_model import PropagationSession, build_rgmp
from rgmp_model.inference.flow import dense_flow, grey, warp_along_flow
from rgmp_model.io.label_io import open_label_stack, write_palette_png
from rgmp_model.eval.metrics import evaluate_sequence

H, W, STEP = 64, 80, 2


def moving_square(num_frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A textured square moving STEP px right per frame over a smooth, static textured background:
    frames (T, H, W, 3) uint8 and labels (T, H, W) uint8."""
    rng = np.random.default_rng(0)
    background = ndimage.gaussian_filter(rng.random((H, W)), 3)
    background = (background - background.min()) / np.ptp(background) * 0.5
    patch = 0.5 + 0.5 * ndimage.gaussian_filter(rng.random((20, 20)), 1.5)
    patch = (patch - patch.min()) / np.ptp(patch) * 0.5 + 0.5
    frames, labels = [], []
    for t in range(num_frames):
        image, label = background.copy(), np.zeros((H, W), np.uint8)
        x = 10 + STEP * t
        image[20:40, x : x + 20], label[20:40, x : x + 20] = patch, 3
        frames.append(np.repeat((image * 255).astype(np.uint8)[..., None], 3, axis=-1))
        labels.append(label)
    return np.stack(frames), np.stack(labels)


def test_grey_accepts_channel_orders_and_rejects_other_shapes():
    rgb = np.random.default_rng(0).random((6, 7, 3)).astype(np.float32)
    assert np.allclose(grey(rgb), grey(torch.from_numpy(rgb).permute(2, 0, 1)))
    assert grey(rgb[..., 0]).shape == (6, 7)
    with pytest.raises(ValueError, match="image"):
        grey(np.zeros((6, 7, 2)))


def test_flow_points_from_the_current_frame_back_to_the_previous_one():
    frames, _ = moving_square(2)
    flow = dense_flow(grey(frames[1] / 255.0), grey(frames[0] / 255.0), "tvl1")
    assert flow.shape == (2, H, W)
    inside = flow[:, 24:36, 10 + STEP + 4 : 10 + STEP + 16]
    assert np.median(inside[1]) == pytest.approx(-STEP, abs=0.5)  # the square came from the left
    assert abs(np.median(inside[0])) < 0.5


def test_flow_rejects_bad_input():
    with pytest.raises(ValueError, match="tvl1"):
        dense_flow(np.zeros((4, 4)), np.zeros((4, 4)), "farneback")
    with pytest.raises(ValueError, match="one shape"):
        dense_flow(np.zeros((4, 4)), np.zeros((4, 5)))


def test_warp_moves_values_along_a_known_flow_and_keeps_probabilities():
    values = torch.zeros(2, 10, 12)
    values[0, 2:5, 3:6] = 1.0
    values[1] = 1.0 - values[0]
    flow = np.zeros((2, 10, 12), np.float32)
    flow[1] = -2.0  # every pixel came from 2 columns to the left: content moves right by 2
    moved = warp_along_flow(values, flow)
    assert torch.equal(moved[0] > 0.5, torch.roll(values[0] > 0.5, 2, dims=1))
    assert torch.allclose(moved.sum(0), torch.ones(10, 12))
    with pytest.raises(ValueError, match="flow must be"):
        warp_along_flow(values, flow[:, :5])


def test_copy_baseline_repeats_the_keyframe():
    frames, labels = moving_square(5)
    out = {t: lab for t, lab, _ in copy_propagation(frames, 2, labels[2], "both")}
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert all(np.array_equal(lab, labels[2]) for lab in out.values())


def test_flow_baseline_tracks_a_moving_square_where_copying_fails():
    frames, labels = moving_square(8)
    results = list(flow_propagation(frames, 0, labels[0], "forward", max_size=None))
    assert [t for t, _, _ in results] == list(range(8))
    predicted = np.stack([lab for _, lab, _ in results])
    assert predicted.dtype == labels.dtype and set(np.unique(predicted)) == {0, 3}
    tracked = evaluate_sequence(predicted, labels).j_mean
    copied = evaluate_sequence(np.repeat(labels[:1], 8, axis=0), labels).j_mean
    assert tracked > 0.85 and tracked > copied + 0.3
    backward = {t: lab for t, lab, _ in flow_propagation(frames, 7, labels[7], "backward", max_size=None)}
    assert evaluate_sequence(np.stack([backward[t] for t in range(8)]), labels).j_mean > 0.85


def test_baselines_cli_writes_the_same_format_as_rgmp_propagate(tmp_path, capsys):
    frames, labels = moving_square(4)
    import tifffile

    tifffile.imwrite(tmp_path / "frames.tif", frames, photometric="rgb")
    write_palette_png(tmp_path / "key.png", labels[0])
    for name in ("copy", "flow"):
        out = tmp_path / f"{name}.tif"
        assert baselines_main([name, str(tmp_path / "frames.tif"), "--labels", str(tmp_path / "key.png"),
                               "--out", str(out), "--max-size", "64"]) == 0
        written = np.asarray(open_label_stack(out))
        assert written.shape == labels.shape and np.array_equal(written[0], labels[0])
    assert "frames/s" in capsys.readouterr().out
    assert baselines_main(["copy", str(tmp_path / "missing.tif"), "--labels", str(tmp_path / "key.png"),
                           "--out", str(tmp_path / "x.tif")]) == 2


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_rgmp("resnet18", 16)


def test_flow_guidance_warps_the_previous_mask_before_the_network(model, monkeypatch):
    frames, labels = moving_square(4)
    seen = []

    plain = PropagationSession(model, frames, device="cpu")
    plain.add_keyframe(0, labels[0])
    guided = PropagationSession(model, frames, device="cpu", flow="tvl1")
    guided.add_keyframe(0, labels[0])
    step = guided.propagator.step

    def spy(reference, previous, frame):
        seen.append(previous.clone())
        return step(reference, previous, frame)

    monkeypatch.setattr(guided.propagator, "step", spy)
    out = {t: lab for t, lab, _ in guided.propagate("forward")}
    assert sorted(out) == [0, 1, 2, 3]
    # The first previous mask is the keyframe's, moved STEP px to the right along the flow.
    first = seen[0][0] > 0.5
    expected = torch.from_numpy(labels[1] == 3)
    assert (first & expected).sum() / (first | expected).sum() > 0.8
    plain_out = {t: lab for t, lab, _ in plain.propagate("forward")}
    assert not all(np.array_equal(out[t], plain_out[t]) for t in range(1, 4))


def test_flow_guidance_options_are_checked(model):
    frames, _ = moving_square(2)
    with pytest.raises(ValueError, match="flow must be"):
        PropagationSession(model, frames, device="cpu", flow="farneback")
    with pytest.raises(ValueError, match="authors' procedure"):
        PropagationSession(model, frames, device="cpu", flow="tvl1", mode="official")
