"""The one way the project opens a propagation session: ``open_session(model, frames, options)``.

    session = open_session("model.pt", frames, PropagationOptions(direction="both", device="cpu"))
    session.add_keyframe(0, labels0)
    for t, labels, confidence in session.propagate():
        ...

The command line, the Propagate widget's job, training validation and the benchmarks all call it,
so that the same inputs give the same session: the same model (loaded once, then cached), the
same resolved options (the checkpoint's recorded working size applied when ``max_size`` is None)
and the same working size.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rgmp_model.nn.checkpoint import CheckpointInfo, load_checkpoint
from rgmp_model.inference.engine import FrameResult, PropagationSession
from rgmp_model.nn.network import RGMP
from rgmp_model.inference.options import PropagationOptions, resolve_device

MODEL_CACHE_SIZE = 2  # (checkpoint, device) pairs kept in memory
_models: OrderedDict[tuple[str, int, int, str], tuple[RGMP, CheckpointInfo]] = OrderedDict()
_lock = threading.Lock()


def load_model(checkpoint: str | os.PathLike, device: str = "auto") -> tuple[RGMP, CheckpointInfo]:
    """``load_checkpoint`` on ``device``, cached: the last ``MODEL_CACHE_SIZE`` (file, device)
    pairs stay in memory, and a file that changed (modification time, size) is read again."""
    path = Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist: check the path")
    stat = path.stat()
    resolved = resolve_device(device)
    key = (str(path), stat.st_mtime_ns, stat.st_size, str(resolved))
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
        loaded = load_checkpoint(path, device=resolved)
        _models[key] = loaded
        while len(_models) > MODEL_CACHE_SIZE:
            _models.popitem(last=False)
        return loaded


def open_session(
    model: RGMP | str | os.PathLike, frames: Any, options: PropagationOptions | None = None
) -> PropagationSession:
    """A :class:`PropagationSession` over ``frames`` ((T, H, W) or (T, H, W, C) array-like).

    ``model``: a checkpoint path (napari-rgmp's format or the authors' weights.pth; loaded through
    :func:`load_model`, whose recorded working size applies when ``options.max_size`` is None) or
    an :class:`RGMP` network (no recorded size: None means full size). ``session.options`` holds
    the resolved options, ``session.checkpoint`` the checkpoint's info (None for a network).
    """
    options = options if options is not None else PropagationOptions()
    if isinstance(model, RGMP):
        return PropagationSession(model, frames, options)
    network, info = load_model(model, options.device)
    return PropagationSession(network, frames, options, checkpoint=info)


def propagate(
    model: RGMP,
    frames: Any,
    labels: Any,
    *,
    reference_frame: int | None = None,
    direction: str = "forward",
    **session_options: Any,
) -> Iterator[FrameResult]:
    """Convenience wrapper: ``labels`` is either one (H, W) label image for ``reference_frame``
    (default 0) or a (T, H, W) stack whose labelled frames are the keyframes. ``session_options``:
    ``options=PropagationOptions(...)`` or the options as keywords."""
    session = PropagationSession(model, frames, **session_options)
    if np.ndim(labels) == 2:
        session.add_keyframe(0 if reference_frame is None else reference_frame, labels)
    else:
        session.add_keyframes_from_stack(labels)
    return session.propagate(direction)
