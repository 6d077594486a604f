"""Trainable BatchNorm for from-scratch training, frozen again on export."""

from __future__ import annotations

import torch

from torchvision.ops.misc import FrozenBatchNorm2d

from rgmp_model import build_rgmp, load_checkpoint
from tests.helpers.tiny_training import TinyPairs, pair_objective, tiny_config
from training.norm import frozen_copy, has_trainable_batchnorm, thaw_batchnorm
from training.trainer import Trainer


def test_thawed_model_in_eval_mode_equals_its_frozen_copy():
    torch.manual_seed(0)
    model = thaw_batchnorm(build_rgmp("resnet18", 8))
    assert has_trainable_batchnorm(model)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    model.train()
    frame, mask = torch.rand(4, 3, 64, 64), (torch.rand(4, 1, 64, 64) > 0.5).float()
    before = model.encoder.bn1.running_mean.clone()
    model.encode(frame, mask)  # training mode: batch statistics update the running averages
    assert not torch.equal(before, model.encoder.bn1.running_mean)
    frozen = frozen_copy(model.eval())
    assert not has_trainable_batchnorm(frozen) and has_trainable_batchnorm(model)
    assert set(frozen.state_dict()) == set(build_rgmp("resnet18", 8).state_dict())
    with torch.no_grad():
        a, b = model.encode(frame, mask).r5, frozen.encode(frame, mask).r5
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_trainer_with_train_batchnorm_exports_a_standard_checkpoint(tmp_path):
    config = tiny_config(tmp_path, iterations=4)
    config = config.__class__(**{**config.__dict__, "model": config.model.__class__(
        **{**config.model.__dict__, "train_batchnorm": True})})
    trainer = Trainer(config, TinyPairs(), pair_objective, show_progress=False)
    path = trainer.fit()
    model, _ = load_checkpoint(path)  # strict: the usual keys, frozen BatchNorm
    assert isinstance(model.encoder.bn1, FrozenBatchNorm2d)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(k.endswith("num_batches_tracked") for k in state)  # the training state keeps BatchNorm
    assert not torch.equal(model.encoder.bn1.running_var, torch.ones_like(model.encoder.bn1.running_var))
    resumed = Trainer(tiny_config(tmp_path, iterations=6).__class__(**{**config.__dict__, "optim": config.optim.__class__(
        **{**config.optim.__dict__, "iterations": 6})}), TinyPairs(), pair_objective, show_progress=False)
    resumed.fit()
    assert resumed.history.iteration == 6
