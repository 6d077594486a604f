"""Label helpers of rgmp_model.inference.labels."""

from __future__ import annotations

import numpy as np
import pytest

from rgmp_model.inference.labels import labelled_frames


class _CountingStack:
    """A lazy (T, H, W) stack that records which frames were read, and how."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.reads: list[object] = []

    def __getitem__(self, index):
        self.reads.append(index)
        return self.array[index]


def test_labelled_frames_lists_frames_with_any_label() -> None:
    labels = np.zeros((5, 4, 6), np.uint16)
    labels[1, 0, 0] = 3
    labels[4, 3, 5] = 65535
    assert labelled_frames(labels) == (1, 4)
    assert labelled_frames(np.zeros((3, 2, 2), np.int32)) == ()
    assert labelled_frames(labels.astype(bool)) == (1, 4)


def test_labelled_frames_reads_one_frame_at_a_time() -> None:
    array = np.zeros((4, 3, 3), np.int32)
    array[2, 1, 1] = 7
    stack = _CountingStack(array)
    assert labelled_frames(stack) == (2,)
    assert stack.reads == [0, 1, 2, 3]


def test_labelled_frames_works_on_dask_arrays() -> None:
    da = pytest.importorskip("dask.array")
    array = np.zeros((3, 8, 8), np.uint8)
    array[0, 2, 2] = 1
    assert labelled_frames(da.from_array(array, chunks=(1, 8, 8))) == (0,)


def test_rgmp_stride_is_the_padding_multiple() -> None:
    from rgmp_model.constants import NETWORK_STRIDE
    from rgmp_model.inference.propagators import PAD_MULTIPLE
    from rgmp_model.nn.network import RGMP

    assert RGMP.stride == NETWORK_STRIDE == PAD_MULTIPLE == 32
