"""The network as propagation runs it, and the one way propagation calls it.

:func:`inference_network` turns a network into the form the engine runs: eval mode, frozen
BatchNorm folded into the convolution before it (a BatchNorm after a sum of two convolutions,
the frame's and the mask's at the encoder's stem, into both), channels-last, on the device, and
on CUDA its weights cast once to the autocast dtype (bf16 / fp16), so that no convolution casts
its weights per call. Folding turns ``conv -> scale, shift`` into one convolution with scaled
weights and a bias: the 48 BatchNorms of the default model lose a multiply and an add over their
whole output. The folded network is a
copy, equal to the network within float rounding (tests/nn/test_inference_network.py: 1e-4), kept
per network until its weights change (optimiser steps, ``load_state_dict``); a network with
nothing to fold and no cast (a stand-in of the tests) is used as it is. Training never sees a
folded network: its BatchNorm modules are gone (their state-dict keys with them).

:func:`encode` and :func:`object_probability` run it on frames and masks in channels-last, with
autocast when the weights are not already in the compute dtype.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from typing import Iterator

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops.misc import FrozenBatchNorm2d

from rgmp_model.nn.efficientnet_lite import SameConv2d, _LiteTrunk
from rgmp_model.nn.encoders import EncoderFeatures, ResNetEncoder
from rgmp_model.nn.graphs import GraphCache
from rgmp_model.nn.network import RGMP, model_on_device

__all__ = ["encode", "encode_r5", "fold_batchnorm", "inference_network", "object_probability"]

# BatchNorm attribute -> the convolutions summed before it, per module type (Sequential pairs aside).
_FOLDS: tuple[tuple[type, tuple[tuple[str, tuple[str, ...]], ...]], ...] = (
    (BasicBlock, (("bn1", ("conv1",)), ("bn2", ("conv2",)))),
    (Bottleneck, (("bn1", ("conv1",)), ("bn2", ("conv2",)), ("bn3", ("conv3",)))),
    (ResNetEncoder, (("bn1", ("conv1", "conv1_mask")),)),
    (_LiteTrunk, (("stem_bn", ("stem_conv", "mask_conv")),)),
)
_NORMS = (FrozenBatchNorm2d, nn.BatchNorm2d)
_STAGES = ("encode", "decode", "object_probability", "forward")
_CONVS = (nn.Conv2d, SameConv2d)  # exactly these types: a subclass may do more than convolve
_cache: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, RGMP]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _affine(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """A BatchNorm in eval mode as ``x * scale + shift`` (per channel, float64)."""
    mean, var = norm.running_mean.double(), norm.running_var.double()
    weight = norm.weight.double() if norm.weight is not None else torch.ones_like(mean)
    bias = norm.bias.double() if norm.bias is not None else torch.zeros_like(mean)
    scale = weight * torch.rsqrt(var + norm.eps)
    return scale, bias - mean * scale


def _fold_into(convs: list[nn.Conv2d], norm: nn.Module) -> None:
    """``norm(sum(conv(x) for conv in convs))`` becomes ``sum(conv'(x))``: every weight and bias
    scaled, the shift added to one bias (the first convolution that has one, else a new one)."""
    scale, shift = _affine(norm)
    for conv in convs:
        conv.weight.data = (conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
        if conv.bias is not None:
            conv.bias.data = (conv.bias.double() * scale).to(conv.bias.dtype)
    holder = next((c for c in convs if c.bias is not None), convs[0])
    if holder.bias is None:
        holder.bias = nn.Parameter(shift.to(holder.weight.dtype), requires_grad=False)
    else:
        holder.bias.data = (holder.bias.double() + shift).to(holder.bias.dtype)


def _fold_module(module: nn.Module) -> int:
    """Fold the BatchNorms of ``module`` itself (not its children) in place; returns how many."""
    folded = 0
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        for before, name in zip(names, names[1:]):
            conv, norm = module._modules[before], module._modules[name]
            if type(conv) in _CONVS and isinstance(norm, _NORMS):
                _fold_into([conv], norm)
                module._modules[name] = nn.Identity()
                folded += 1
    for kind, rules in _FOLDS:
        if not isinstance(module, kind):
            continue
        for norm_name, conv_names in rules:
            norm = getattr(module, norm_name, None)
            convs = [c for c in (getattr(module, n, None) for n in conv_names) if c is not None]
            if isinstance(norm, _NORMS) and convs and all(isinstance(c, nn.Conv2d) for c in convs):
                _fold_into(convs, norm)
                setattr(module, norm_name, nn.Identity())
                folded += 1
    return folded


def _has_norm(model: nn.Module) -> bool:
    return any(isinstance(m, _NORMS) for m in model.modules())


def fold_batchnorm(model: RGMP) -> RGMP:
    """A copy of ``model`` in eval mode with every BatchNorm that follows a convolution (or a sum
    of convolutions, as at the encoder's stem) folded into it and replaced by ``nn.Identity``;
    for inference only (eval statistics). ``model`` itself is never changed. A BatchNorm in a
    place the rules do not know stays as it is (correct, only not faster)."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in list(folded.modules()):
            _fold_module(module)
    folded.requires_grad_(False)
    return folded


def _weights_key(model: nn.Module) -> tuple | None:
    """What identifies the current weights of ``model``: each tensor's storage and version
    (None when they cannot be told, e.g. tensors made in inference mode: never cached)."""
    try:
        return tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
    except RuntimeError:
        return None


def inference_network(model: RGMP, device: torch.device | str, dtype: torch.dtype | None = None,
                      graphs: bool = True) -> RGMP:
    """``model`` as propagation runs it on ``device`` (module docstring): eval mode, BatchNorm
    folded, channels-last, weights in ``dtype`` when it is given on CUDA (the autocast dtype).
    On CUDA with ``graphs`` it replays its calls of a fixed shape as CUDA graphs (``.graphs``,
    :class:`~rgmp_model.nn.graphs.GraphCache`; ``network.graphs = None`` runs it eagerly).
    The result is cached per ``model`` until its weights change; ``model`` is never changed
    (except that it is put in eval mode, as a session always did). A network whose stage methods
    were replaced on the instance (a test's spy, a wrapper) is used as it is: a copy would call
    the original network's method."""
    device = torch.device(device)
    cast = dtype if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) else None
    replaced = any(name in vars(model) for name in _STAGES)  # a copy would call the original's method
    if getattr(model, "inference_form", False) or replaced or not (_has_norm(model) or cast is not None):
        return model_on_device(model, device)
    weights = _weights_key(model)
    key = (str(device), cast, weights, graphs)
    with _lock:
        kept = _cache.get(model)
        if weights is not None and kept is not None and kept[0] == key:
            return kept[1]
    network = fold_batchnorm(model)
    network = network.to(device, memory_format=torch.channels_last)
    if cast is not None:
        network = network.to(cast)
    network.inference_form = True
    network.graphs = GraphCache() if device.type == "cuda" and graphs else None
    if weights is not None:
        with _lock:
            _cache[model] = (key, network)
    return network


def compute_dtype(network: nn.Module) -> torch.dtype:
    """The dtype of the network's weights (float32 unless :func:`inference_network` cast them)."""
    for parameter in network.parameters():
        return parameter.dtype
    for buffer in network.buffers():
        if buffer.is_floating_point():
            return buffer.dtype
    return torch.float32


@contextlib.contextmanager
def _precision(network: nn.Module, device: torch.device, dtype: torch.dtype | None) -> Iterator[torch.dtype]:
    """Autocast to ``dtype`` unless the weights are in it already; yields the inputs' dtype."""
    weights = compute_dtype(network)
    if dtype is None or weights == dtype:
        yield weights
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield torch.float32


def _inputs(frame: Tensor, mask: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    if mask.dim() == 3:
        mask = mask[:, None]
    frame = frame.to(dtype).contiguous(memory_format=torch.channels_last)
    return frame, mask.to(dtype).contiguous(memory_format=torch.channels_last)


def encode(network: RGMP, frame: Tensor, mask: Tensor, dtype: torch.dtype | None = None) -> EncoderFeatures:
    """frame (1 or B, 3, H, W), mask (B, [1,] H, W) -> the network's features, channels-last,
    with autocast to ``dtype`` (None: float32) unless the weights are in it already."""
    with _precision(network, frame.device, dtype) as inputs:
        return network.encode(*_inputs(frame, mask, inputs))


def encode_r5(network: RGMP, frame: Tensor, mask: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """The r5 features of :func:`encode` (a CUDA graph when the network has one for the shapes)."""
    graphs = getattr(network, "graphs", None)
    with _precision(network, frame.device, dtype) as inputs:
        frame, mask = _inputs(frame, mask, inputs)
        if graphs is None:
            return network.encode(frame, mask).r5
        return graphs("r5", lambda f, m: network.encode(f, m).r5, (frame, mask))


def object_probability(network: RGMP, frame: Tensor, mask: Tensor, reference_r5: Tensor,
                       dtype: torch.dtype | None = None) -> Tensor:
    """frame (1 or B, 3, H, W), mask (B, [1,] H, W), reference r5 (B, C5, H/32, W/32) ->
    P(object) (B, H, W) float32 (:meth:`RGMP.object_probability`; a CUDA graph when the network
    has one for the shapes)."""
    graphs = getattr(network, "graphs", None)
    with _precision(network, frame.device, dtype) as inputs:
        frame, mask = _inputs(frame, mask, inputs)
        reference_r5 = reference_r5 if inputs == torch.float32 else reference_r5.to(inputs)
        if graphs is None:
            return network.object_probability(network.encode(frame, mask), reference_r5)
        return graphs("probability", lambda f, m, r: network.object_probability(network.encode(f, m), r),
                      (frame, mask, reference_r5))
