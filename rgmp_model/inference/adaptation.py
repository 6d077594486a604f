"""A session's test-time adaptation: the copy of its network fine-tuned on its keyframes, and the
keyframes it learnt from (:func:`rgmp_model.adapt.adapt_model`).

The rule, owned here: the adapted copy stays valid while every keyframe it learnt from is still
a keyframe with the same labels. Adding a keyframe (a correction) keeps it, so re-propagating
after a correction costs no new training; changing or removing a keyframe it learnt from makes
the next propagation adapt again, on all keyframes then present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

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

    def update(self, base: RGMP, frames: FrameStack, keyframes: Mapping[int, np.ndarray], device: torch.device,
               autocast_dtype: torch.dtype | None, on_progress: Callable[[int, int, float], None] | None = None,
               should_stop: Callable[[], bool] | None = None, region_view: bool = False) -> RGMP | None:
        """Adapt a copy of ``base`` on ``keyframes`` and keep it, unless the kept copy is still
        valid (then None). ``base`` is never changed; ``region_view``: the stack's grey crops are
        stretched as region mode shows them. ValueError when adaptation is off or there is no
        keyframe."""
        from rgmp_model.adapt.adapt import AdaptOptions, adapt_model

        if not self.iterations:
            raise ValueError("this session was opened without adaptation: open it with "
                             "PropagationOptions(adapt=N) (rgmp propagate --adapt N)")
        if not keyframes:
            raise ValueError("adaptation learns from the keyframes: add labels on at least one frame first")
        if self.is_current(keyframes):
            return None
        self.model = None  # a failed run leaves no stale copy behind
        adapted = adapt_model(base, frames, keyframes, AdaptOptions(iterations=self.iterations, region_view=region_view),
                              device=device,
                              autocast_dtype=autocast_dtype, on_progress=on_progress, should_stop=should_stop)
        self.model, self.runs = adapted, self.runs + 1
        self.learnt_from = {int(t): np.array(labels, copy=True) for t, labels in keyframes.items()}
        return adapted
