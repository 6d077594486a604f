"""Which keyframe each frame is propagated from, in which order (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from rgmp_model.inference.choices import DIRECTIONS


@dataclass(frozen=True)
class Stretch:
    """The frames propagated from one keyframe, in processing order: ``backward`` goes
    keyframe-1, keyframe-2, ...; ``forward`` goes keyframe+1, keyframe+2, ..."""

    keyframe: int
    backward: tuple[int, ...]
    forward: tuple[int, ...]


def plan_stretches(keyframes: list[int], num_frames: int, direction: str) -> list[Stretch]:
    """Assign every frame reachable in ``direction`` to its nearest keyframe (ties go to the
    earlier keyframe, i.e. forward propagation)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    keys = sorted(keyframes)
    stretches = []
    for i, key in enumerate(keys):
        previous_key = keys[i - 1] if i > 0 else None
        next_key = keys[i + 1] if i + 1 < len(keys) else None
        forward_end = num_frames if next_key is None else next_key  # exclusive
        backward_end = -1 if previous_key is None else previous_key  # exclusive
        if direction == "both":
            if next_key is not None:  # frames up to the midpoint (inclusive on ties)
                forward_end = key + (next_key - key) // 2 + 1
            if previous_key is not None:
                backward_end = previous_key + (key - previous_key) // 2
        forward = tuple(range(key + 1, forward_end)) if direction != "backward" else ()
        backward = tuple(range(key - 1, backward_end, -1)) if direction != "forward" else ()
        stretches.append(Stretch(key, backward, forward))
    return stretches
