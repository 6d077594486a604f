"""The working size: the one owner of the (height, width) at which full-frame propagation runs.

Its rules, one meaning everywhere (``rgmp propagate --max-size``, the Propagate dock, the
benchmarks, training validation):

- the bound (:meth:`WorkingSize.bound`): ``max_size`` None = the model's recorded working size when
  it has one, else full size; 0 = full size; N (>= 32) = the longer side bounded by N px;
- the size of a bound (:meth:`WorkingSize.scaled`): the frame scaled down to it;
- small objects (:meth:`WorkingSize.for_objects`): while the model's recorded size applies, a keyframe
  whose median object would be under ``SMALL_OBJECT_SIDE`` px gets a larger working size, up to
  full size and ``SMALL_OBJECT_CEILING`` px (where region mode does not take the stretch);
- out of memory (:meth:`WorkingSize.smaller_than`): the retry's size, 3/4 of the longer side rounded
  down to the network stride; the size it took is a limit for the rest of the session.

A session holds one :class:`WorkingSize` (``session.working``; ``session.working_size`` is its
``size``): it measures each keyframe's objects once, refits when the keyframes change and shrinks
after running out of memory. ``rgmp propagate`` prints and the Propagate dock shows its size.
Torch-free.
"""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any, Sequence

import numpy as np

from rgmp_model.constants import NETWORK_STRIDE
from rgmp_model.inference.labels import object_sides

__all__ = ["FULL_SIZE", "MIN_MAX_SIZE", "SMALL_OBJECT_CEILING", "SMALL_OBJECT_SIDE", "WorkingSize"]

FULL_SIZE = 0  # max_size meaning "no bound: the network works at the frames' own size"
MIN_MAX_SIZE = NETWORK_STRIDE  # smallest bound: one stride of the network
SMALL_OBJECT_SIDE = 32  # px at the working size: a median object smaller than this gets a larger working size,
SMALL_OBJECT_CEILING = 512  # px: up to this longer side (full frames of small objects are slow; region mode is not)
SHRINK = 3 / 4  # an out-of-memory retry's working size, of the longer side

Size = tuple[int, int]


