"""A session's test-time adaptation: the copy of its network fine-tuned on its keyframes, and the
keyframes it learnt from (:func:`rgmp_model.adapt.adapt_model`).

The rule, owned here: the adapted copy stays valid while every keyframe it learnt from is still
a keyframe with the same labels. Adding a keyframe (a correction) keeps it, so re-propagating
after a correction costs no new training; changing or removing a keyframe it learnt from makes
the next propagation adapt again, on all keyframes then present.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch

from rgmp_model.inference.frames import FrameStack
from rgmp_model.nn.network import RGMP

__all__ = ["KeyframeAdaptation"]


class KeyframeAdaptation:
    """``iterations`` of adaptation (0: none) for one session; ``model`` the adapted copy or None."""

    def __init__(self, iterations: int) -> None:
        self.iterations = int(iterations)
        self.model: RGMP | None = None
        self.learnt_from: dict[int, np.ndarray] = {}
        self.runs = 0  # adaptations done (a correction that reused the copy adds none)

    def is_current(self, keyframes: Mapping[int, np.ndarray]) -> bool:
        """Whether the adapted copy is still valid for ``keyframes`` (module docstring)."""
        return self.model is not None and all(
            t in keyframes and np.array_equal(keyframes[t], labels) for t, labels in self.learnt_from.items())

    def steps(self, base: RGMP, frames: FrameStack, keyframes: Mapping[int, np.ndarray], device: torch.device,
              autocast_dtype: torch.dtype | None, region_view: bool = False) -> Iterator[tuple[int, int, float]]:
        """Adapt a copy of ``base`` on ``keyframes``, yielding ``(iteration, total, loss)`` after each
        step; the copy is kept (:attr:`model`) only when every step has run, so a caller that stops
        early keeps nothing. No step when the kept copy is still valid. ``base`` is never changed;
        ``region_view``: the stack's grey crops are stretched as region mode shows them.
        ValueError when adaptation is off or there is no keyframe."""
        from rgmp_model.adapt.adapt import AdaptOptions, adaptation_steps

        if not self.iterations:
            raise ValueError("this session was opened without adaptation: open it with "
                             "PropagationOptions(adapt=N) (rgmp propagate --adapt N)")
        if not keyframes:
            raise ValueError("adaptation learns from the keyframes: add labels on at least one frame first")
        if self.is_current(keyframes):
            return
        self.model = None  # a failed or stopped run leaves no stale copy behind
        learnt_from = {int(t): np.array(labels, copy=True) for t, labels in keyframes.items()}
        options = AdaptOptions(iterations=self.iterations, region_view=region_view)
        adapted = None
        for step in adaptation_steps(base, frames, keyframes, options, device=device, autocast_dtype=autocast_dtype):
            adapted = step.model
            yield step.iteration, step.total, step.loss
        self.model, self.runs, self.learnt_from = adapted.eval(), self.runs + 1, learnt_from
