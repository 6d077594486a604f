"""The values a propagation option may take, written once: ``PropagationOptions`` checks against
them, ``rgmp propagate`` offers them as ``choices`` and the Propagate dock lists them. Torch-free."""

from __future__ import annotations

__all__ = ["DEFAULT_DIRECTION", "DEFAULT_REGION", "DIRECTIONS", "FLOW_METHODS", "MODES", "PRECISIONS", "REGION_MODES",
           "first"]

DIRECTIONS = ("forward", "backward", "both")  # from each keyframe: later frames, earlier frames, or both
DEFAULT_DIRECTION = "both"  # rgmp propagate's and the dock's (PropagationOptions' is "forward", a session's plain call)
MODES = ("default", "official")  # objects batched with soft aggregation, or the authors' run.py
REGION_MODES = ("auto", "on", "off")  # region mode (inference/region.py): chosen per stretch, forced on, never
DEFAULT_REGION = "auto"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
FLOW_METHODS = ("tvl1", "ilk")  # flow guidance (inference/flow.py): TV-L1, iterative Lucas-Kanade


def first(default: str, values: tuple[str, ...]) -> list[str]:
    """``values`` with ``default`` first (the order a menu lists them in)."""
    return [default, *(v for v in values if v != default)]
