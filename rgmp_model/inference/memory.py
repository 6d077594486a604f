"""Out of memory during propagation: detected, memory freed, one retry with less, or a clear error.

Every session holds a :class:`MemoryGuard` (``session.memory``; its notes are ``session.notes``).
The engine runs each frame's work (the keyframe's reference features, the network step, the
resize of the probabilities to full size) through :meth:`MemoryGuard.attempt`. When it runs out
of memory (``torch.OutOfMemoryError`` on a GPU, torch's CPU allocator's "can't allocate memory",
a numpy ``MemoryError``), the guard frees what it can (the garbage, the CUDA cache; the caller
drops its cached features), lets the caller take less and retries that work once:

- full-frame mode: a smaller working size, 3/4 of the longer side rounded down to the network
  stride (``WorkingSize.shrink``, :mod:`rgmp_model.inference.working_size`); when the resize to
  full size failed on a GPU, that resize moves to the CPU instead;
- region mode: one crop per network call.

It is one retry per ``propagate()`` run, and what was taken stays for the rest of the session.
Each retry is said in ``session.notes`` and as a :class:`MemoryRetryWarning`. When the retry
runs out of memory too, or nothing smaller is possible, :class:`OutOfMemory` (a RuntimeError
and a MemoryError) names the frame and the size and says what to try. The frames yielded
before it are the caller's to keep; none is yielded twice.
"""

from __future__ import annotations

import gc
import warnings
from typing import Callable, TypeVar

import torch

from rgmp_model.errors import OutOfMemory, is_out_of_memory  # the one test of a failed allocation

__all__ = ["MemoryGuard", "MemoryRetryWarning", "OutOfMemory", "is_out_of_memory"]
T = TypeVar("T")


class MemoryRetryWarning(UserWarning):
    """A frame ran out of memory and was retried with less (the message says how)."""


def free_memory(device: torch.device) -> None:
    """Collect the garbage (tensors of the failed attempt) and give cached GPU memory back."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class MemoryGuard:
    """One per session on ``device``: :meth:`attempt` runs work with one retry per run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.notes: list[str] = []
        self._retried = False

    def begin_run(self) -> None:
        """A new ``propagate()`` run: it may retry once again."""
        self._retried = False

    def attempt(self, work: Callable[[], T], where: str, take_less: Callable[[], str | None],
                context: Callable[[], str], advice: Callable[[], str]) -> T:
        """``work()``; when it runs out of memory: free memory, ``take_less()`` (returns what it
        changed, e.g. "a smaller working size 96x72", or None when nothing smaller is possible)
        and ``work()`` again, once per run. ``where`` ("frame 12"), ``context()`` ("working size
        96x72, 3 objects") and ``advice()`` (what to try) word the :class:`OutOfMemory` error."""
        try:
            return work()
        except Exception as error:  # noqa: BLE001 - only out of memory is handled, the rest re-raised
            if not is_out_of_memory(error):
                raise
        free_memory(self.device)  # outside the except block: the failed attempt's tensors are released
        earlier = self._retried
        change = None if earlier else take_less()
        if change is not None:
            self._retried = True
            note = f"out of memory at {where} on {self.device.type}: retried with {change}"
            self.notes.append(note)
            warnings.warn(note, MemoryRetryWarning, stacklevel=3)
            try:
                return work()
            except Exception as error:  # noqa: BLE001
                if not is_out_of_memory(error):
                    raise
            free_memory(self.device)
        again = (", again after a retry with less at an earlier frame" if earlier else
                 ", also after a retry with less" if change is not None else "")
        raise OutOfMemory(f"out of {self.device.type} memory at {where} ({context()}){again}: the frames finished "
                          f"before it are kept; try {advice()}")
