"""An independent, plain re-statement of the RGMP authors' released code (seoungwugoh/RGMP,
PyTorch 0.3.1), used as the reference in tests and in benchmarks/propagate.py.

- ``AuthorsRGMP``: their ``model.py`` architecture with their module names (Encoder.conv1_p,
  Decoder.GC, convG1/2, RF4/RF3/RF2 with convFS1-3/convMM1-2, pred2-5), ordinary BatchNorm2d in
  eval mode, and ``F.upsample(mode='bilinear')`` as it behaved in 0.3.1 (align_corners=True).
- ``infer_mo``: their ``run.py`` procedure (Infer_SO / Infer_MO with Encode_MS / Propagate_MS and
  utils.downsample / upsample), one object at a time, a separate background pass, scales 0.5,
  0.75, 1.0, on frames padded by their dataset rule. OpenCV's cv2.resize(INTER_LINEAR) on float32
  is bilinear interpolation with half-pixel centres and no antialiasing, i.e.
  F.interpolate(mode="bilinear", align_corners=False); that is what ``_cv2_linear`` does.

It deliberately shares no code with rgmp_model beyond calling a network's encode/decode.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# ------------------------------------------------------------------------------- architecture


def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class AuthorsEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1_p = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=True)
        resnet = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.res2, self.res3, self.res4, self.res5 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.register_buffer("mean", torch.FloatTensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.FloatTensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, in_f, in_p):
        f = (in_f - self.mean) / self.std
        p = torch.unsqueeze(in_p, dim=1).float()
        c1 = self.relu(self.bn1(self.conv1(f) + self.conv1_p(p)))
        r2 = self.res2(self.maxpool(c1))
        r3 = self.res3(r2)
        r4 = self.res4(r3)
        return self.res5(r4), r4, r3, r2


class AuthorsGC(nn.Module):
    def __init__(self, inplanes, planes, kh=7, kw=7):
        super().__init__()
        self.conv_l1 = nn.Conv2d(inplanes, 256, kernel_size=(kh, 1), padding=(kh // 2, 0))
        self.conv_l2 = nn.Conv2d(256, planes, kernel_size=(1, kw), padding=(0, kw // 2))
        self.conv_r1 = nn.Conv2d(inplanes, 256, kernel_size=(1, kw), padding=(0, kw // 2))
        self.conv_r2 = nn.Conv2d(256, planes, kernel_size=(kh, 1), padding=(kh // 2, 0))

    def forward(self, x):
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


class AuthorsRefine(nn.Module):
    def __init__(self, inplanes, planes):
        super().__init__()
        self.convFS1 = nn.Conv2d(inplanes, planes, 3, padding=1)
        self.convFS2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.convFS3 = nn.Conv2d(planes, planes, 3, padding=1)
        self.convMM1 = nn.Conv2d(planes, planes, 3, padding=1)
        self.convMM2 = nn.Conv2d(planes, planes, 3, padding=1)

    def forward(self, f, pm):
        s = self.convFS1(f)
        s = s + self.convFS3(F.relu(self.convFS2(F.relu(s))))
        m = s + _up(pm, 2)
        return m + self.convMM2(F.relu(self.convMM1(F.relu(m))))


class AuthorsDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        mdim = 256
        self.GC = AuthorsGC(4096, mdim)
        self.convG1 = nn.Conv2d(mdim, mdim, 3, padding=1)
        self.convG2 = nn.Conv2d(mdim, mdim, 3, padding=1)
        self.RF4 = AuthorsRefine(1024, mdim)
        self.RF3 = AuthorsRefine(512, mdim)
        self.RF2 = AuthorsRefine(256, mdim)
        self.pred5 = nn.Conv2d(mdim, 2, 3, padding=1)
        self.pred4 = nn.Conv2d(mdim, 2, 3, padding=1)
        self.pred3 = nn.Conv2d(mdim, 2, 3, padding=1)
        self.pred2 = nn.Conv2d(mdim, 2, 3, padding=1)

    def forward(self, r5, x5, r4, r3, r2):
        x = self.GC(torch.cat((r5, x5), dim=1))
        m5 = x + self.convG2(F.relu(self.convG1(F.relu(x))))
        m4 = self.RF4(r4, m5)
        m3 = self.RF3(r3, m4)
        m2 = self.RF2(r2, m3)
        p2, p3 = self.pred2(F.relu(m2)), self.pred3(F.relu(m3))
        p4, p5 = self.pred4(F.relu(m4)), self.pred5(F.relu(m5))
        return _up(p2, 4), p2, p3, p4, p5


class AuthorsRGMP(nn.Module):
    def __init__(self):
        super().__init__()
        self.Encoder = AuthorsEncoder()
        self.Decoder = AuthorsDecoder()


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and keep the output logits moderate, so that
    comparisons exercise every tensor and probabilities are not saturated at 0 or 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "running_var") and module.running_var is not None:
                n = module.running_var.numel()
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + 0.5 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
        for name, parameter in model.named_parameters():
            if name.split(".")[-2].startswith("pred"):
                parameter.mul_(0.1)
    return model.eval()


def authors_state_dict(model: AuthorsRGMP) -> "OrderedDict[str, torch.Tensor]":
    """What ``nn.DataParallel(RGMP()).state_dict()`` gave under PyTorch 0.3.1: every key starts
    with ``module.`` and BatchNorm has no ``num_batches_tracked``."""
    return OrderedDict(
        ("module." + k, v.clone()) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    )


# ------------------------------------------------------------------------------- procedure


def _cv2_linear(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """cv2.resize(x, (width, height), interpolation=cv2.INTER_LINEAR) for (C, h, w) float32."""
    return F.interpolate(x[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def downsample(xs, scale):
    """utils.downsample: int(size * scale), then up past the next multiple of 32."""
    h, w = xs[0].shape[-2:]
    new_h, new_w = int(h * scale), int(w * scale)
    new_h, new_w = new_h + 32 - new_h % 32, new_w + 32 - new_w % 32
    return [_cv2_linear(x, new_h, new_w) for x in xs]


def pad_like_dataset(frames: torch.Tensor, masks: torch.Tensor):
    """utils.DAVIS padding: frames (T, 3, H, W), masks (K, T, H, W) -> padded, ((lh, uh), (lw, uw))."""
    h, w = frames.shape[-2:]
    new_h, new_w = h + 32 - h % 32, w + 32 - w % 32
    lh, uh = (new_h - h) // 2, (new_h - h) // 2 + (new_h - h) % 2
    lw, uw = (new_w - w) // 2, (new_w - w) // 2 + (new_w - w) % 2
    return F.pad(frames, (lw, uw, lh, uh)), F.pad(masks, (lw, uw, lh, uh)), ((lh, uh), (lw, uw))


def _device(model) -> torch.device:
    return next(model.parameters()).device


def encode_ms(model, frame, mask, scales):
    """Encode_MS: frame (3, H, W), mask (H, W) on the CPU -> {scale: reference r5} on the
    model's device (inputs are resized on the CPU and moved per call, as ToCudaVariable did)."""
    ref = {}
    for sc in scales:
        f, p = (frame, mask[None]) if sc == 1.0 else downsample([frame, mask[None]], sc)
        ref[sc] = model.encode(f[None].to(_device(model)), p.to(_device(model))).r5
    return ref


