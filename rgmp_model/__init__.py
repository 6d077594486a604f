"""rgmp_model: the RGMP network (Oh et al., CVPR 2018), checkpoints and the propagation engine."""

from .checkpoint import CheckpointInfo, load_checkpoint, read_checkpoint_info, save_checkpoint
from .engine import PropagationSession, propagate, resolve_device
from .network import BACKBONES, RGMP, ModelConfig, build_rgmp

__all__ = [
    "BACKBONES",
    "CheckpointInfo",
    "ModelConfig",
    "PropagationSession",
    "RGMP",
    "build_rgmp",
    "load_checkpoint",
    "propagate",
    "read_checkpoint_info",
    "resolve_device",
    "save_checkpoint",
]
__version__ = "0.1.0"
