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
    ``info`` None and the reason it cannot be used as ``text``; ``key`` is the file's version.
    ``details``: the library's one-line description (recipe, iterations, date) for a tooltip."""

    path: str
    key: tuple[int, int]
    info: Any
    text: str

    @property
    def ok(self) -> bool:
        return self.info is not None

    @property
    def details(self) -> str:
        if self.info is None:
            return self.path
        return f"{self.path}\n{self.info.describe()}\ntrained on: {_trained_on(self.info)}"

    @property
    def line(self) -> str:
        """One line for the dock: :func:`model_line`, or "not usable: <reason>"."""
        if self.info is None:
            return f"not usable: {(self.text.splitlines() or [''])[0]}"
        return model_line(self.info)


def encoder_name(backbone: str) -> str:
    """"resnet18" -> "ResNet-18", "efficientnet_lite0" -> "EfficientNet-Lite0"."""
    if backbone.startswith("resnet"):
        return f"ResNet-{backbone[len('resnet'):]}"
    if backbone.startswith("efficientnet_lite"):
        return f"EfficientNet-Lite{backbone[len('efficientnet_lite'):]}"
    return backbone


TRAINED_ON_SHOWN = 90  # characters of "trained on" in the dock (all of it in the tooltip)


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1].rstrip(" ,;") + "…"


def _trained_on(info: Any) -> str:
    meta = info.metadata
    if info.source == "authors":
        return "the authors' RGMP training (DAVIS, PASCAL VOC, ...; non-commercial research use)"
    if meta.get("base_checkpoint") and meta.get("frames_used") is not None:
        frames = list(meta["frames_used"])
        return (f"{len(frames)} labelled frame{'s' if len(frames) != 1 else ''} of a user's stack, "
                f"fine-tuned from {Path(str(meta['base_checkpoint'])).name}")
    if meta.get("trained_on"):
        return str(meta["trained_on"])
    data = [str(d).split(":")[0] for d in meta.get("data") or []]
    return ", ".join(dict.fromkeys(data)) or "not recorded"


def _validation(info: Any) -> str:
    scores = info.metadata.get("validation")
    if isinstance(scores, dict) and scores:
        return "; ".join(f"{name.replace(' J&F', '')} {float(value):.2f}" for name, value in scores.items()
                         if isinstance(value, (int, float)))
    best = info.metadata.get("best_validation")
    if isinstance(best, dict) and isinstance(best.get("jf"), (int, float)):
        return f"{float(best['jf']):.2f} at iteration {best.get('iteration')}"
    return "none recorded"


def _first_score(info: Any) -> str:
    scores = info.metadata.get("validation")
    if isinstance(scores, dict):
        for value in scores.values():
            if isinstance(value, (int, float)):
                return f"J&F {float(value):.2f}"
    best = info.metadata.get("best_validation")
    if isinstance(best, dict) and isinstance(best.get("jf"), (int, float)):
        return f"J&F {float(best['jf']):.2f}"
    return "no J&F recorded"


def model_line(info: Any) -> str:
    """A model (a CheckpointInfo) in one short line: encoder, first validation J&F, working size,
    e.g. "EfficientNet-Lite0 · J&F 0.72 · 384 px" (all of it: :func:`model_summary`)."""
    source = " · fine-tuned" if info.metadata.get("base_checkpoint") else ""
    size = f"{info.working_size} px" if info.working_size else "full size"
    return f"{encoder_name(info.config.backbone)}{source} · {_first_score(info)} · {size}"


def model_summary(info: Any) -> str:
    """What a user needs to know of a model (a CheckpointInfo), one item a line: encoder, what it
    was trained on, its validation J&F and its working size."""
    size = info.working_size
    return "\n".join([
        f"encoder: {encoder_name(info.config.backbone)} (decoder {info.config.decoder_channels} channels)",
        f"trained on: {_shorten(_trained_on(info), TRAINED_ON_SHOWN)}",
        f"validation J&F: {_validation(info)}",
        f"working size: {f'{size} px (longer side)' if size else 'full size'}",
    ])


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
        description = Description(str(path), key, info, model_summary(info))
    except Exception as error:  # shown to the user, never raised
        description = Description(str(path), key, None, str(error) or type(error).__name__)
    with _descriptions_lock:
        _descriptions[(str(path), key)] = description
    return description
