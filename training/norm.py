"""BatchNorm that learns while training from scratch, frozen again for export.

The network's encoder uses frozen BatchNorm (fixed statistics, as in the published model, which
starts from ImageNet weights). A from-scratch encoder needs normalisation that adapts: with
``model.train_batchnorm: true`` the trainer swaps every frozen BatchNorm for a trainable one (batch
statistics in training, running averages kept) and exports the running averages into frozen
BatchNorm again, so the saved checkpoint has the usual architecture and keys.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def _swap(module: nn.Module, make: type) -> int:
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (FrozenBatchNorm2d, nn.BatchNorm2d)) and not isinstance(child, make):
            replacement = make(child.weight.shape[0], eps=child.eps) if make is FrozenBatchNorm2d else \
                nn.BatchNorm2d(child.weight.shape[0], eps=child.eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(replacement, key).copy_(getattr(child, key).detach())
            replacement.to(child.weight.device)
            setattr(module, name, replacement)
            count += 1
        else:
            count += _swap(child, make)
    return count


def thaw_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every FrozenBatchNorm2d of ``model`` (in place) by a trainable BatchNorm2d with the
    same weight, bias and running statistics. Returns ``model``."""
    _swap(model, nn.BatchNorm2d)
    return model


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every BatchNorm2d turned back into FrozenBatchNorm2d (its
    running statistics, weight and bias): the exportable network."""
    copied = copy.deepcopy(model)
    _swap(copied, FrozenBatchNorm2d)
    return copied


def has_trainable_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
