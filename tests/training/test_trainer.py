"""The trainer: configuration, learning, exact resume, outputs. Tiny networks and crops, CPU."""

from __future__ import annotations

import contextlib
import csv

import numpy as np
import pytest
import torch

from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from training.config import STAGES, config_from_dict, load_config, parse_overrides
from training.cli import CONFIG_DIR
from training.objectives import ClipObjective
from training.trainer import Trainer, build_model
from tests.helpers.tiny_training import SIZE, TinyPairs, pair_objective, tiny_config


def test_stage_configs_load_and_overrides_are_typed() -> None:
    for stage in STAGES:
        config = load_config(CONFIG_DIR / f"{stage}.yaml")
        assert config.stage == stage
    config = load_config(CONFIG_DIR / "pretrain.yaml", ["optim.lr=3e-4", "data.crop_size=[128, 96]", "optim.amp=false"])
    assert config.optim.lr == 3e-4 and isinstance(config.optim.lr, float)
    assert config.data.crop_size == (128, 96) and config.optim.amp is False
    assert config.data.sources[0].kind == "synthetic_video"
    with pytest.raises(ValueError, match="unknown config key optim.learning_rate: allowed keys are lr"):
        load_config(CONFIG_DIR / "pretrain.yaml", ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="optim.iterations: expected an integer"):
        load_config(CONFIG_DIR / "pretrain.yaml", ["optim.iterations=ten"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ValueError, match="unknown data source kind"):
        config_from_dict({"stage": "pretrain", "data": {"sources": [{"kind": "imagenet"}]}})
    with pytest.raises(FileNotFoundError, match="missing.yaml does not exist"):
        load_config("missing.yaml")


def test_loss_falls_on_a_tiny_overfit_set(tmp_path) -> None:
    config = tiny_config(tmp_path, iterations=50)
    trainer = Trainer(config, TinyPairs(), pair_objective, show_progress=False)
    trainer.fit()
    losses = [loss for _, loss in trainer.history.losses]
    assert len(losses) == 50
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.5 * first, (first, last)


def test_resumed_run_gives_the_same_losses_bitwise(tmp_path) -> None:
    uninterrupted = Trainer(tiny_config(tmp_path / "a"), TinyPairs(), pair_objective, show_progress=False)
    uninterrupted.fit()
    stop_after = iter(range(100))
    interrupted = Trainer(tiny_config(tmp_path / "b"), TinyPairs(), pair_objective, show_progress=False,
                          should_stop=lambda: next(stop_after) >= 3)
    interrupted.fit()
    assert interrupted.history.iteration == 3
    resumed = Trainer(tiny_config(tmp_path / "b"), TinyPairs(), pair_objective, show_progress=False)
    resumed.fit()
    assert resumed.history.losses == uninterrupted.history.losses  # bitwise, all six
    for a, b in zip(load_checkpoint(tmp_path / "a" / "model.pt")[0].state_dict().values(),
                    load_checkpoint(tmp_path / "b" / "model.pt")[0].state_dict().values()):
        assert torch.equal(a, b)


def test_learning_rate_steps_apply_and_survive_a_resume(tmp_path) -> None:
    schedule = {"lr_steps": [2, 4], "lr_gamma": 0.5}
    config = tiny_config(tmp_path / "a", **schedule)
    assert [config.optim.learning_rate(i) for i in range(6)] == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    trainer = Trainer(config, TinyPairs(), pair_objective, show_progress=False)
    trainer.fit()
    logged = [float(r["lr"]) for r in csv.DictReader((tmp_path / "a" / "train_log.csv").open())]
    assert logged == [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    # an interrupted run resumes at the scheduled rate, not the optimiser state's nor the base rate
    stop_after = iter(range(100))
    Trainer(tiny_config(tmp_path / "b", **schedule), TinyPairs(), pair_objective, show_progress=False,
            should_stop=lambda: next(stop_after) >= 3).fit()
    resumed = Trainer(tiny_config(tmp_path / "b", **schedule), TinyPairs(), pair_objective, show_progress=False)
    resumed.fit()
    assert resumed.history.losses == trainer.history.losses
    with pytest.raises(ValueError, match="optim.lr_steps must be increasing"):
        tiny_config(tmp_path, lr_steps=[4, 2])
    with pytest.raises(ValueError, match="optim.lr_gamma must be in"):
        tiny_config(tmp_path, lr_gamma=0)


def test_outputs_log_plot_and_metadata(tmp_path) -> None:
    progress = []
    trainer = Trainer(tiny_config(tmp_path), TinyPairs(), pair_objective, show_progress=False,
                      metadata={"note": "test"}, on_progress=lambda i, n, loss: progress.append((i, n)))
    path = trainer.fit()
    assert progress == [(i, 6) for i in range(1, 7)]
    model, info = load_checkpoint(path)
    assert info.metadata["recipe"] == "pretrain" and info.metadata["iterations"] == 6
    assert info.metadata["note"] == "test" and len(info.metadata["loss_curve"]) == 6
    rows = list(csv.DictReader((tmp_path / "train_log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "training.png").stat().st_size > 1000
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "checkpoints" / "last.pt").exists()
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_clip_objective_feeds_its_own_output_back() -> None:
    torch.manual_seed(0)
    model = build_rgmp("resnet18", 8)
    frames = torch.rand(2, 3, 3, SIZE, SIZE)
    labels = torch.zeros(2, 3, SIZE, SIZE, dtype=torch.long)
    labels[:, :, 10:30, 10:30] = 1
    labels[0, :, 40:60, 35:55] = 2
    valid = torch.tensor([[True, True], [True, False]])
    batch = {"frames": frames, "labels": labels, "object_valid": valid, "num_objects": torch.tensor([2, 1])}
    calls = []
    original = model.encode
    model.encode = lambda f, m: calls.append(m.detach().clone()) or original(f, m)
    loss = ClipObjective(model, aux_weight=0.5)(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.conv1_mask.weight.grad.abs().sum() > 0
    # reference, frame 1 (previous = ground truth of frame 0), frame 2 (previous = soft output)
    assert len(calls) == 3 and calls[1].shape[0] == 3
    assert set(torch.unique(calls[1]).tolist()) == {0.0, 1.0}
    soft = calls[2]
    assert ((soft > 0.01) & (soft < 0.99)).float().mean() > 0.5  # the network's own soft output


def test_exported_metadata_lists_every_stage_behind_the_model(tmp_path) -> None:
    first = Trainer(tiny_config(tmp_path / "one", iterations=2), TinyPairs(), pair_objective, show_progress=False).fit()
    second_config = config_from_dict({**tiny_config(tmp_path / "two", iterations=3).to_dict(),
                                      "model": {"backbone": "resnet18", "decoder_channels": 8,
                                                "init_checkpoint": str(first)}})
    second = Trainer(second_config, TinyPairs(), pair_objective, show_progress=False).fit()
    _, info = load_checkpoint(second)
    assert info.metadata["stages"] == [{"recipe": "pretrain", "iterations": 2}, {"recipe": "pretrain", "iterations": 3}]
    assert info.metadata["base_checkpoint"] == str(first)


def test_non_finite_loss_stops_the_run_and_keeps_the_good_checkpoint(tmp_path) -> None:
    from training.trainer import NonFiniteTrainingError

    Trainer(tiny_config(tmp_path, iterations=3), TinyPairs(), pair_objective, show_progress=False).fit()
    state = tmp_path / "checkpoints" / "last.pt"
    good = state.read_bytes()
    (tmp_path / "model.pt").unlink()

    class Diverging(TinyPairs):  # NaN frames: the resumed run's first step (iteration 4) diverges
        def __getitem__(self, index):
            item = super().__getitem__(index)
            item["frame"] = item["frame"] * float("nan")
            return item

    resumed = Trainer(tiny_config(tmp_path, iterations=6), Diverging(), pair_objective, show_progress=False)
    with pytest.raises(NonFiniteTrainingError, match=r"iteration 4: the loss or a gradient is not finite.*"
                                                     r"last.pt \(iteration 3\) is kept untouched.*Lower optim.lr"):
        resumed.fit()
    assert state.read_bytes() == good and not (tmp_path / "model.pt").exists()


def test_non_finite_loss_stops_the_run_with_the_fp16_gradient_scaler_too(tmp_path, monkeypatch) -> None:
    """fp16 AMP's gradient scaler skips steps whose gradients overflow by itself, so the loss alone
    must stop a diverged run (CUDA only; here a scaler enabled on the CPU)."""
    from training.trainer import NonFiniteTrainingError

    monkeypatch.setattr(Trainer, "_amp", lambda self, device: (contextlib.nullcontext(),
                                                               torch.amp.GradScaler("cpu", enabled=True)))
    Trainer(tiny_config(tmp_path, iterations=3), TinyPairs(), pair_objective, show_progress=False).fit()
    state = tmp_path / "checkpoints" / "last.pt"
    good = state.read_bytes()
    (tmp_path / "model.pt").unlink()

    class Diverging(TinyPairs):
        def __getitem__(self, index):
            return {**super().__getitem__(index), "frame": super().__getitem__(index)["frame"] * float("nan")}

    resumed = Trainer(tiny_config(tmp_path, iterations=6), Diverging(), pair_objective, show_progress=False)
    with pytest.raises(NonFiniteTrainingError, match=r"iteration 4: the loss or a gradient is not finite"):
        resumed.fit()
    assert state.read_bytes() == good and not (tmp_path / "model.pt").exists()


def test_non_finite_weights_are_never_saved(tmp_path) -> None:
    from training.trainer import NonFiniteTrainingError

    model = build_model(tiny_config(tmp_path))
    # a weight outside the loss's graph: the loss stays finite, only the weight check can see it
    model.register_parameter("spare", torch.nn.Parameter(torch.tensor([float("inf")])))
    trainer = Trainer(tiny_config(tmp_path, iterations=3), TinyPairs(), pair_objective, model=model,
                      show_progress=False)
    with pytest.raises(NonFiniteTrainingError, match="iteration 3: some weights are NaN or infinite"):
        trainer.fit()
    assert len(trainer.history.losses) == 3 and all(np.isfinite(loss) for _, loss in trainer.history.losses)
    assert not (tmp_path / "checkpoints" / "last.pt").exists() and not (tmp_path / "model.pt").exists()


def test_loader_refuses_checkpoints_with_non_finite_weights(tmp_path) -> None:
    model = build_model(tiny_config(tmp_path))
    with torch.no_grad():
        model.decoder.pred5.weight[0, 0, 0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", model)
    with pytest.raises(ValueError, match=r"nan.pt holds NaN or infinite weights \(decoder.pred5.weight\)"):
        load_checkpoint(path)


def test_resume_cleans_orphan_temporaries_and_logs_each_iteration_once(tmp_path) -> None:
    Trainer(tiny_config(tmp_path, iterations=4), TinyPairs(), pair_objective, show_progress=False).fit()
    # a run killed after logging iteration 4 but before its next checkpoint (3), mid-save
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert state["iteration"] == 4
    orphan = tmp_path / "checkpoints" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a checkpoint")
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    # rewind the saved state to iteration 3 as if iteration 4 had not been saved
    first = Trainer(tiny_config(tmp_path / "ref", iterations=3), TinyPairs(), pair_objective, show_progress=False)
    first.fit()
    (tmp_path / "checkpoints" / "last.pt").write_bytes((tmp_path / "ref" / "checkpoints" / "last.pt").read_bytes())
    Trainer(tiny_config(tmp_path, iterations=6), TinyPairs(), pair_objective, show_progress=False).fit()
    assert not orphan.exists()
    iterations = [r.split(",")[0] for r in (tmp_path / "train_log.csv").read_text().splitlines()[1:]]
    assert iterations == ["1", "2", "3", "4", "5", "6"]


def test_cuda_out_of_memory_splits_the_batch_and_goes_on(tmp_path, capsys) -> None:
    """Simulated: the objective raises CUDA's out-of-memory error for whole batches once; the
    trainer retries the step with the batch in two parts and the losses match an ordinary run."""
    reference = Trainer(tiny_config(tmp_path / "a", iterations=3), TinyPairs(), pair_objective, show_progress=False)
    reference.fit()
    failures = []

    class OutOfMemoryOnce(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner = pair_objective(model)

        def forward(self, batch):
            if next(iter(batch.values())).shape[0] == 2 and not failures:
                failures.append(True)
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(batch)

    trainer = Trainer(tiny_config(tmp_path / "b", iterations=3), TinyPairs(), OutOfMemoryOnce, show_progress=False)
    trainer.fit()
    assert failures and trainer._micro_batches == 2
    assert "out of GPU memory at iteration 1: the batch now goes through in 2 parts" in capsys.readouterr().out
    np.testing.assert_allclose([l for _, l in trainer.history.losses], [l for _, l in reference.history.losses],
                               rtol=1e-4)
