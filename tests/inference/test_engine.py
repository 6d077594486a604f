"""The propagation engine: official mode, batched soft aggregation, keyframes, directions,
ids, input types and errors. Random weights, tiny frames, CPU."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from tests.helpers.authors_reference import infer_mo, pad_like_dataset, randomize_
from rgmp_model import PropagationSession, build_rgmp, propagate
from rgmp_model.inference.engine import plan_stretches
from rgmp_model.inference.propagators import soft_aggregate

H, W = 40, 56


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize_(build_rgmp("resnet18", 16), seed=1)


def textured_frames(t: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((H + 2 * t, W + 2 * t, 3))
    return np.stack([(base[i : i + H, 2 * i : 2 * i + W] * 255).astype(np.uint8) for i in range(t)])


def two_objects(dtype=np.int32, ids=(1, 2)) -> np.ndarray:
    labels = np.zeros((H, W), dtype)
    labels[5:20, 4:24] = ids[0]
    labels[22:36, 30:52] = ids[1]
    return labels


def run(session: PropagationSession, direction: str = "forward", **kwargs):
    out = {}
    probabilities = {}
    for t, labels, confidence in session.propagate(direction, keep_probabilities=True, **kwargs):
        out[t] = (labels, confidence)
        probabilities[t] = session.last_probabilities.copy()
    return out, probabilities


@pytest.mark.parametrize("num_objects, object_batch", [(1, None), (3, None), (3, 4)])
def test_official_mode_equals_the_authors_procedure(model, num_objects, object_batch) -> None:
    frames = textured_frames(4)
    labels = np.zeros((H, W), np.uint8)
    labels[4:18, 6:26] = 1
    if num_objects == 3:
        labels[20:34, 30:50] = 2
        labels[26:38, 4:20] = 3
    session = PropagationSession(model, frames, mode="official", device="cpu", object_batch=object_batch)
    session.add_keyframe(0, labels)
    _, ours = run(session)

    f = torch.from_numpy(frames).float().div(255).permute(0, 3, 1, 2)
    m = torch.from_numpy(np.stack([labels == k for k in range(1, num_objects + 1)])).float()
    padded_f, padded_m, ((lh, uh), (lw, uw)) = pad_like_dataset(f, m)
    assert padded_f.shape[-2:] == (64, 64)  # 40 -> 64 and 56 -> 64: the authors always add
    expected = infer_mo(model, padded_f, padded_m)[:, :, lh : lh + H, lw : lw + W]
    for t in range(1, 4):
        np.testing.assert_allclose(ours[t], expected[:, t].numpy(), atol=1e-5, rtol=0)
    # the probabilities are informative (not all saturated), so the comparison means something
    informative = ((expected[1:, 1:] > 0.05) & (expected[1:, 1:] < 0.95)).float().mean().item()
    assert informative > 0.02


@pytest.mark.parametrize("object_batch", [3, None])
def test_batched_soft_aggregation_equals_per_object_computation(model, object_batch) -> None:
    frames = textured_frames(3)
    labels = two_objects()
    labels[30:38, 2:10] = 3
    session = PropagationSession(model, frames, device="cpu", object_batch=object_batch)
    session.add_keyframe(0, labels)
    _, batched = run(session)

    fr = torch.from_numpy(frames).float().div(255).permute(0, 3, 1, 2)
    pad = (4, 4, 12, 12)  # 40x56 -> 64x64 (the next multiples of 32), centred
    padded = torch.nn.functional.pad(fr, pad)
    masks = [torch.from_numpy(labels == k).float() for k in (1, 2, 3)]
    with torch.no_grad():
        refs = [model.encode(padded[:1], torch.nn.functional.pad(m, pad)[None]).r5 for m in masks]
        previous = masks
        for t in (1, 2):
            per_object = []
            for ref, prev in zip(refs, previous):  # one object at a time
                logits = model.decode(model.encode(padded[t : t + 1], torch.nn.functional.pad(prev, pad)[None]), ref).logits
                per_object.append(torch.softmax(logits, 1)[0, 1, 12:-12, 4:-4])
            p = torch.stack(per_object)
            background = torch.prod(1 - p, 0, keepdim=True)
            q = torch.cat([background, p]).clamp(1e-7, 1 - 1e-7)
            aggregated = torch.softmax(torch.log(q / (1 - q)), 0)
            np.testing.assert_allclose(batched[t], aggregated.numpy(), atol=1e-5, rtol=0)
            previous = list(aggregated[1:])


def test_soft_aggregate_sums_to_one_and_keeps_order() -> None:
    p = torch.tensor([[[0.9, 0.1]], [[0.2, 0.05]]])
    out = soft_aggregate(p)
    torch.testing.assert_close(out.sum(0), torch.ones(1, 2))
    assert out[1, 0, 0] > out[2, 0, 0] and out[0, 0, 1] > out[1, 0, 1]


@pytest.mark.parametrize("object_batch, calls_per_step", [(2, 1), (None, 2)])
def test_reference_is_encoded_once_per_object_and_scale(model, monkeypatch, object_batch, calls_per_step) -> None:
    calls = []
    original = model.encode
    monkeypatch.setattr(model, "encode", lambda f, m: calls.append(tuple(m.shape)) or original(f, m))
    session = PropagationSession(model, textured_frames(5), multiscale=True, device="cpu", object_batch=object_batch)
    session.add_keyframe(2, two_objects())
    list(session.propagate("both"))
    # 3 scales x (1 reference + 4 propagated frames); both objects in one batch, or (the CPU
    # default) one object per call
    assert len(calls) == 3 * (1 + 4) * calls_per_step
    assert all(shape[0] == 2 // calls_per_step for shape in calls)


def test_keyframes_are_never_changed_and_directions(model) -> None:
    frames = textured_frames(9)
    first, second = two_objects(), two_objects(ids=(2, 5))
    session = PropagationSession(model, frames, device="cpu")
    session.add_keyframe(2, first)
    session.add_keyframe(6, second)
    forward, _ = run(session, "forward")
    assert sorted(forward) == [2, 3, 4, 5, 6, 7, 8]
    backward, _ = run(session, "backward")
    assert sorted(backward) == [0, 1, 2, 3, 4, 5, 6]
    both, _ = run(session, "both")
    assert sorted(both) == list(range(9))
    for out in (forward, backward, both):
        np.testing.assert_array_equal(out[2][0], first)
        np.testing.assert_array_equal(out[6][0], second)
    # frames 3 and 4 come from keyframe 2 (objects 1, 2), frame 5 from keyframe 6 (objects 2, 5)
    assert set(both[4][1]) == {1, 2} and set(both[5][1]) == {2, 5}
    assert set(np.unique(both[3][0])) <= {0, 1, 2} and set(np.unique(both[5][0])) <= {0, 2, 5}
    # backward propagation from keyframe 2 reaches frames 1 and 0 in that order
    order = [t for t, _, _ in session.propagate("backward")]
    assert order.index(1) < order.index(0)


def test_plan_assigns_each_frame_to_its_nearest_keyframe() -> None:
    plan = plan_stretches([0, 5, 9], 12, "both")
    assert [(s.keyframe, s.backward, s.forward) for s in plan] == [
        (0, (), (1, 2)),
        (5, (4, 3), (6, 7)),  # 7 is 2 from 5 and 2 from 9: ties go forward
        (9, (8,), (10, 11)),
    ]
    assert plan_stretches([3], 6, "backward")[0].backward == (2, 1, 0)
    assert plan_stretches([3], 6, "forward")[0].backward == ()


@pytest.mark.parametrize("ids", [(7, 300), (300, 2**40)])
def test_original_ids_are_preserved(model, ids) -> None:
    frames = textured_frames(3)
    labels = two_objects(np.int64, ids)
    session = PropagationSession(model, frames, device="cpu")
    session.add_keyframe(0, labels)
    out, probabilities = run(session)
    for t, (result, confidence) in out.items():
        assert result.dtype == np.int64
        assert set(np.unique(result)) <= {0, *ids} and set(confidence) == set(ids)
        # labels are the argmax of the probabilities, mapped back to the ids
        lookup = np.array([0, *sorted(ids)])
        np.testing.assert_array_equal(result, lookup[probabilities[t].argmax(0)])
    assert list(session.object_ids) == sorted(ids)


def test_uint64_ids_beyond_int64(model) -> None:
    labels = two_objects(np.uint64, (7, 2**63))
    out, _ = run(_session(model, textured_frames(2), labels))
    assert out[1][0].dtype == np.uint64 and set(out[0][1]) == {7, 2**63}


def _session(model, frames, labels, **kwargs) -> PropagationSession:
    session = PropagationSession(model, frames, device="cpu", **kwargs)
    session.add_keyframe(0, labels)
    return session


def test_input_types_give_the_same_network_input(model) -> None:
    rgb = textured_frames(3)
    grey8 = rgb[..., 0]
    labels = two_objects()
    reference, _ = run(_session(model, grey8, labels))
    # grey uint16 whose 0.5/99.5 percentiles map to the uint8 range: same labels
    grey16 = grey8.astype(np.uint16) * 200 + 1000
    lo, hi = np.percentile(grey16, (0.5, 99.5))
    assert PropagationSession(model, grey16, device="cpu").frames.low == pytest.approx(lo)
    as_float = grey8.astype(np.float32) / 7.0
    dask_frames = da.from_array(grey8, chunks=(1, H, W))
    channel_last = grey8[..., None]
    for frames in (grey16, as_float, dask_frames, channel_last):
        out, _ = run(_session(model, frames, labels))
        assert sorted(out) == [0, 1, 2]
        for t in out:
            assert out[t][0].shape == (H, W)
    out, _ = run(_session(model, dask_frames, labels))
    for t in out:
        np.testing.assert_array_equal(out[t][0], reference[t][0])
    out, _ = run(_session(model, channel_last, labels))
    for t in out:
        np.testing.assert_array_equal(out[t][0], reference[t][0])


def test_stack_normalisation_uses_percentiles(model) -> None:
    frames = np.full((2, H, W), 100, np.uint16)
    frames[:, :, W // 2 :] = 5000
    session = PropagationSession(model, frames, device="cpu")
    image = session.frames[0]
    assert image.shape == (H, W, 3) and image.dtype == np.float32
    assert image[0, 0, 0] == 0.0 and image[0, -1, 0] == 1.0


def test_errors_say_what_is_wrong(model) -> None:
    frames = textured_frames(3)
    session = PropagationSession(model, frames, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        session.add_keyframe(0, np.zeros((H, W), np.int32))
    with pytest.raises(ValueError, match=r"shape \(40, 50\) but the frames are \(40, 56\)"):
        session.add_keyframe(0, np.ones((H, 50), np.int32))
    with pytest.raises(ValueError, match="dtype float32: labels must be integer ids"):
        session.add_keyframe(0, np.ones((H, W), np.float32))
    with pytest.raises(ValueError, match="no keyframe"):
        list(session.propagate())
    with pytest.raises(ValueError, match="no labels on any frame"):
        session.add_keyframes_from_stack(np.zeros((3, H, W), np.uint8))
    with pytest.raises(ValueError, match=r"label stack has shape \(2, 40, 56\)"):
        session.add_keyframes_from_stack(np.zeros((2, H, W), np.uint8))
    with pytest.raises(ValueError, match="not a numeric image type"):
        PropagationSession(model, np.full((2, H, W), "a"), device="cpu")
    with pytest.raises(ValueError, match="not a numeric image type"):
        PropagationSession(model, np.zeros((2, H, W), bool), device="cpu")
    with pytest.raises(ValueError, match="expected \\(T, H, W\\)"):
        PropagationSession(model, np.zeros((H, W), np.uint8), device="cpu")
    with pytest.raises(ValueError, match="channels last"):
        PropagationSession(model, np.zeros((2, 3, H, W), np.uint8), device="cpu")
    with pytest.raises(ValueError, match="direction"):
        session.add_keyframe(0, two_objects())
        list(session.propagate("sideways"))
    with pytest.raises(ValueError, match="negative"):
        session.add_keyframe(1, -two_objects())
    with pytest.raises(ValueError, match="outside the stack"):
        session.add_keyframe(3, two_objects())


def test_one_frame_stack_returns_its_labels(model) -> None:
    labels = two_objects(np.uint16, (3, 9))
    results = list(propagate(model, textured_frames(1), labels, device="cpu", direction="both"))
    assert len(results) == 1
    t, out, confidence = results[0]
    assert t == 0 and out.dtype == np.uint16 and confidence == {3: 1.0, 9: 1.0}
    np.testing.assert_array_equal(out, labels)


def test_keyframes_from_a_label_stack_and_input_not_modified(model) -> None:
    frames = textured_frames(5)
    stack = np.zeros((5, H, W), np.int32)
    stack[1] = two_objects()
    stack[4] = two_objects(ids=(1, 3))
    frames_copy, stack_copy = frames.copy(), stack.copy()
    session = PropagationSession(model, frames, device="cpu")
    assert session.add_keyframes_from_stack(stack) == [1, 4]
    results = {t: labels for t, labels, _ in session.propagate("both")}
    assert sorted(results) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(frames, frames_copy)
    np.testing.assert_array_equal(stack, stack_copy)


def test_max_size_works_at_low_resolution_and_returns_full_size(model) -> None:
    frames = np.repeat(np.repeat(textured_frames(3), 4, axis=1), 4, axis=2)  # 160 x 224
    labels = np.repeat(np.repeat(two_objects(), 4, axis=0), 4, axis=1)
    session = _session(model, frames, labels, max_size=64)
    assert session.working_size == (46, 64)
    out, probabilities = run(session)
    assert out[2][0].shape == (160, 224) and probabilities[2].shape == (3, 160, 224)
    np.testing.assert_allclose(probabilities[2].sum(0), 1.0, atol=1e-5)


def test_progress_callback_and_early_stop(model) -> None:
    progress = []
    session = _session(model, textured_frames(6), two_objects())
    generator = session.propagate("forward", on_progress=lambda done, total: progress.append((done, total)))
    for t, _, _ in generator:
        if t == 2:
            break
    assert progress == [(1, 6), (2, 6), (3, 6)]


def test_confidence_is_mean_probability_of_the_labelled_pixels(model) -> None:
    session = _session(model, textured_frames(2), two_objects())
    out, probabilities = run(session)
    labels, confidence = out[1]
    for channel, object_id in enumerate((1, 2), start=1):
        region = labels == object_id
        expected = probabilities[1][channel][region].mean() if region.any() else 0.0
        assert confidence[object_id] == pytest.approx(expected, abs=1e-6)


def test_device_and_precision_errors(model) -> None:
    frames = textured_frames(2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            PropagationSession(model, frames, device="cuda")
    with pytest.raises(ValueError, match="only used on CUDA"):
        PropagationSession(model, frames, device="cpu", precision="bf16")
    with pytest.raises(ValueError, match="unknown device"):
        PropagationSession(model, frames, device="gpu-please")


@pytest.mark.gpu
def test_cuda_autocast_matches_fp32(model) -> None:
    frames, labels = textured_frames(3), two_objects()
    _, p32 = run(_cuda(model, frames, labels, "fp32"))
    _, p16 = run(_cuda(model, frames, labels, "bf16"))
    for t in p32:
        assert np.abs(p32[t] - p16[t]).max() < 0.1


def _cuda(model, frames, labels, precision) -> PropagationSession:
    session = PropagationSession(model, frames, device="cuda", precision=precision)
    session.add_keyframe(0, labels)
    return session


def test_propagating_from_a_new_keyframe_changes_only_its_stretch(model) -> None:
    frames = textured_frames(9)
    session = PropagationSession(model, frames, device="cpu")
    session.add_keyframe(0, two_objects())
    session.add_keyframe(8, two_objects())
    before = {t: labels for t, labels, _ in session.propagate("both")}
    correction = np.roll(before[4], 3, axis=1)
    correction[:4, :4] = 2
    session.add_keyframe(4, correction)
    partial = {t: labels for t, labels, _ in session.propagate("both", from_keyframes=[4])}
    assert sorted(partial) == [3, 4, 5, 6]  # 2 stays with keyframe 0 (tie to the earlier), 7 with 8
    full = {t: labels for t, labels, _ in session.propagate("both")}
    for t in range(9):
        expected = full[t]
        np.testing.assert_array_equal(partial.get(t, before[t]), expected)
    np.testing.assert_array_equal(partial[4], correction)
    with pytest.raises(ValueError, match=r"frames \[5\] are not keyframes"):
        list(session.propagate("both", from_keyframes=[5]))


def test_box_keyframe_is_refined_inside_the_boxes(model) -> None:
    frames = textured_frames(4)
    boxes = np.zeros((H, W), np.uint16)
    boxes[4:20, 4:26] = 7
    boxes[22:38, 28:54] = 300
    session = PropagationSession(model, frames, device="cpu")
    refined = session.add_box_keyframe(1, boxes)
    assert refined.dtype == np.uint16 and set(np.unique(refined)) <= {0, 7, 300}
    assert set(np.unique(refined)) >= {7, 300}  # every object is kept (its box at worst)
    assert not ((refined == 7) & (boxes != 7)).any() and not ((refined == 300) & (boxes != 300)).any()
    assert session.keyframes == (1,)
    out = {t: labels for t, labels, _ in session.propagate("both")}
    np.testing.assert_array_equal(out[1], refined)
    assert sorted(out) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="no box on frame 2"):
        session.add_box_keyframe(2, np.zeros((H, W), np.uint8))
