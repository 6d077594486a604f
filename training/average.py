"""Weight averaging of checkpoints of one lineage (a "model soup"): the last step of the default
recipe averages stage 3's best and stage 4's final network, which scores above either on the
three validation groups (docs/benchmarks.md, "Stage 4 and the average").

    python scripts/average_checkpoints.py A.pt B.pt --weights 0.5 0.5 --out average.pt
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from rgmp_model import load_checkpoint, save_checkpoint
from rgmp_model.io.outputs import check_not_input
from rgmp_model.nn.network import RGMP

__all__ = ["average_checkpoints", "write_average"]


def average_checkpoints(paths: Sequence[str | os.PathLike], weights: Sequence[float]) -> tuple[RGMP, dict[str, Any]]:
    """The network whose every floating-point weight is ``sum(w_i * weight_i)`` over the
    checkpoints ``paths`` (same encoder and decoder; ``weights`` positive, summing to 1; integer
    buffers from the last checkpoint), and metadata naming the sources and their weights (the last
    checkpoint's metadata otherwise: its data and licence)."""
    if len(paths) < 2 or len(paths) != len(weights):
        raise ValueError(f"give two or more checkpoints and one weight each (got {len(paths)} and {len(weights)})")
    if any(w <= 0 for w in weights) or abs(sum(weights) - 1) > 1e-6:
        raise ValueError(f"the weights must be positive and sum to 1, got {list(weights)}")
    loaded = [load_checkpoint(path) for path in paths]
    first = loaded[0][1]
    for path, (_, info) in zip(paths, loaded):
        if info.config != first.config:
            raise ValueError(f"{path} is a {info.config}, {paths[0]} a {first.config}: only networks of one "
                             "architecture (one lineage of training) can be averaged")
    states = [model.state_dict() for model, _ in loaded]
    mixed = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            total = sum(w * state[key].double() for w, state in zip(weights, states))
            mixed[key] = total.to(last.dtype)
        else:
            mixed[key] = last
    network = loaded[-1][0]
    network.load_state_dict(mixed)
    metadata = dict(loaded[-1][1].metadata)
    metadata["averaged_from"] = [{"checkpoint": str(path), "weight": float(w)} for path, w in zip(paths, weights)]
    metadata["recipe"] = (f"weight average of {len(paths)} checkpoints (training/average.py); the last one's recipe: "
                          f"{metadata.get('recipe', 'not recorded')}")
    return network, metadata


def write_average(paths: Sequence[str | os.PathLike], weights: Sequence[float], out: str | os.PathLike) -> Path:
    """:func:`average_checkpoints` written to ``out`` (float32), never over one of ``paths``
    (``rgmp_model.io.outputs.check_not_input``, the one rule for every output)."""
    check_not_input(out, paths, "--out")
    network, metadata = average_checkpoints(paths, weights)
    return save_checkpoint(out, network.to(torch.float32), metadata)
