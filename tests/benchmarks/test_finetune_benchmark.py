"""benchmarks/finetune.py: J&F before and after fine-tuning on frame 0, in one table."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from benchmarks import finetune
from benchmarks.accuracy import EvalSequence
from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout


def test_only_frame_0_is_given_to_fine_tuning() -> None:
    seq = synthetic_video(num_frames=5, height=32, width=48, num_objects=2, seed=1)
    labels = finetune.first_frame_labels(EvalSequence("s", seq.frames, seq.labels))
    assert labels.shape == seq.labels.shape and labels.dtype == seq.labels.dtype
    np.testing.assert_array_equal(labels[0], seq.labels[0])
    assert labels[0].any() and not labels[1:].any()


def test_table_and_fine_tuned_checkpoints(tmp_path, capsys) -> None:
    root = tmp_path / "davis"
    seq = synthetic_video(num_frames=5, height=40, width=72, num_objects=1, seed=3)
    save_davis_layout(dataclasses.replace(seq, name="tiny"), root)
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path / "base.pt", build_rgmp("resnet18", 8), {"working_size": 64})
    out = tmp_path / "tuned"
    code = finetune.main([str(root), "tiny", "--checkpoint", str(base), "--iterations", "2", "--lr", "1e-3",
                          "--crop-size", "64", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fine-tuning 2 iterations, lr 0.001, batch 4, crop 64 px on frame 0; working size 64" in printed
    row = next(line.split() for line in printed.splitlines() if line.startswith("tiny "))
    before, after, gain = float(row[1]), float(row[2]), float(row[3])
    assert 0 <= before <= 1 and 0 <= after <= 1 and abs(after - before - gain) < 2e-3
    info = load_checkpoint(out / "tiny.pt")[1]
    assert info.metadata["frames_used"] == [0] and info.metadata["iterations"] == 2
    assert "command: python benchmarks/finetune.py" in printed
