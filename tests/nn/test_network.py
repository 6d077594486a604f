"""The RGMP network: shapes, gradients, frozen BatchNorm, equality with the authors' model."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tests.helpers.authors_reference import AuthorsRGMP, authors_state_dict, randomize_
from rgmp_model import BACKBONES, ModelConfig, build_rgmp, load_checkpoint
from rgmp_model.nn.network import upsample_bilinear


# Per encoder: its mask convolution and a weight of its deepest block (both must get gradients).
_MASK_AND_DEEPEST = {
    "resnet18": ("encoder.conv1_mask.weight", "encoder.res5.1.conv1.weight"),
    "resnet34": ("encoder.conv1_mask.weight", "encoder.res5.2.conv1.weight"),
    "resnet50": ("encoder.conv1_mask.weight", "encoder.res5.2.conv3.weight"),
    "efficientnet_lite0": ("encoder.mask_conv.weight", "encoder.blocks.15.project.0.weight"),
    "efficientnet_lite2": ("encoder.mask_conv.weight", "encoder.blocks.20.project.0.weight"),
}


def test_every_backbone_is_checked_below() -> None:
    assert set(_MASK_AND_DEEPEST) == set(BACKBONES)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes_and_gradient_flow(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_rgmp(backbone, decoder_channels=16).train()
    frames = torch.rand(2, 3, 64, 96)
    masks = torch.rand(2, 64, 96)
    out = model(frames, masks, frames.flip(-1), masks.flip(-1))
    assert out.logits.shape == (2, 2, 64, 96)
    assert out.p2.shape == (2, 2, 16, 24)
    assert out.p3.shape == (2, 2, 8, 12)
    assert out.p4.shape == (2, 2, 4, 6)
    assert out.p5.shape == (2, 2, 2, 3)
    loss = sum(o.square().mean() for o in out)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    mask_conv, deepest = _MASK_AND_DEEPEST[backbone]
    assert mask_conv in trainable and deepest in trainable
    without_gradient = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without_gradient == []


def test_frozen_batchnorm_has_no_parameters_or_batch_counter() -> None:
    model = build_rgmp("resnet18", 16)
    names = set(model.state_dict())
    assert "encoder.bn1.running_var" in names and "encoder.bn1.weight" in names
    assert not any(n.endswith("num_batches_tracked") for n in names)
    assert not any("bn" in n for n, _ in model.named_parameters())
    # train() must not update the statistics
    before = model.encoder.bn1.running_mean.clone()
    model.train()(torch.rand(1, 3, 64, 64), torch.rand(1, 64, 64), torch.rand(1, 3, 64, 64), torch.rand(1, 64, 64))
    assert torch.equal(before, model.encoder.bn1.running_mean)


def test_shared_frame_is_broadcast_over_masks() -> None:
    torch.manual_seed(1)
    model = build_rgmp("resnet18", 16).eval()
    frame, masks = torch.rand(1, 3, 64, 64), torch.rand(3, 64, 64)
    with torch.no_grad():
        shared = model.encode(frame, masks)
        repeated = model.encode(frame.expand(3, -1, -1, -1), masks)
    for a, b in zip(shared, repeated):
        torch.testing.assert_close(a, b)


def test_upsampling_is_align_corners_true() -> None:
    x = torch.tensor([[[[0.0, 1.0]]]])
    # align_corners=True keeps the end points: 0, 1/3, 2/3, 1
    up = upsample_bilinear(x, 2)
    assert up.shape == (1, 1, 2, 4)
    torch.testing.assert_close(up[0, 0, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))


def test_authors_layout_loads_strictly_and_gives_the_same_outputs(tmp_path) -> None:
    torch.manual_seed(0)
    authors = randomize_(AuthorsRGMP())
    path = tmp_path / "weights.pth"
    torch.save(authors_state_dict(authors), path)
    model, info = load_checkpoint(path)
    assert info.source == "authors" and info.config == ModelConfig("resnet50", 256)

    reference_frame, frame = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 64, 96)
    reference_mask, previous = (torch.rand(1, 64, 96) > 0.5).float(), torch.rand(1, 64, 96)
    with torch.no_grad():
        ref_r5 = authors.Encoder(reference_frame, reference_mask)[0]
        expected = authors.Decoder(*authors.Encoder(frame, previous)[:1], ref_r5, *authors.Encoder(frame, previous)[1:])
        ours = model(reference_frame, reference_mask, frame, previous)
    for a, b in zip(expected, ours):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    probabilities = torch.softmax(ours.logits, 1)[:, 1]
    assert 0.05 < probabilities.mean() < 0.95  # the comparison is not between saturated outputs


def test_imagenet_weights_offline_error_names_the_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(FileNotFoundError, match="resnet18.*not in the torch cache") as error:
        build_rgmp("resnet18", 16, imagenet_weights=True)
    assert str(tmp_path) in str(error.value) and "resnet18-f37072fd.pth" in str(error.value)


def test_imagenet_weights_come_from_the_cache_when_present(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(3)
    imagenet = torchvision.models.resnet18(weights=None)
    torch.save(imagenet.state_dict(), cache / "resnet18-f37072fd.pth")
    model = build_rgmp("resnet18", 16, imagenet_weights=True)
    torch.testing.assert_close(model.encoder.res3[0].conv1.weight, imagenet.layer2[0].conv1.weight)
    torch.testing.assert_close(model.encoder.bn1.running_var, imagenet.bn1.running_var)


def test_unknown_backbone_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet101'"):
        ModelConfig("resnet101")
