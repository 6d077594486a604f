"""The encoder seam of the RGMP network: every encoder takes a frame and a 1-channel mask (the
mask through its own convolution added to the stem's) and returns the stride-32, 16, 8 and 4
feature maps, whose channel counts size the decoder.

Encoders: torchvision ResNet-18/34/50 (the published RGMP uses ResNet-50; its 7x7 ``conv1_mask``
is the authors' ``conv1_p``) and EfficientNet-Lite0/Lite2 (:mod:`rgmp_model.nn.efficientnet_lite`).
A builder never downloads: ImageNet weights come from files already on the machine (the torch
hub cache for ResNets, an installed package for EfficientNet-Lite).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Protocol

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from rgmp_model.nn.efficientnet_lite import LITE_VARIANTS, EfficientNetLiteEncoder, feature_channels

__all__ = ["ENCODERS", "EncoderFeatures", "EncoderSpec", "MaskEncoder", "ResNetEncoder", "build_encoder"]

# ImageNet normalisation, applied inside the ResNet encoder to frames in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderFeatures(NamedTuple):
    """Encoder outputs for a batch of B frames of size (H, W): r5 (B, C5, H/32, W/32),
    r4 (B, C4, H/16, W/16), r3 (B, C3, H/8, W/8), r2 (B, C2, H/4, W/4)."""

    r5: Tensor
    r4: Tensor
    r3: Tensor
    r2: Tensor


class MaskEncoder(Protocol):
    """What the network needs of an encoder: ``channels`` (C2, C3, C4, C5) and a call
    ``(frame (1 or B, 3, H, W) in [0, 1], mask (B, [1,] H, W) in [0, 1]) -> (r5, r4, r3, r2)``.
    A single frame is shared by all B masks (several objects of one frame in one batch)."""

    channels: tuple[int, int, int, int]

    def __call__(self, frame: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: its feature channels (C2, C3, C4, C5) and its builder
    ``build(imagenet_weights) -> module``."""

    name: str
    channels: tuple[int, int, int, int]
    build: Callable[[bool], nn.Module]
    description: str


_RESNETS: dict[str, tuple[Callable[..., nn.Module], str, tuple[int, int, int, int]]] = {
    "resnet18": (torchvision.models.resnet18, "ResNet18_Weights", (64, 128, 256, 512)),
    "resnet34": (torchvision.models.resnet34, "ResNet34_Weights", (64, 128, 256, 512)),
    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", (256, 512, 1024, 2048)),
}


def _resnet_imagenet_state_dict(name: str) -> dict[str, Tensor]:
    """torchvision's ImageNet weights for a ResNet, from the torch hub cache only."""
    weights = getattr(torchvision.models, _RESNETS[name][1]).IMAGENET1K_V1
    filename = weights.url.rsplit("/", 1)[-1]
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name} are not in the torch cache: copy {filename} (from {weights.url}) "
            f"to {path}, or build the model without ImageNet weights (nothing is downloaded)")
    return torch.load(path, map_location="cpu", weights_only=True)


class ResNetEncoder(nn.Module):
    """torchvision ResNet with frozen BatchNorm; the mask enters through a 7x7 stride-2
    convolution (``conv1_mask``) added to conv1's output. Names match the authors' weights.pth
    once renamed (see :mod:`rgmp_model.nn.checkpoint`)."""

    def __init__(self, backbone: str = "resnet50", imagenet_weights: bool = False) -> None:
        super().__init__()
        builder, _, self.channels = _RESNETS[backbone]
        resnet = builder(weights=None, norm_layer=FrozenBatchNorm2d)
        if imagenet_weights:
            resnet.load_state_dict(_resnet_imagenet_state_dict(backbone))
        self.conv1_mask = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=True)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.res2 = resnet.layer1  # 1/4
        self.res3 = resnet.layer2  # 1/8
        self.res4 = resnet.layer3  # 1/16
        self.res5 = resnet.layer4  # 1/32
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, frame: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """frame (1 or B, 3, H, W) RGB in [0, 1]; mask (B, [1,] H, W) -> (r5, r4, r3, r2).

        A single frame's conv1 response is computed once and broadcast over the B masks."""
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        x = self.conv1((frame - self.mean) / self.std) + self.conv1_mask(mask.to(frame.dtype))
        x = self.maxpool(self.relu(self.bn1(x)))
        r2 = self.res2(x)
        r3 = self.res3(r2)
        r4 = self.res4(r3)
        r5 = self.res5(r4)
        return r5, r4, r3, r2


def _resnet_spec(name: str) -> EncoderSpec:
    return EncoderSpec(name, _RESNETS[name][2], lambda imagenet: ResNetEncoder(name, imagenet),
                       f"torchvision {name}, 7x7 mask convolution added to conv1")


def _lite_spec(name: str) -> EncoderSpec:
    return EncoderSpec(name, feature_channels(name), lambda imagenet: EfficientNetLiteEncoder(name, imagenet),
                       f"{name} (ReLU6, no squeeze-excitation), 3x3 mask convolution added to the stem")


ENCODERS: dict[str, EncoderSpec] = {
    **{name: _resnet_spec(name) for name in _RESNETS},
    **{name: _lite_spec(name) for name in LITE_VARIANTS},
}


def build_encoder(name: str, imagenet_weights: bool = False) -> nn.Module:
    """A registered encoder with random weights, or ImageNet weights read from local files
    (never downloaded). Raises ValueError for an unknown name."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}: choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name].build(imagenet_weights)
