"""The RGMP training loss of one (reference, target, previous mask) pair: cross-entropy on the
final output plus ``aux_weight`` x the mean cross-entropy of the 1/4..1/32 heads against
area-downsampled (soft) targets. Stage 1, fine-tuning (:mod:`training.objectives`) and test-time
adaptation (:mod:`rgmp_model.adapt.adapt`) use it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rgmp_model.nn.network import DecoderOutput

__all__ = ["head_loss", "pair_loss"]


def _soft_two_class(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) mask in [0, 1] -> (B, 2, h, w) class probabilities (background, object)."""
    small = F.interpolate(mask[:, None].float(), size=size, mode="area")[:, 0]
    return torch.stack([1 - small, small], dim=1)


def head_loss(output: DecoderOutput, mask: Tensor) -> Tensor:
    """Mean cross-entropy of the four low-resolution heads; mask (B, H, W) in [0, 1]."""
    heads = (output.p2, output.p3, output.p4, output.p5)
    return torch.stack(
        [F.cross_entropy(h.float(), _soft_two_class(mask, tuple(h.shape[-2:]))) for h in heads]
    ).mean()


def pair_loss(output: DecoderOutput, mask: Tensor, aux_weight: float) -> Tensor:
    """Single-object loss: output logits (B, 2, H, W), mask (B, H, W) in {0, 1}."""
    loss = F.cross_entropy(output.logits.float(), mask.round().long())
    if aux_weight:
        loss = loss + aux_weight * head_loss(output, mask)
    return loss
