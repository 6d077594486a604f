"""Network calls of a fixed shape replayed as CUDA graphs.

On a GPU the network's own kernels are short (a 384 px frame through the default model is a few
hundred launches of a few microseconds each), so launching them from Python costs more than
running them. :class:`GraphCache` records a call (the encoder and decoder of a batch of frames
and masks) as a ``torch.cuda.CUDAGraph`` once the same shapes have come ``capture_after`` times,
and replays it afterwards: inputs copied into the graph's own tensors, one launch, the output
copied out. A call with shapes not seen that often runs eagerly, and so does one whose capture
fails (the failure is remembered). Full-frame mode's calls have one shape per stretch (the working
size, the objects); region mode rounds its crop counts up to a few buckets
(:func:`bucket`) so that objects leaving or being born do not make new shapes.

Only on CUDA (:func:`rgmp_model.nn.inference.inference_network` attaches a cache there): on the
CPU a replay saves nothing (the kernels are the cost), and ``torch.compile`` would cost tens of
seconds per shape. The replayed results equal the eager ones (the same kernels on the same
inputs; tests/nn/test_inference_network.py, marked gpu).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["GraphCache", "bucket"]

BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)


def bucket(count: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The smallest bucket holding ``count`` (counts beyond the last: multiples of it)."""
    for size in buckets:
        if count <= size:
            return size
    return -(-count // buckets[-1]) * buckets[-1]


class _Graph:
    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: list[Tensor], output: Tensor) -> None:
        self.graph, self.inputs, self.output = graph, inputs, output


class GraphCache:
    """CUDA graphs of ``function(*tensors)`` per input signature (module docstring). ``capture_after``:
    eager calls of a signature before it is captured; ``most``: graphs kept (least recently used
    dropped, with their memory)."""

    def __init__(self, capture_after: int = 2, most: int = 8) -> None:
        self.capture_after, self.most = capture_after, most
        self._graphs: OrderedDict[tuple, _Graph | None] = OrderedDict()  # None: capture failed
        self._seen: dict[tuple, int] = {}
        self._lock = threading.Lock()
        self.replays = 0
        self.captures = 0

    @staticmethod
    def signature(name: str, tensors: Sequence[Tensor]) -> tuple:
        return (name, *((tuple(t.shape), t.dtype, t.stride(), t.device) for t in tensors))

    def __call__(self, name: str, function: Callable[..., Tensor], tensors: Sequence[Tensor]) -> Tensor:
        """``function(*tensors)``, replayed from a graph when this signature has one."""
        if not tensors or tensors[0].device.type != "cuda" or torch.cuda.is_current_stream_capturing():
            return function(*tensors)
        key = self.signature(name, tensors)
        with self._lock:
            graph = self._graphs.get(key, False)
            if graph is False:
                self._seen[key] = seen = self._seen.get(key, 0) + 1
            else:
                self._graphs.move_to_end(key)
        if graph is None or (graph is False and seen <= self.capture_after):
            return function(*tensors)
        if graph is False:
            graph = self._capture(key, function, tensors)
            if graph is None:
                return function(*tensors)
        for static, tensor in zip(graph.inputs, tensors):
            static.copy_(tensor)
        graph.graph.replay()
        self.replays += 1
        return graph.output.clone()

    def _capture(self, key: tuple, function: Callable[..., Tensor], tensors: Sequence[Tensor]) -> _Graph | None:
        device = tensors[0].device
        inputs = [t.clone() for t in tensors]
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: lazy initialisations happen outside the capture
                    function(*inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                output = function(*inputs)
        except RuntimeError:
            with self._lock:
                self._graphs[key] = None  # eager from now on
            return None
        captured = _Graph(graph, inputs, output)
        with self._lock:
            self._graphs[key] = captured
            self.captures += 1
            while sum(g is not None for g in self._graphs.values()) > self.most:
                for old, value in self._graphs.items():
                    if value is not None:
                        del self._graphs[old]
                        break
        return captured

    def clear(self) -> None:
        """Forget every graph (their memory goes with them)."""
        with self._lock:
            self._graphs.clear()
            self._seen.clear()