def propagate_ms(model, ref, frame, prev, scales):
    """Propagate_MS: -> (H, W) mean over scales of P(object), on the CPU."""
    h, w = frame.shape[-2:]
    total = torch.zeros(h, w)
    for sc in scales:
        f, p = (frame, prev[None]) if sc == 1.0 else downsample([frame, prev[None]], sc)
        logits = model.decode(model.encode(f[None].to(_device(model)), p.to(_device(model))), ref[sc]).logits
        e = F.softmax(logits, dim=1)[:, 1].cpu()
        if sc != 1.0:
            e = _cv2_linear(e, h, w)
        total += e[0]
    return total / len(scales)


@torch.no_grad()
def infer_mo(model, frames, masks, scales=(0.5, 0.75, 1.0)):
    """Infer_MO. frames (T, 3, H, W) padded in [0, 1]; masks (K, H, W) one-hot of frame 0,
    padded -> E (K+1, T, H, W): background, then each object."""
    num_objects, t = len(masks), len(frames)
    if num_objects == 1:  # Infer_SO
        e = torch.zeros(1, t, *frames.shape[-2:])
        e[0, 0] = masks[0]
        ref = encode_ms(model, frames[0], e[0, 0], scales)
        for f in range(t - 1):
            e[0, f + 1] = propagate_ms(model, ref, frames[f + 1], e[0, f], scales)
        return torch.cat([1 - e, e], dim=0)
    e = torch.zeros(num_objects + 1, t, *frames.shape[-2:])
    e[1:, 0] = masks
    e[0, 0] = 1 - masks.sum(0)
    ref_bg = encode_ms(model, frames[0], e[1:, 0].sum(0), scales)
    refs = [encode_ms(model, frames[0], e[o + 1, 0], scales) for o in range(num_objects)]
    for f in range(t - 1):
        e[0, f + 1] = 1 - propagate_ms(model, ref_bg, frames[f + 1], e[1:, f].sum(0), scales)
        for o in range(num_objects):
            e[o + 1, f + 1] = propagate_ms(model, refs[o], frames[f + 1], e[o + 1, f], scales)
        p = torch.clamp(e[:, f + 1], 1e-7, 1 - 1e-7)
        e[:, f + 1] = F.softmax(torch.log(p / (1 - p)), dim=0)
    return e
