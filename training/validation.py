"""Validation J&F on held-out sequences, with the propagation engine and ``rgmp evaluate``'s
metrics: propagate from the first annotated frame, score the annotated frames."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from rgmp_model.eval.metrics import OverallScores, SequenceScores, evaluate_sequence, summarize
from rgmp_model.nn.network import RGMP
from rgmp_model.inference.options import PropagationOptions
from rgmp_model.inference.session import open_session


class FramesView:
    """The first ``count`` frames of a lazy stack, still read one at a time."""

    def __init__(self, stack: Any, count: int) -> None:
        self._stack = stack
        self.shape = (count, *tuple(stack.shape)[1:])
        self.dtype = stack.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.shape[0]:
            raise IndexError(index)
        return np.asarray(self._stack[index])


@dataclass(frozen=True)
class ValidationResult:
    """Scores per sequence, over all objects (``overall``) and per group of sequences (``groups``:
    {group: J&F over its objects}; one group "" when the sequences name none). ``selection_jf``,
    the mean of the groups' J&F, is what picks the best checkpoint: each validation set counts
    the same whatever its number of objects."""

    sequences: tuple[SequenceScores, ...]
    overall: OverallScores
    groups: dict[str, float] = field(default_factory=dict)

    @property
    def selection_jf(self) -> float:
        return float(np.mean(list(self.groups.values()))) if self.groups else self.overall.jf_mean


def validate(
    model: RGMP,
    sequences: Sequence[Any],
    device: torch.device | str = "cpu",
    max_frames: int | None = None,
    max_size: int | None = None,
) -> ValidationResult:
    """Propagate each sequence (``name``, ``frames``, ``labels``, ``annotated``) forward from its
    first annotated frame and score the annotated frames (DAVIS protocol). ``max_size``: the
    working size as everywhere (None or 0: full size, the network records none). Full-frame
    propagation always (region="off"), so that scores stay comparable across runs and sequences.
    Leaves the model in eval mode."""
    if not sequences:
        raise ValueError("no validation sequences: add validation sources to the config")
    options = PropagationOptions(direction="forward", max_size=max_size, device=str(device), region="off")
    scores = []
    grouped: dict[str, list[SequenceScores]] = {}
    for sequence in sequences:
        first = sequence.annotated[0]
        count = len(sequence.frames) if max_frames is None else min(len(sequence.frames), first + max_frames)
        frames = FramesView(sequence.frames, count)
        keyframe = np.asarray(sequence.labels[first])
        session = open_session(model, frames, options)
        session.add_keyframe(first, keyframe)
        scored = [t for t in sequence.annotated if t < count]
        wanted = set(scored)
        predicted = {t: labels for t, labels, _ in session.propagate() if t in wanted}
        prediction = np.stack([predicted[t] for t in scored])
        truth = np.stack([np.asarray(sequence.labels[t]) for t in scored]).astype(np.int64)
        scores.append(evaluate_sequence(prediction.astype(np.int64), truth, name=sequence.name))
        grouped.setdefault(str(getattr(sequence, "group", "")), []).append(scores[-1])
    groups = {name: summarize(members).jf_mean for name, members in grouped.items()}
    return ValidationResult(tuple(scores), summarize(scores), groups)
