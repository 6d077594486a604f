"""rgmp_model: the RGMP network (Oh et al., CVPR 2018), checkpoints and the propagation engine.

The names below are imported on first use, so that modules which need no torch (synthetic data,
metrics, file I/O) import quickly on their own.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BACKBONES": "network",
    "ModelConfig": "network",
    "RGMP": "network",
    "build_rgmp": "network",
    "CheckpointInfo": "checkpoint",
    "load_checkpoint": "checkpoint",
    "read_checkpoint_info": "checkpoint",
    "save_checkpoint": "checkpoint",
    "PropagationSession": "engine",
    "propagate": "engine",
    "PropagationOptions": "options",
    "resolve_device": "options",
    "resolve_max_size": "options",
    "load_model": "session",
    "open_session": "session",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
