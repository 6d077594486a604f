"""The RGMP network (Oh et al., CVPR 2018, "Fast Video Object Segmentation by Reference-Guided
Mask Propagation").

A Siamese encoder (:mod:`rgmp_model.nn.encoders`: a torchvision ResNet or an EfficientNet-Lite with
frozen BatchNorm; the 1-channel mask enters through its own convolution whose output is added to
the stem's) encodes the reference (annotated
frame + its mask) and the target (current frame + previous soft mask). A global convolution block
on concat(target r5, reference r5), a residual block and three refinement modules with skip
connections decode a 2-class mask. Heads at 1/32, 1/16, 1/8 and 1/4 are kept for deep supervision.

Bilinear upsampling inside the network uses ``align_corners=True``: that is what ``F.upsample``
did in PyTorch 0.3.1, with which the authors trained their released ``weights.pth``.
"""

from __future__ import annotations

import copy

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rgmp_model.constants import NETWORK_STRIDE
from rgmp_model.nn.encoders import ENCODERS, EncoderFeatures, build_encoder

# Encoder names (the checkpoint's ``backbone``), ResNets first.
BACKBONES: tuple[str, ...] = tuple(ENCODERS)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an RGMP network: the encoder (``backbone``, a name of
    :data:`rgmp_model.nn.encoders.ENCODERS`) and the decoder width.

    The published network is ``ModelConfig("resnet50", 256)``.
    """

    backbone: str = "resnet50"
    decoder_channels: int = 256

    def __post_init__(self) -> None:
        if self.backbone not in ENCODERS:
            raise ValueError(
                f"unknown backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}"
            )
        if not isinstance(self.decoder_channels, int) or self.decoder_channels < 2:
            raise ValueError(
                f"decoder_channels must be an integer >= 2, got {self.decoder_channels!r}"
            )

    @property
    def skip_channels(self) -> tuple[int, int, int, int]:
        """Channels of the encoder features r2, r3, r4, r5."""
        return ENCODERS[self.backbone].channels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        unknown = set(values) - {"backbone", "decoder_channels"}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**values)


class DecoderOutput(NamedTuple):
    """2-class logits (background, object): ``logits`` (B, 2, H, W) at input size, and the
    deep-supervision heads p2 (1/4), p3 (1/8), p4 (1/16), p5 (1/32)."""

    logits: Tensor
    p2: Tensor
    p3: Tensor
    p4: Tensor
    p5: Tensor


def upsample_bilinear(x: Tensor, scale_factor: int) -> Tensor:
    """(B, C, h, w) -> (B, C, h*s, w*s), bilinear with align_corners=True (PyTorch 0.3.1)."""
    return F.interpolate(x, scale_factor=scale_factor, mode="bilinear", align_corners=True)


class GlobalConvolution(nn.Module):
    """Global convolution block (Peng et al. 2017): (kh x 1 then 1 x kw) + (1 x kw then kh x 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 7) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv_l1 = nn.Conv2d(in_channels, out_channels, (kernel, 1), padding=(pad, 0))
        self.conv_l2 = nn.Conv2d(out_channels, out_channels, (1, kernel), padding=(0, pad))
        self.conv_r1 = nn.Conv2d(in_channels, out_channels, (1, kernel), padding=(0, pad))
        self.conv_r2 = nn.Conv2d(out_channels, out_channels, (kernel, 1), padding=(pad, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


class ResidualBlock(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convolutions, same width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class RefinementModule(nn.Module):
    """Merges a skip feature map with the x2-upsampled coarser decoder map."""

    def __init__(self, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.skip_conv1 = nn.Conv2d(skip_channels, channels, kernel_size=3, padding=1)
        self.skip_conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.skip_conv3 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.merge_conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.merge_conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, skip: Tensor, coarse: Tensor) -> Tensor:
        """skip (B, Cs, 2h, 2w), coarse (B, C, h, w) -> (B, C, 2h, 2w)."""
        s = self.skip_conv1(skip)
        s = s + self.skip_conv3(F.relu(self.skip_conv2(F.relu(s))))
        m = s + upsample_bilinear(coarse, 2)
        return m + self.merge_conv2(F.relu(self.merge_conv1(F.relu(m))))


class Decoder(nn.Module):
    """Global convolution on concat(target r5, reference r5), residual block, refinement at
    1/16, 1/8 and 1/4, 2-class heads at every level."""

    def __init__(self, skip_channels: tuple[int, int, int, int], channels: int = 256) -> None:
        super().__init__()
        c2, c3, c4, c5 = skip_channels
        self.global_conv = GlobalConvolution(2 * c5, channels)
        self.residual = ResidualBlock(channels)
        self.refine4 = RefinementModule(c4, channels)
        self.refine3 = RefinementModule(c3, channels)
        self.refine2 = RefinementModule(c2, channels)
        self.pred5 = nn.Conv2d(channels, 2, kernel_size=3, padding=1)
        self.pred4 = nn.Conv2d(channels, 2, kernel_size=3, padding=1)
        self.pred3 = nn.Conv2d(channels, 2, kernel_size=3, padding=1)
        self.pred2 = nn.Conv2d(channels, 2, kernel_size=3, padding=1)

    def forward(self, target: EncoderFeatures, reference_r5: Tensor) -> DecoderOutput:
        """target features of B frames; reference_r5 (B, C5, H/32, W/32) -> DecoderOutput."""
        m5 = self.residual(self.global_conv(torch.cat((target.r5, reference_r5), dim=1)))
        m4 = self.refine4(target.r4, m5)
        m3 = self.refine3(target.r3, m4)
        m2 = self.refine2(target.r2, m3)
        p2 = self.pred2(F.relu(m2))
        p3 = self.pred3(F.relu(m3))
        p4 = self.pred4(F.relu(m4))
        p5 = self.pred5(F.relu(m5))
        return DecoderOutput(upsample_bilinear(p2, 4), p2, p3, p4, p5)

    def object_probability(self, target: EncoderFeatures, reference_r5: Tensor) -> Tensor:
        """P(object) (B, H, W) float32 at input size, without the deep-supervision heads: the
        softmax of the 2-class logits is the sigmoid of their difference, and the bilinear
        upsampling is linear, so the difference is taken at 1/4 size and upsampled alone."""
        m5 = self.residual(self.global_conv(torch.cat((target.r5, reference_r5), dim=1)))
        m2 = self.refine2(target.r2, self.refine3(target.r3, self.refine4(target.r4, m5)))
        p2 = self.pred2(F.relu(m2)).float()
        return torch.sigmoid(upsample_bilinear(p2[:, 1:] - p2[:, :1], 4))[:, 0]


class RGMP(nn.Module):
    """Reference-guided mask propagation network with stage methods ``encode`` and ``decode``.

    Frame height and width must be multiples of ``RGMP.stride`` (32, the encoder's total
    downsampling; the propagation engine pads frames up to it).
    """

    stride: int = NETWORK_STRIDE  # frame H and W must be multiples of this

    def __init__(self, config: ModelConfig = ModelConfig(), imagenet_weights: bool = False) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.backbone, imagenet_weights)
        self.decoder = Decoder(config.skip_channels, config.decoder_channels)

    def encode(self, frame: Tensor, mask: Tensor) -> EncoderFeatures:
        """frame (1 or B, 3, H, W) in [0, 1], mask (B, [1,] H, W) in [0, 1] -> features."""
        return EncoderFeatures(*self.encoder(frame, mask))

    def decode(self, target: EncoderFeatures, reference_r5: Tensor) -> DecoderOutput:
        """Target features (B frames) + reference r5 (B, C5, H/32, W/32) -> 2-class logits."""
        return self.decoder(target, reference_r5)

    def object_probability(self, target: EncoderFeatures, reference_r5: Tensor) -> Tensor:
        """Target features (B frames) + reference r5 -> P(object) (B, H, W) float32: what
        propagation needs of :meth:`decode` (the softmax's object channel), computed without the
        deep-supervision heads. A subclass that replaces :meth:`decode` gets that softmax."""
        if type(self).decode is not RGMP.decode:
            return torch.softmax(self.decode(target, reference_r5).logits.float(), dim=1)[:, 1]
        return self.decoder.object_probability(target, reference_r5)

    def forward(
        self, reference_frame: Tensor, reference_mask: Tensor, frame: Tensor, previous_mask: Tensor
    ) -> DecoderOutput:
        """One propagation step, for training: frames (B, 3, H, W), masks (B, [1,] H, W)."""
        reference_r5 = self.encode(reference_frame, reference_mask).r5
        return self.decode(self.encode(frame, previous_mask), reference_r5)


def build_rgmp(
    backbone: str = "resnet50", decoder_channels: int = 256, imagenet_weights: bool = False
) -> RGMP:
    """Build an RGMP network with random weights (ImageNet encoder weights on request, read from
    local files: nothing is ever downloaded)."""
    return RGMP(ModelConfig(backbone, decoder_channels), imagenet_weights=imagenet_weights)


def model_on_device(model: RGMP, device: torch.device | str) -> RGMP:
    """``model`` in eval mode and channels-last on ``device``: the network itself when all its
    tensors are there already, else a moved copy (a caller's network is never moved in place)."""
    device = torch.device(device)

    def there(t: Tensor) -> bool:  # "cuda" means the current GPU: any index matches it
        return t.device.type == device.type and (device.index is None or t.device.index == device.index)

    if not all(there(t) for t in (*model.parameters(), *model.buffers())):
        model = copy.deepcopy(model)
    return model.to(device, memory_format=torch.channels_last).eval()
