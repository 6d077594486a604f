"""A stand-in for the RGMP network whose output is a local rule of the frame and the previous
mask (a neighbourhood of ``reach`` pixels): an object is where the previous mask was (dilated by
``reach``) and the frame is bright. Cropping then changes nothing away from a crop's border, so region mode and
full-frame mode must agree; random RGMP weights could not show that. It is an :class:`RGMP` (so
that ``open_session`` and ``PropagationSession`` take it) without RGMP's encoder and decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rgmp_model.nn.encoders import EncoderFeatures
from rgmp_model.nn.network import RGMP, DecoderOutput


class LocalRuleModel(RGMP):
    stride = RGMP.stride

    def __init__(self, threshold: float = 0.3, sharpness: float = 30.0, reach: int = 6) -> None:
        nn.Module.__init__(self)  # none of RGMP's layers: the rule below is the whole network
        self.threshold, self.sharpness, self.reach = threshold, sharpness, reach
        self.register_buffer("anchor", torch.zeros(1))  # so .to(device) has something to move
        self.encode_calls = 0

    def encode(self, frame: torch.Tensor, mask: torch.Tensor) -> EncoderFeatures:
        self.encode_calls += 1
        if mask.dim() == 3:
            mask = mask[:, None]
        grey = frame.mean(dim=1, keepdim=True).expand(mask.shape[0], -1, -1, -1)
        near = F.max_pool2d(mask.float(), 2 * self.reach + 1, stride=1, padding=self.reach)
        score = torch.minimum(near, grey)  # bright and next to the previous mask
        pooled = F.avg_pool2d(score, 32)
        return EncoderFeatures(pooled, score, grey, near)

    def decode(self, target: EncoderFeatures, reference_r5: torch.Tensor) -> DecoderOutput:
        logit = self.sharpness * (target.r4 - self.threshold)
        logits = torch.cat([-logit, logit], dim=1) / 2
        return DecoderOutput(logits, logits, logits, logits, logits)
