"""The checkpoints the widgets offer: the bundled default model (when the package ships one), the
user's model folder (``rgmp models``) and every checkpoint opened or created in this session
(e.g. by the Fine-tune widget); and their descriptions, read once per file version."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psygnal import Signal

from rgmp_model.nn.models import bundled_checkpoint, user_checkpoints


class CheckpointRegistry:
    """An ordered list of checkpoint paths; ``changed`` is emitted when one is added."""

    changed = Signal()

    def __init__(self) -> None:
        self._added: list[Path] = []

    def paths(self) -> list[Path]:
        """The bundled default first (if any), then the added ones (most recent first), then the
        user model folder's."""
        bundled = bundled_checkpoint()
        found = ([bundled] if bundled is not None else []) + self._added[::-1] + user_checkpoints()
        return [p for i, p in enumerate(found) if p.is_file() and p not in found[:i]]

    def add(self, path: str | Path) -> Path:
        path = Path(path).resolve()
        if path in self._added:
            self._added.remove(path)
        self._added.append(path)
        self.changed.emit()
        return path


registry = CheckpointRegistry()


def file_key(path: str | os.PathLike) -> tuple[int, int]:
    """(modification time, size) of a file, to notice that it changed; (0, -1) if missing."""
    try:
        stat = os.stat(path)
    except OSError:
        return (0, -1)
    return (stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class Description:
    """What a checkpoint file is: ``info`` (its CheckpointInfo) and a one-line ``text``, or
    ``info`` None and the reason it cannot be used as ``text``; ``key`` is the file's version."""

    path: str
    key: tuple[int, int]
    info: Any
    text: str

    @property
    def ok(self) -> bool:
        return self.info is not None


_descriptions: dict[tuple[str, tuple[int, int]], Description] = {}
_descriptions_lock = threading.Lock()


def cached_description(path: str | os.PathLike) -> Description | None:
    """The description of ``path`` as it is now, when it was read before (no file reading)."""
    with _descriptions_lock:
        return _descriptions.get((str(path), file_key(path)))


def describe_checkpoint(path: str | os.PathLike) -> Description:
    """Read (once per file version, then cached) what ``path`` is; never raises. Reads the whole
    file: call it from a worker thread."""
    known = cached_description(path)
    if known is not None:
        return known
    key = file_key(path)
    try:
        from rgmp_model.nn.checkpoint import read_checkpoint_info

        info = read_checkpoint_info(path)
        description = Description(str(path), key, info, info.describe())
    except Exception as error:  # shown to the user, never raised
        description = Description(str(path), key, None, str(error) or type(error).__name__)
    with _descriptions_lock:
        _descriptions[(str(path), key)] = description
    return description
