"""Frames as the engine takes them (read, normalised and on the device, read ahead on a GPU),
and results as it gives them back (:func:`to_host`: one transfer per frame).

:class:`FrameFeed` gives frame ``t`` as a (1, C, H, W) float32 tensor in [0, 1] on the device
(C = 1 for a grey stack, else 3: :meth:`FrameStack.normalised`). The engine tells it which frames
a stretch will ask for, in order (:meth:`FrameFeed.expect`); with ``threaded`` (the default on
CUDA) a reader thread reads and normalises the next ``ahead`` of them into pinned (page-locked)
buffers and starts their copies to the GPU on a stream of its own, so that decoding and the
host-to-device copies overlap the network's work on the previous frame. A frame that was not
read ahead (the first, or one asked for out of order) is read when asked for. A reading error
is raised when its frame is asked for, as without the thread. On the CPU reading ahead is off
by default: with one torch thread per core there is no idle core to give it on small machines,
and the frames are read in place.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from rgmp_model.inference.frames import FrameStack

__all__ = ["FrameFeed", "to_host"]


class FrameFeed:
    """Frames of ``stack`` on ``device`` (module docstring). ``ahead``: frames read ahead;
    ``threaded``: None = on CUDA only."""

    def __init__(self, stack: FrameStack, device: torch.device | str, ahead: int = 2,
                 threaded: bool | None = None) -> None:
        self.stack, self.device = stack, torch.device(device)
        self.ahead = max(1, int(ahead))
        self.threaded = self.device.type == "cuda" if threaded is None else bool(threaded)
        self._order: deque[int] = deque()
        self._pending: dict[int, Future] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pinned: deque[tuple[Tensor, torch.cuda.Event | None]] = deque()
        self._lock = threading.Lock()
        self._stream = None

    # ----------------------------------------------------------------------------- reading
    def _host(self, t: int) -> np.ndarray:
        return self.stack.normalised(t)

    def read(self, t: int) -> Tensor:
        """Frame ``t`` read now: (1, C, H, W) float32 on the device."""
        return _on_device(torch.from_numpy(self._host(t)), self.device)

    def _read_ahead(self, t: int) -> tuple[Tensor, torch.cuda.Event | None]:
        """In the reader thread: frame ``t`` normalised, then (CUDA) copied into a pinned buffer
        and sent to the GPU on the feed's stream; returns it and the event that marks the copy."""
        frame = torch.from_numpy(self._host(t))
        if self.device.type != "cuda":
            return _on_device(frame, self.device), None
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        buffer = self._buffer(frame.shape)
        buffer.copy_(frame)
        with torch.cuda.stream(self._stream):
            on_device = buffer.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._stream)
        with self._lock:
            self._pinned.append((buffer, done))
        return _on_device(on_device, self.device), done

    def _buffer(self, shape: torch.Size) -> Tensor:
        """A pinned host buffer of ``shape``, reused once the copy that last used it is done."""
        with self._lock:
            if len(self._pinned) > self.ahead:
                buffer, done = self._pinned.popleft()
                if buffer.shape == shape:
                    if done is not None:
                        done.synchronize()
                    return buffer
        return torch.empty(shape, dtype=torch.float32, pin_memory=True)

    # ----------------------------------------------------------------------------- plan
    def expect(self, frames: Iterable[int]) -> None:
        """The frames about to be asked for, in order (a stretch's direction); reading ahead
        starts with the first of them."""
        self._order = deque(int(t) for t in frames)
        wanted = set(self._order)
        for t in [t for t in self._pending if t not in wanted]:
            self._pending.pop(t).cancel()
        self._schedule()

    def _schedule(self) -> None:
        if not self.threaded:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rgmp-frames")
        for t in list(self._order)[: self.ahead]:
            if t not in self._pending:
                self._pending[t] = self._executor.submit(self._read_ahead, t)

    def get(self, t: int) -> Tensor:
        """Frame ``t``: (1, C, H, W) float32 in [0, 1] on the device."""
        t = int(t)
        while self._order and self._order[0] != t and t in self._order:
            self._order.popleft()  # frames skipped
        if self._order and self._order[0] == t:
            self._order.popleft()
        future = self._pending.pop(t, None)
        if future is None:
            frame = self.read(t)
        else:
            frame, done = future.result()
            if done is not None:
                torch.cuda.current_stream(self.device).wait_event(done)
                frame.record_stream(torch.cuda.current_stream(self.device))
        self._schedule()
        return frame

    def close(self) -> None:
        """Stop reading ahead (pending reads are dropped)."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._order.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __del__(self) -> None:  # a session dropped mid-stretch: let the thread end
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def _on_device(frame: Tensor, device: torch.device) -> Tensor:
    """(H, W, C) -> (1, C, H, W) on ``device`` (a view: channels last in memory)."""
    return frame.to(device, non_blocking=frame.is_pinned()).permute(2, 0, 1)[None]


def to_host(*tensors: Tensor) -> list[Tensor]:
    """``tensors`` on the CPU: on a GPU copied asynchronously into pinned buffers (torch's caching
    host allocator keeps them), then one synchronisation for all; CPU tensors as they are."""
    if not tensors or all(t.device.type == "cpu" for t in tensors):
        return [t.cpu() for t in tensors]
    out = []
    for tensor in tensors:
        if tensor.device.type == "cpu":
            out.append(tensor)
            continue
        pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        out.append(pinned.copy_(tensor, non_blocking=True))
    torch.cuda.current_stream(next(t.device for t in tensors if t.device.type != "cpu")).synchronize()
    return out
