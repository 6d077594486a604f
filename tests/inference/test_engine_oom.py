"""Out of memory in the engine (rgmp_model.inference.memory): one retry with less, said in the
session's notes; a second failure names the frame, the size and what to try, and the frames
yielded before it stay yielded (none twice). Out of memory is simulated on the CPU by making the
network (a LocalRuleModel) or a step raise torch's error once or twice."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tests.helpers.local_rule_model import LocalRuleModel
from rgmp_model import PropagationOptions, open_session
from rgmp_model.inference.full_frame import FullFrameRunner
from rgmp_model.inference.memory import MemoryRetryWarning, OutOfMemory, is_out_of_memory
from rgmp_model.inference.propagators import BatchedPropagator
from rgmp_model.inference.working_size import WorkingSize
from tests.helpers.shapes import disc

CPU_OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes."
FRAMES = 8


def moving_discs(shape=(96, 128)) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) float frames of two bright discs moving right; (H, W) keyframe labels of frame 0."""
    frames = np.zeros((FRAMES, *shape), np.float32)
    for t in range(FRAMES):
        frames[t][disc(shape, (30, 30 + 2 * t), 10)] = 1.0
        frames[t][disc(shape, (65, 80 + 2 * t), 12)] = 1.0
    labels = disc(shape, (30, 30), 10).astype(np.uint8) + 2 * disc(shape, (65, 80), 12).astype(np.uint8)
    return frames, labels


def session(**options):
    frames, labels = moving_discs()
    s = open_session(LocalRuleModel(), frames, PropagationOptions(device="cpu", **options))
    s.add_keyframe(0, labels)
    return s


def fail(monkeypatch, target, name: str, on_calls: set[int], error=lambda: RuntimeError(CPU_OOM)) -> list[int]:
    """``target.name`` raises ``error()`` on the calls numbered in ``on_calls`` (1-based)."""
    original, calls = getattr(target, name), [0]

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] in on_calls:
            raise error()
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, patched)
    return calls


def test_which_errors_are_out_of_memory() -> None:
    assert is_out_of_memory(RuntimeError(CPU_OOM))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(MemoryError("Unable to allocate 8.00 TiB for an array"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    assert not is_out_of_memory(OutOfMemory("the final word"))


def test_the_smaller_working_size_follows_the_one_rule() -> None:
    assert WorkingSize.smaller_than(480, 854, (480, 854)) == (360, 640)  # 854 * 3/4 = 640.5 -> 640
    assert WorkingSize.smaller_than(96, 128, (96, 128)) == (72, 96)
    assert WorkingSize.smaller_than(40, 40, (40, 40)) is None  # 30 px: below one network stride


def test_one_out_of_memory_step_is_retried_at_a_smaller_working_size(monkeypatch) -> None:
    expected = [t for t, _, _ in session().propagate()]
    s = session()
    assert s.working_size == (96, 128)
    calls = fail(monkeypatch, BatchedPropagator, "step", {4})
    with pytest.warns(MemoryRetryWarning, match="retried with a smaller working size 96x72"):
        results = list(s.propagate())
    assert [t for t, _, _ in results] == expected == list(range(FRAMES))  # each frame once
    assert calls[0] == FRAMES  # 7 steps + the retry
    assert s.working_size == (72, 96)
    assert s.notes == ["out of memory at frame 4 on cpu: retried with a smaller working size 96x72 (was 128x96)"]
    for t, labels, confidence in results:
        assert labels.shape == (96, 128) and set(confidence) == {1, 2}
        assert (labels == 1).sum() > 200 and (labels == 2).sum() > 300  # both objects still tracked


def test_a_second_out_of_memory_names_the_frame_and_what_to_try(monkeypatch) -> None:
    s = session()
    fail(monkeypatch, BatchedPropagator, "step", {4, 5})
    yielded = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MemoryRetryWarning)
        with pytest.raises(OutOfMemory) as error:
            for t, _, _ in s.propagate():
                yielded.append(t)
    assert yielded == [0, 1, 2, 3]  # kept by the caller
    message = str(error.value)
    assert message.startswith("out of cpu memory at frame 4 (working size 96x72 of 128x96 frames, 2 object(s))")
    assert "also after a retry with less: the frames finished before it are kept" in message
    assert "a smaller working size (--max-size 64, max_size=64)" in message
    assert "region mode for many small objects (--region on" in message
    assert isinstance(error.value, RuntimeError) and isinstance(error.value, MemoryError)


def test_out_of_memory_later_in_the_same_run_is_not_retried_again(monkeypatch) -> None:
    s = session()
    fail(monkeypatch, BatchedPropagator, "step", {2, 6})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MemoryRetryWarning)
        with pytest.raises(OutOfMemory, match="at frame 5 .*again after a retry with less at an earlier frame"):
            list(s.propagate())
    assert len(s.notes) == 1


def test_encoding_the_keyframe_and_the_full_size_result_are_guarded(monkeypatch) -> None:
    s = session()
    fail(monkeypatch, BatchedPropagator, "encode_reference", {1})
    with pytest.warns(MemoryRetryWarning):
        assert [t for t, _, _ in s.propagate()] == list(range(FRAMES))
    assert s.working_size == (72, 96)
    s = session()
    fail(monkeypatch, FullFrameRunner, "result", {3}, lambda: MemoryError("Unable to allocate 3.00 GiB for an array"))
    with pytest.warns(MemoryRetryWarning, match="at frame 3"):
        assert [t for t, _, _ in s.propagate()] == list(range(FRAMES))


def test_other_errors_are_not_retried(monkeypatch) -> None:
    s = session()
    calls = fail(monkeypatch, BatchedPropagator, "step", {2}, lambda: RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        list(s.propagate())
    assert calls[0] == 2 and s.notes == []


def test_region_mode_retries_with_one_crop_per_call_and_gives_the_same_labels(monkeypatch) -> None:
    expected = list(session(region="on", region_crop_size=64).propagate())
    s = session(region="on", region_crop_size=64)
    fail(monkeypatch, LocalRuleModel, "decode", {3})
    with pytest.warns(MemoryRetryWarning, match="one crop per network call in region mode"):
        results = list(s.propagate())
    assert [t for t, _, _ in results] == list(range(FRAMES))
    for (t, labels, _), (_, want, _) in zip(results, expected):
        np.testing.assert_array_equal(labels, want)


def test_the_cli_prints_the_note(tmp_path, checkpoint, monkeypatch, capsys) -> None:
    import tifffile

    from rgmp_model.cli import main

    frames, labels = moving_discs()
    tifffile.imwrite(tmp_path / "discs.tif", (frames * 200).astype(np.uint8))
    tifffile.imwrite(tmp_path / "discs_labels.tif", labels)
    fail(monkeypatch, BatchedPropagator, "step", {2})
    assert main(["propagate", str(tmp_path / "discs.tif"), "--labels", str(tmp_path / "discs_labels.tif"),
                 "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out.tif"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "rgmp propagate: note: out of memory at frame 2 on cpu: retried with a smaller working size" in err
    assert "MemoryRetryWarning" not in err  # said once, as a note
    assert tifffile.imread(tmp_path / "out.tif").shape == (FRAMES, 96, 128)
