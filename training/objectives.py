"""Training objectives as modules whose ``forward(batch)`` returns the loss, so that one DDP
forward call covers a whole step (including the recurrence over a clip).

Loss: cross-entropy on the final (full-resolution) output plus ``aux_weight`` x the mean
cross-entropy of the 1/4, 1/8, 1/16 and 1/32 heads against area-downsampled (soft) targets
(:mod:`rgmp_model.adapt.loss`, shared with test-time adaptation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgmp_model.adapt.loss import head_loss, pair_loss
from rgmp_model.inference.propagators import soft_aggregate
from rgmp_model.nn.network import RGMP

_EPS = 1e-7


class PairObjective(nn.Module):
    """Stage 1 and fine-tuning: one (reference, target, previous mask) triple per sample.

    batch: reference_frame (B, 3, H, W), reference_mask (B, H, W), frame (B, 3, H, W),
    mask (B, H, W) ground truth, previous_mask (B, H, W).
    """

    def __init__(self, model: RGMP, aux_weight: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.aux_weight = aux_weight

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        output = self.model(batch["reference_frame"], batch["reference_mask"], batch["frame"], batch["previous_mask"])
        return pair_loss(output, batch["mask"], self.aux_weight)


class ClipObjective(nn.Module):
    """Stage 2: clips with several objects, the network's own soft output fed back as the
    previous mask (back-propagated through the clip, optionally truncated every
    ``bptt_frames``), objects merged by soft aggregation.

    batch: frames (B, N, 3, H, W), labels (B, N, H, W) with values 0..K_b, object_valid (B, M),
    num_objects (B,). Loss per frame 1..N-1: negative log-likelihood of the aggregated
    probabilities against the labels, plus the heads' loss per object.
    """

    def __init__(self, model: RGMP, aux_weight: float = 0.5, bptt_frames: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.aux_weight = aux_weight
        self.bptt_frames = bptt_frames

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        frames, labels, valid = batch["frames"], batch["labels"], batch["object_valid"]
        clip_of, channel_of = torch.nonzero(valid, as_tuple=True)  # one row per object
        channel_of = channel_of + 1
        groups = [torch.nonzero(clip_of == b).flatten() for b in range(len(frames))]
        masks = labels[clip_of] == channel_of[:, None, None, None]  # (O, N, H, W)
        reference_r5 = self.model.encode(frames[clip_of, 0], masks[:, 0].float()).r5
        previous = masks[:, 0].float()
        losses = []
        for t in range(1, frames.shape[1]):
            output = self.model.decode(self.model.encode(frames[clip_of, t], previous), reference_r5)
            probability = torch.softmax(output.logits.float(), dim=1)[:, 1]
            following = torch.zeros_like(probability)
            nll = []
            for b, rows in enumerate(groups):
                if len(rows) == 0:
                    continue
                aggregated = soft_aggregate(probability[rows])  # (K+1, H, W)
                nll.append(F.nll_loss(torch.log(aggregated.clamp_min(_EPS))[None], labels[b, t][None]))
                following = following.index_put((rows,), aggregated[1:])
            loss = torch.stack(nll).mean()
            if self.aux_weight:
                loss = loss + self.aux_weight * head_loss(output, masks[:, t].float())
            losses.append(loss)
            if self.bptt_frames and t % self.bptt_frames == 0:
                following = following.detach()
            previous = following
        return torch.stack(losses).mean()