class WorkingSize:
    """The working size of one session over (``height``, ``width``) frames with the resolved
    ``bound`` (0 = full size); ``fit_to_objects``: the bound is the model's recorded one, so small
    objects may get more pixels (:meth:`for_objects`)."""

    def __init__(self, height: int, width: int, bound: int, fit_to_objects: bool = False) -> None:
        self.height, self.width = int(height), int(width)
        self.bound = self.check_bound(bound) or FULL_SIZE
        self.fit_to_objects = fit_to_objects
        self.size: Size = self.scaled(self.height, self.width, self.bound)
        self.limit: Size | None = None  # set by an out-of-memory retry: never above it again
        self._sides: dict[int, list[int]] = {}  # keyframe -> its objects' box sides (object_sides)

    # ------------------------------------------------------------------ the rules
    @staticmethod
    def check_bound(value: Any, name: str = "max_size") -> int | None:
        """``value`` as an int (or None) when it is a valid bound, else a ValueError."""
        if value is None:
            return None
        if isinstance(value, Integral) and not isinstance(value, bool) and (value == FULL_SIZE or value >= MIN_MAX_SIZE):
            return int(value)
        raise ValueError(f"{name} must be an integer >= {MIN_MAX_SIZE} (pixels), 0 (full size) or None (the "
                         f"model's working size), got {value!r}")

    @staticmethod
    def resolve_bound(max_size: int | None, recorded: int | None = None, fallback: int = FULL_SIZE) -> int:
        """The one rule for the bound (0 = full size): ``max_size`` when given (0 = full size), else
        the model's ``recorded`` working size, else ``fallback`` (full size unless a caller
        documents another default)."""
        given = WorkingSize.check_bound(max_size)
        if given is not None:
            return given
        if isinstance(recorded, Integral) and not isinstance(recorded, bool) and recorded >= MIN_MAX_SIZE:
            return int(recorded)
        return WorkingSize.check_bound(fallback, "fallback") or FULL_SIZE

    @staticmethod
    def scaled(height: int, width: int, max_size: int | None) -> Size:
        """(height, width) scaled down so that the longer side is at most ``max_size`` (None or 0:
        unchanged)."""
        factor = 1.0 if not max_size else min(1.0, max_size / max(height, width))
        return max(1, round(height * factor)), max(1, round(width * factor))

    @staticmethod
    def for_objects(height: int, width: int, max_size: int | None, sides: Sequence[int]) -> Size:
        """(height, width) at which the model's recorded bound ``max_size`` works for objects whose
        bounding boxes' longer sides (full-size px) are ``sides``: :meth:`scaled`, unless the median
        object would be smaller than ``SMALL_OBJECT_SIDE`` px there; then just large enough, up to
        full size and ``SMALL_OBJECT_CEILING`` px (never smaller than :meth:`scaled`). Only for the
        recorded bound: a bound the user chose applies as it is."""
        size = WorkingSize.scaled(height, width, max_size)
        longer = max(height, width)
        if not sides or max(size) >= longer:
            return size
        median = float(np.median(sides))
        if median * max(size) / longer >= SMALL_OBJECT_SIDE:
            return size
        bound = min(math.ceil(longer * SMALL_OBJECT_SIDE / max(median, 1.0)), SMALL_OBJECT_CEILING)
        return WorkingSize.scaled(height, width, bound) if bound > max(size) else size

    @staticmethod
    def smaller_than(height: int, width: int, current: Size) -> Size | None:
        """The out-of-memory retry's (h, w) for (``height``, ``width``) frames worked at ``current``:
        the longer side 3/4 of ``current``'s, rounded down to the network stride; None when none is
        smaller."""
        bound = int(max(current) * SHRINK) // NETWORK_STRIDE * NETWORK_STRIDE
        if bound < MIN_MAX_SIZE:
            return None
        size = WorkingSize.scaled(height, width, bound)
        return size if max(size) < max(current) else None

    # ------------------------------------------------------------------ one session's size
    def measure(self, keyframe: int, labels: np.ndarray) -> None:
        """Measure the objects of ``keyframe``'s (new) ``labels`` (once per labels; only while
        fitting to objects)."""
        if self.fit_to_objects:
            self._sides[keyframe] = object_sides(labels)

    def forget(self, keyframe: int) -> None:
        """``keyframe`` is no keyframe any more."""
        self._sides.pop(keyframe, None)

    def refit(self) -> bool:
        """Fit the size to the measured keyframes' objects (never above :attr:`limit`); returns
        whether it changed (features encoded at the old size are stale)."""
        if not self.fit_to_objects:
            return False
        sides = [side for found in self._sides.values() for side in found]
        size = self.for_objects(self.height, self.width, self.bound, sides)
        return self._set(min(size, self.limit or size))

    def smaller(self) -> Size | None:
        """The size an out-of-memory retry would take now (None: none is smaller)."""
        return self.smaller_than(self.height, self.width, self.size)

    def shrink(self) -> Size | None:
        """After running out of memory: take :meth:`smaller` and keep it as the limit; returns it
        (None when none is smaller, nothing changed)."""
        smaller = self.smaller()
        if smaller is not None:
            self.limit_to(smaller)
        return smaller

    def limit_to(self, size: Size) -> bool:
        """Never work above ``size`` again (an out-of-memory retry took it); returns whether the
        size changed."""
        self.limit = (int(size[0]), int(size[1]))
        return self._set(min(self.size, self.limit))

    def _set(self, size: Size) -> bool:
        changed = tuple(size) != tuple(self.size)
        self.size = (int(size[0]), int(size[1]))
        return changed

    def describe(self) -> str:
        """``"WxH"``, as ``rgmp propagate`` prints it."""
        return f"{self.size[1]}x{self.size[0]}"
