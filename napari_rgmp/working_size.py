"""The Propagate dock's "working size" control: it shows the chosen model's working size and
means "the model's" (None) until the user sets a value (0: full size); after a run it also shows
the size the session actually used (``WorkingSize``: larger for small objects, smaller after
running out of memory)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QSpinBox


class WorkingSizeSpin(QSpinBox):
    """Pixels of the working size's longer side, 0 shown as "full size". :meth:`follow_model` and
    :meth:`show_model` track the model's size; a value the user sets sticks until the model changes."""

    def __init__(self) -> None:
        super().__init__()
        self.setRange(0, 16384)
        self.setSingleStep(64)
        self.setSpecialValueText("full size")
        self.follows_model = True
        self.valueChanged.connect(self._set_by_user)

    def _set_by_user(self, *_: Any) -> None:
        self.follows_model = False
        self.show_used(None)

    def show_used(self, size: tuple[int, int] | None) -> None:
        """Show the (h, w) a run used beside the bound (None: nothing run with this setting yet)."""
        text = f" px, used {size[1]}x{size[0]}" if size is not None else ""
        if text != self.suffix():
            self.setSuffix(text)

    def follow_model(self, description: Any) -> None:
        """A new model: its working size applies again."""
        self.follows_model = True
        self.show_used(None)
        self.show_model(description)

    def show_model(self, description: Any) -> None:
        """Show the working size the model was made for (0: full size) while it applies."""
        if self.follows_model:
            size = description.info.working_size if description is not None and description.ok else None
            self.blockSignals(True)
            self.setValue(size or 0)
            self.blockSignals(False)

    def max_size(self) -> int | None:
        """``PropagationOptions.max_size``: None while the model's size applies, else the value."""
        return None if self.follows_model else self.value()
