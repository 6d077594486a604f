"""Small objects keep their pixels: when the model's recorded working size applies, a keyframe whose
median object would be under SMALL_OBJECT_SIDE px gets a larger working size (up to full size and
SMALL_OBJECT_CEILING px); a size the user chose, or one an out-of-memory retry took, is kept.
Random weights, generated labels, CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rgmp_model import PropagationOptions, build_rgmp, open_session, save_checkpoint
from rgmp_model.inference.labels import object_sides
from rgmp_model.inference.options import (
    SMALL_OBJECT_CEILING, SMALL_OBJECT_SIDE, object_working_size, working_size,
)


def discs(height: int, width: int, diameter: int, count: int) -> np.ndarray:
    """(H, W) labels: ``count`` discs of ``diameter`` px on a grid, ids 1..count (sparse ids x 7)."""
    labels = np.zeros((height, width), np.uint16)
    yy, xx = np.mgrid[:height, :width]
    first, step = diameter // 2 + 2, diameter + 4
    centres = [(y, x) for y in range(first, height - first + 1, step) for x in range(first, width - first + 1, step)][:count]
    assert len(centres) == count
    for k, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= (diameter / 2) ** 2] = 7 * k
    return labels


def test_object_sides_are_the_longer_sides_of_the_boxes() -> None:
    labels = np.zeros((50, 60), np.uint32)
    labels[5:15, 10:40] = 4_000_000_000  # a large id: no table as long as the id
    labels[30:48, 2:6] = 3
    assert sorted(object_sides(labels)) == [18, 30]
    assert object_sides(np.zeros((8, 8), np.uint8)) == []


@pytest.mark.parametrize(("shape", "bound", "sides", "expected"), [
    ((512, 512), 384, [15] * 10, (512, 512)),      # small nuclei: full size (512 <= the ceiling)
    ((480, 854), 384, [200, 150], (216, 384)),     # large objects: the recorded size
    ((480, 854), 384, [20], (288, 512)),           # small objects in a wide frame: up to the ceiling
    ((1024, 1024), 384, [30] * 5, (512, 512)),     # larger frames: the ceiling (region mode takes those)
    ((256, 256), 384, [8], (256, 256)),            # already full size
    ((512, 512), 384, [], (384, 384)),             # no objects: the recorded size
    ((480, 854), 384, [40], (288, 512)),           # 40 px -> 18 px at 384: just large enough, capped
    ((960, 960), 384, [60], (512, 512)),           # 60 -> 24 px: 512 px makes 32
    ((960, 960), 384, [80], (384, 384)),           # 80 -> 32 px at 384: enough already
])
def test_the_working_size_grows_only_for_small_objects(shape, bound, sides, expected) -> None:
    size = object_working_size(*shape, bound, sides)
    assert size == expected
    assert max(size) >= max(working_size(*shape, bound))  # never smaller than the bound's size
    assert max(size) <= max(max(working_size(*shape, bound)), SMALL_OBJECT_CEILING)


def test_just_large_enough_for_the_median_object() -> None:
    # median 40 px on a 1200 px frame: 40 * 384 / 1200 = 12.8 px; 32 px needs 960 -> the ceiling
    assert object_working_size(600, 1200, 384, [40, 40, 400]) == working_size(600, 1200, SMALL_OBJECT_CEILING)
    # median 100 px on 1200: 32 px at 384 exactly -> unchanged; 90 px: 427 px, just over 32 px
    assert object_working_size(600, 1200, 384, [100]) == (192, 384)
    size = object_working_size(600, 1200, 384, [90])
    assert 90 * max(size) / 1200 >= SMALL_OBJECT_SIDE > 90 * (max(size) - 2) / 1200


@pytest.fixture
def sized_checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "sized.pt", build_rgmp("resnet18", 8), {"recipe": "test", "working_size": 64})


def test_a_session_fits_the_working_size_to_its_keyframes(sized_checkpoint) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (3, 96, 96), dtype=np.uint8)
    cpu = PropagationOptions(device="cpu")
    session = open_session(sized_checkpoint, frames, cpu)
    assert session.working_size == (64, 64)  # no keyframe yet: the recorded size
    session.add_keyframe(0, discs(96, 96, 12, 4))  # 12 px -> 8 px at 64: full size (96 < the ceiling)
    assert session.working_size == (96, 96)
    results = list(session.propagate())
    assert [t for t, _, _ in results] == [0, 1, 2] and all(labels.shape == (96, 96) for _, labels, _ in results)
    session.add_keyframe(0, discs(96, 96, 60, 1))  # one large object: back to the recorded size
    assert session.working_size == (64, 64)
    assert [t for t, _, _ in session.propagate()] == [0, 1, 2]  # the reference is encoded again at 64
    session.add_keyframe(2, discs(96, 96, 12, 9))  # the median over all keyframes' objects is small
    assert session.working_size == (96, 96)
    session.remove_keyframe(2)
    assert session.working_size == (64, 64)


def test_a_chosen_size_and_an_out_of_memory_limit_are_kept(sized_checkpoint) -> None:
    frames = np.random.default_rng(1).integers(0, 255, (2, 96, 96), dtype=np.uint8)
    small = discs(96, 96, 12, 4)
    chosen = open_session(sized_checkpoint, frames, PropagationOptions(device="cpu", max_size=64))
    chosen.add_keyframe(0, small)
    assert chosen.working_size == (64, 64)  # the user's bound, as given
    network = open_session(build_rgmp("resnet18", 8), frames, PropagationOptions(device="cpu", max_size=None))
    network.add_keyframe(0, small)
    assert network.working_size == (96, 96)  # a network records no size: full size already
    limited = open_session(sized_checkpoint, frames, PropagationOptions(device="cpu"))
    limited.working.limit_to((48, 48))  # as a retry at a smaller working size leaves it
    limited.add_keyframe(0, small)
    assert limited.working_size == (48, 48)


def test_each_keyframe_is_measured_once(sized_checkpoint, monkeypatch) -> None:
    """A stack labelled on many frames: the objects of each are measured once, not again for every
    keyframe added after it."""
    from rgmp_model.inference import working_size

    calls = []
    monkeypatch.setattr(working_size, "object_sides", lambda labels: calls.append(1) or object_sides(labels))
    frames = np.zeros((12, 96, 96), np.uint8)
    stack = np.stack([discs(96, 96, 12, 4)] * 12)
    session = open_session(sized_checkpoint, frames, PropagationOptions(device="cpu"))
    assert session.add_keyframes_from_stack(stack) == list(range(12))
    assert len(calls) == 12 and session.working_size == (96, 96)
    session.add_keyframe(3, stack[3])  # the same labels again: nothing to measure
    assert len(calls) == 12
