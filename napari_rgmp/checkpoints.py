"""The checkpoints the widgets offer: the bundled default model (when the package ships one), the
user's model folder (``rgmp models``) and every checkpoint opened or created in this session
(e.g. by the Fine-tune widget)."""

from __future__ import annotations

from pathlib import Path

from psygnal import Signal

from rgmp_model.models import bundled_checkpoint, user_checkpoints


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
