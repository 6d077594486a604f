"""Every training stage end to end on synthetic data: pretrain, video, fine-tune, torchrun DDP.
Tiny networks and crops on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rgmp_model import PropagationSession, build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.eval.metrics import jaccard
from rgmp_model.data.synthetic import synthetic_video
from training.cli import main as train_main
from training.config import config_from_dict
from training.data import build_stage
from training.finetune import finetune_config, finetune_on_stack
from training.trainer import Trainer
from tests.helpers.tiny_training import tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("stage", ["pretrain", "video"])
def test_stage_runs_a_few_iterations_with_validation(tmp_path, stage) -> None:
    config = config_from_dict(tiny(stage, tmp_path))
    dataset, objective, validation = build_stage(config)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    expected = {"pretrain": {"reference_frame", "reference_mask", "frame", "mask", "previous_mask"},
                "video": {"frames", "labels", "object_valid", "num_objects"}}[stage]
    assert set(batch) == expected
    assert len(validation) == 1
    trainer = Trainer(config, dataset, objective, validation_sequences=validation, show_progress=False)
    path = trainer.fit()
    assert trainer.history.iteration == 3 and all(np.isfinite(loss) for _, loss in trainer.history.losses)
    assert [it for it, _ in trainer.history.validation] == [2]
    assert 0.0 <= trainer.history.validation[0][1] <= 1.0
    assert (tmp_path / "validation.csv").read_text().count("overall") == 1
    model, info = load_checkpoint(path)
    assert info.metadata["recipe"] == stage and info.metadata["iterations"] == 3
    assert info.metadata["data"] == ["synthetic_video", "synthetic_microscopy"]


def test_cli_runs_a_stage_from_a_yaml_file(tmp_path, capsys) -> None:
    config_path = tmp_path / "pretrain.yaml"
    config_path.write_text(yaml.safe_dump(tiny("pretrain", tmp_path / "run", validation={"sources": []})))
    assert train_main(["pretrain", "--config", str(config_path), "optim.iterations=2"]) == 0
    assert "checkpoint:" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "model.pt")[1].metadata["iterations"] == 2
    assert train_main(["pretrain", "--config", str(config_path), "optim.nope=2"]) == 2
    assert "unknown config key optim.nope" in capsys.readouterr().err


def test_torchrun_two_ranks_with_gloo_end_with_identical_weights(tmp_path) -> None:
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(tiny("pretrain", tmp_path / "run", iterations=3, validation={"sources": []})))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "training.cli", "pretrain", "--config", str(config_path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = [(tmp_path / "run" / f"weights_rank{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    model, info = load_checkpoint(tmp_path / "run" / "model.pt")
    assert info.metadata["iterations"] == 3
    # the ranks trained (the weights moved away from the identical initialisation)
    torch.manual_seed(0)
    initial = build_rgmp("resnet18", 8)
    assert not torch.equal(model.decoder.pred2.weight, initial.decoder.pred2.weight)


def _mean_j(model, frames, labels, annotated) -> float:
    session = PropagationSession(model, frames, device="cpu")
    for t in annotated:
        session.add_keyframe(t, labels[t])
    scores = []
    for t, predicted, _ in session.propagate("both"):
        if t in annotated:
            continue
        for object_id in np.unique(labels[t])[1:]:
            scores.append(jaccard(predicted == object_id, labels[t] == object_id))
    return float(np.mean(scores))


def test_finetuning_on_two_annotated_frames_beats_the_base_model(tmp_path) -> None:
    sequence = synthetic_video(num_frames=10, height=64, width=80, num_objects=2, seed=5)
    labels = np.zeros_like(sequence.labels)
    annotated = [0, 6]
    labels[annotated] = sequence.labels[annotated]
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path / "base.pt", build_rgmp("resnet18", 16), {"recipe": "random"})
    progress = []
    config = finetune_config(base, tmp_path / "tuned.pt", ["optim.iterations=60", "optim.lr=1e-3",
                             "data.crop_size=[64, 64]", "data.batch_size=4", "device=cpu"], output_dir=tmp_path / "work")
    out = finetune_on_stack(sequence.frames, labels, config, on_progress=lambda i, n, loss: progress.append(loss))
    tuned, info = load_checkpoint(out)
    assert info.metadata["base_checkpoint"] == str(base) and info.metadata["frames_used"] == annotated
    assert info.metadata["iterations"] == 60 and len(info.metadata["loss_curve"]) == 60
    base_j = _mean_j(load_checkpoint(base)[0], sequence.frames, sequence.labels, annotated)
    tuned_j = _mean_j(tuned, sequence.frames, sequence.labels, annotated)
    assert tuned_j > base_j + 0.1, (base_j, tuned_j)
    assert np.mean(progress[-15:]) < np.mean(progress[:15])


def test_finetune_errors_and_stop(tmp_path) -> None:
    sequence = synthetic_video(num_frames=4, height=64, width=80, num_objects=1, seed=1)
    base = save_checkpoint(tmp_path / "base.pt", build_rgmp("resnet18", 8))
    config = finetune_config(base, tmp_path / "x.pt", output_dir=tmp_path / "work")
    with pytest.raises(ValueError, match="no frame of the label stack holds labels"):
        finetune_on_stack(sequence.frames, np.zeros_like(sequence.labels), config)
    with pytest.raises(ValueError, match="do not match"):
        finetune_on_stack(sequence.frames, sequence.labels[:, :10], config)
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        finetune_on_stack(sequence.frames, sequence.labels, finetune_config(tmp_path / "missing.pt", tmp_path / "x.pt"))
    labels = np.zeros_like(sequence.labels)
    labels[0] = sequence.labels[0]
    config = finetune_config(base, tmp_path / "stopped.pt", ["optim.iterations=50", "data.crop_size=[64, 64]",
                             "data.batch_size=2", "device=cpu"], output_dir=tmp_path / "work")
    out = finetune_on_stack(sequence.frames, labels, config, should_stop=iter([False, False, True]).__next__)
    assert load_checkpoint(out)[1].metadata["iterations"] == 2


def test_finetune_on_a_stack_smaller_than_the_crop_and_not_a_multiple_of_32(tmp_path) -> None:
    # 240x320 stacks (the video sample) with the widget's 256 px crops once crashed the network:
    # the crop is clamped to the frame and must stay a multiple of 32.
    sequence = synthetic_video(num_frames=3, height=40, width=72, num_objects=1, seed=2)
    labels = np.zeros_like(sequence.labels)
    labels[0] = sequence.labels[0]
    base = save_checkpoint(tmp_path / "base.pt", build_rgmp("resnet18", 8), {"working_size": 320})
    config = finetune_config(base, tmp_path / "tuned.pt", ["optim.iterations=1", "data.crop_size=[64, 96]",
                             "data.batch_size=1", "device=cpu"], output_dir=tmp_path / "work")
    out = finetune_on_stack(sequence.frames, labels, config)
    info = load_checkpoint(out)[1]
    assert info.metadata["iterations"] == 1
    assert info.working_size == 320  # propagates at the size its base was made for
    with pytest.raises(ValueError, match="multiples of 32"):
        finetune_on_stack(sequence.frames, labels, finetune_config(base, tmp_path / "x.pt", ["data.crop_size=[100, 100]"]))


def test_training_crop_size_must_be_a_multiple_of_32() -> None:
    with pytest.raises(ValueError, match=r"data.crop_size must be multiples of 32.*\[100, 96\]"):
        config_from_dict({"stage": "finetune", "data": {"crop_size": [100, 96]}})


def test_best_validated_checkpoint_is_kept_apart_from_the_last(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    import training.trainer as trainer_module
    from training.validation import ValidationResult

    scripted = iter([0.3, 0.5, 0.4])  # overall J&F at iterations 1, 2, 3: the best is iteration 2

    def fake_validate(model, sequences, *args, **kwargs):
        jf = next(scripted)
        scores = SimpleNamespace(name="seq", j_mean=jf, f_mean=jf, jf_mean=jf)
        return ValidationResult((scores,), scores)

    monkeypatch.setattr(trainer_module, "validate", fake_validate)
    config = config_from_dict(tiny("pretrain", tmp_path, schedule={"validate_every": 1}))
    dataset, objective, validation = build_stage(config)
    trainer = Trainer(config, dataset, objective, validation_sequences=validation, show_progress=False)
    last = trainer.fit()
    best_model, best = load_checkpoint(tmp_path / "best.pt")
    assert best.metadata["best_validation"]["iteration"] == 2
    assert best.metadata["best_validation"]["jf"]["overall"] == 0.5
    assert best.metadata["iterations"] == 2 and load_checkpoint(last)[1].metadata["iterations"] == 3
    assert best.sha256 != load_checkpoint(last)[1].sha256


def test_validation_scores_each_group_and_picks_by_their_mean() -> None:
    import dataclasses

    from rgmp_model.eval.metrics import summarize
    from training.validation import validate
    from training.video_sources import SyntheticVideoSource, validation_sequences

    torch.manual_seed(0)
    model = build_rgmp("resnet18", 8)
    one = [dataclasses.replace(s, group="video") for s in
           validation_sequences(SyntheticVideoSource("video", count=1, num_frames=4, size=(48, 64), seed=1,
                                                     objects=(1, 1)))]
    many = [dataclasses.replace(s, group="cells") for s in
            validation_sequences(SyntheticVideoSource("microscopy", count=2, num_frames=4, size=(48, 48), seed=2,
                                                      objects=(3, 3)))]
    result = validate(model, one + many, "cpu")
    by_name = {s.name: s for s in result.sequences}
    assert set(result.groups) == {"video", "cells"}
    assert result.groups["cells"] == summarize([by_name[s.name] for s in many]).jf_mean
    assert result.selection_jf == (result.groups["video"] + result.groups["cells"]) / 2
    single = validate(model, one, "cpu")  # one group: the selection is the overall score
    assert single.selection_jf == single.overall.jf_mean
