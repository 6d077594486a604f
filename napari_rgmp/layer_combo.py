"""A combo box listing the viewer's layers of one type, kept up to date as layers come and go."""

from __future__ import annotations

from typing import Any, Callable

from qtpy.QtWidgets import QComboBox, QWidget

from .weak_slots import weak_slot


class LayerCombo(QComboBox):
    """Layers of ``layer_type`` (e.g. ``napari.layers.Image``) by name; ``none_text`` adds a
    first entry meaning "no layer". ``layer()`` is the chosen layer or None. With ``prefer``, the
    default choice is the newest layer it accepts (else ``none_text``, else the newest layer)."""

    def __init__(self, viewer: Any, layer_type: type, none_text: str | None = None,
                 parent: QWidget | None = None, prefer: Callable[[Any], bool] | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.layer_type = layer_type
        self.none_text = none_text
        self.prefer = prefer
        self.excluded: set[str] = set()
        events = viewer.layers.events
        refresh = weak_slot(self.refresh)  # a combo that is gone (dock closed or collected) is not called
        for event in (events.inserted, events.removed, events.reordered):
            event.connect(refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.currentText()
        layers = [layer for layer in self.viewer.layers
                  if isinstance(layer, self.layer_type) and layer.name not in self.excluded]
        names = [layer.name for layer in layers]
        preferred = [layer.name for layer in layers if self.prefer is not None and self.prefer(layer)]
        entries = ([self.none_text] if self.none_text is not None else []) + names
        if entries == [self.itemText(i) for i in range(self.count())]:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(entries)
        if current in names:
            self.setCurrentText(current)
        elif preferred:
            self.setCurrentText(preferred[-1])  # the newest layer it prefers
        elif current in entries:
            self.setCurrentText(current)
        elif names and self.none_text is None and self.prefer is None:
            self.setCurrentText(names[-1])  # the newest layer of this type
        self.blockSignals(False)
        if self.currentText() != current:  # only a real change of choice is announced
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Any:
        name = self.currentText()
        if not name or name == self.none_text or name not in self.viewer.layers:
            return None
        layer = self.viewer.layers[name]
        return layer if isinstance(layer, self.layer_type) else None

    def set_layer(self, name: str) -> None:
        self.refresh()
        self.setCurrentText(name)
