"""rgmp_model: the RGMP network (Oh et al., CVPR 2018), checkpoints and the propagation engine.

Sub-packages (see docs/architecture.md): ``nn`` (network, encoders, checkpoints, bundled models),
``inference`` (options, session factory, engine, propagators, region mode, flow), ``io`` (image
and label stacks, zarr, Cell Tracking Challenge export), ``data`` (synthetic sequences), ``eval``
(J & F metrics); ``cli`` is the ``rgmp`` command. The names below are imported on first use, so
that modules which need no torch (synthetic data, metrics, file I/O) import quickly on their own.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BACKBONES": "nn.network",
    "ModelConfig": "nn.network",
    "RGMP": "nn.network",
    "build_rgmp": "nn.network",
    "CheckpointInfo": "nn.checkpoint",
    "load_checkpoint": "nn.checkpoint",
    "read_checkpoint_info": "nn.checkpoint",
    "save_checkpoint": "nn.checkpoint",
    "PropagationSession": "inference.engine",
    "propagate": "inference.session",
    "PropagationOptions": "inference.options",
    "resolve_device": "inference.options",
    "resolve_max_size": "inference.options",
    "load_model": "inference.session",
    "open_session": "inference.session",
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
