"""The Propagate widget's non-Qt parts: the job its worker runs (one library session), the
cached model, the messages shown to the user, and the handle that owns a running worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

_MODEL_CACHE: dict[tuple[str, float, str], Any] = {}


def _load_model(path: str, device: str) -> Any:
    """The network of a checkpoint, cached by (path, modification time, device)."""
    from rgmp_model import load_checkpoint, resolve_device

    resolved = str(resolve_device(device))
    key = (str(Path(path).resolve()), Path(path).stat().st_mtime if Path(path).exists() else 0.0, resolved)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()  # one model in memory at a time
        _MODEL_CACHE[key] = load_checkpoint(path, device=resolved)[0]
    return _MODEL_CACHE[key]


def user_message(error: BaseException) -> str:
    """What to tell the user about an expected failure."""
    message = str(error)
    if "out of memory" in message.lower() and "smaller" not in message:
        return f"out of GPU memory: lower the working size, or run on the CPU ({message.splitlines()[0]})"
    return message


def propagate_job(checkpoint: str, frames: Any, keyframes: dict[int, np.ndarray], boxes: dict[int, np.ndarray],
                  options: dict[str, Any], direction: str, from_keyframes: list[int] | None):
    """The worker's generator: load the model, build the session (box starts are refined by the
    network into keyframes), then yield the session's (t, labels, confidence) results.

    Expected failures (a bad checkpoint, out of memory, ...) end the job with their message as
    the return value: superqt's generator worker would swallow a RuntimeError, and napari would
    report the others as crashes with a traceback."""
    from rgmp_model import PropagationSession

    try:
        model = _load_model(checkpoint, options["device"])
        session = PropagationSession(model, frames, **options)
        for t, labels in keyframes.items():
            session.add_keyframe(t, labels)
        for t, box_labels in boxes.items():
            session.add_box_keyframe(t, box_labels)
        yield from session.propagate(direction, from_keyframes=from_keyframes)
    except (ValueError, FileNotFoundError, RuntimeError, MemoryError) as error:
        return user_message(error)
    return None


class JobHandle:
    """The running worker and its progress bar, held apart from the widget so that the widget's
    destruction (the dock or the viewer closing) can still stop them."""

    def __init__(self) -> None:
        self.worker: Any = None
        self.progress: Any = None

    def stop(self, *_: Any) -> None:
        if self.worker is not None:
            self.worker.quit()

    def abandon(self, *_: Any) -> None:
        """The widget is gone: no more callbacks into it, stop the worker, close the bar."""
        if self.worker is not None:
            for signal in (self.worker.yielded, self.worker.returned, self.worker.finished):
                try:
                    signal.disconnect()
                except (TypeError, RuntimeError):
                    pass
            self.worker.quit()
        if self.progress is not None:
            self.progress.close()
            self.progress = None
