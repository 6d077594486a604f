"""The network as propagation runs it (rgmp_model.nn.inference): frozen BatchNorm folded into its
convolutions equals the unfolded network (fp32, 1e-4 of each output's scale), the folded copy is kept until the weights
change, the caller's network is never changed, and the decoder's object probability equals the
softmax of its logits. Random weights and BatchNorm statistics; CPU (GPU checks marked gpu)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from tests.helpers.local_rule_model import LocalRuleModel
from rgmp_model import BACKBONES, build_rgmp
from rgmp_model.nn.efficientnet_lite import SameConv2d, pad_zeros
from rgmp_model.nn.inference import encode, encode_r5, fold_batchnorm, inference_network, object_probability


def randomised(backbone: str, decoder: int = 16) -> nn.Module:
    """A network whose BatchNorm statistics and affine parameters are random (not the identity)."""
    torch.manual_seed(0)
    model = build_rgmp(backbone, decoder)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            n = module.running_mean.numel()
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)
    return model.eval()


def inputs(batch: int = 2, size: tuple[int, int] = (64, 96)):
    generator = torch.Generator().manual_seed(2)
    frame = torch.rand(batch, 3, *size, generator=generator)
    mask = (torch.rand(batch, *size, generator=generator) > 0.6).float()
    return frame, mask


@pytest.mark.parametrize("backbone", BACKBONES)
def test_folded_batchnorm_equals_the_unfolded_network(backbone: str) -> None:
    model = randomised(backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d)) for m in folded.modules())
    frame, mask = inputs()
    with torch.no_grad():
        want, got = model.encode(frame, mask), folded.encode(frame, mask)
        for a, b in zip(want, got):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
        reference = model.encode(frame.flip(-1), mask.flip(-1)).r5
        folded_reference = folded.encode(frame.flip(-1), mask.flip(-1)).r5
        want_logits = model.decode(want, reference).logits
        got_logits = folded.decode(got, folded_reference).logits
        # the decoder's output to the same relative precision as the features (random ResNet-50
        # logits reach hundreds: a probability near 0.5 moves with 1e-4 of their scale)
        torch.testing.assert_close(got_logits, want_logits, rtol=1e-4, atol=1e-4 * float(want_logits.abs().max()))
        p_want = torch.softmax(want_logits, dim=1)[:, 1]
        p_got = folded.object_probability(got, folded_reference)
    assert (p_got - torch.softmax(got_logits, dim=1)[:, 1]).abs().max() <= 1e-5
    # and the probability moves no more than the logits allow (two classes: |dp| <= max|d logit| / 2)
    assert (p_got - p_want).abs().max() <= max(1e-4, 0.5 * float((got_logits - want_logits).abs().max()))
    for key, value in model.state_dict().items():  # the caller's network is never changed
        assert torch.equal(value, before[key]), key


def test_trainable_batchnorm_in_eval_mode_is_folded_too() -> None:
    from training.norm import thaw_batchnorm

    model = randomised("resnet18")
    thaw_batchnorm(model)
    model.train()(*inputs(), *inputs())  # running statistics move away from the frozen ones
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    frame, mask = inputs()
    with torch.no_grad():
        torch.testing.assert_close(folded.encode(frame, mask).r5, model.encode(frame, mask).r5, rtol=1e-4, atol=1e-4)


def test_object_probability_is_the_softmax_of_the_logits_without_the_heads() -> None:
    model = randomised("efficientnet_lite0")
    frame, mask = inputs(3)
    with torch.no_grad():
        features = model.encode(frame, mask)
        reference = model.encode(frame.flip(0), mask.flip(0)).r5
        want = torch.softmax(model.decode(features, reference).logits, dim=1)[:, 1]
        got = model.object_probability(features, reference)
    assert got.shape == (3, 64, 96) and got.dtype == torch.float32
    assert (got - want).abs().max() < 1e-5


def test_the_folded_copy_is_kept_until_the_weights_change() -> None:
    model = randomised("resnet18")
    first = inference_network(model, "cpu")
    assert first is not model and getattr(first, "inference_form", False)
    assert inference_network(model, "cpu") is first  # kept
    assert inference_network(first, "cpu") is first  # already in that form
    with torch.no_grad():
        model.encoder.conv1.weight.mul_(1.5)  # an optimiser step, in place
    second = inference_network(model, "cpu")
    assert second is not first
    frame, mask = inputs()
    with torch.no_grad():
        want = model.encode(frame, mask).r5
        torch.testing.assert_close(second.encode(frame, mask).r5, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_networks_with_nothing_to_fold_or_with_replaced_methods_are_used_as_they_are() -> None:
    stand_in = LocalRuleModel()
    assert inference_network(stand_in, "cpu") is stand_in
    model = randomised("resnet18")
    calls = []
    original = model.encode
    model.encode = lambda f, m: calls.append(1) or original(f, m)  # a spy, as the tests use
    assert inference_network(model, "cpu") is model


def test_the_propagation_calls_run_in_channels_last_and_return_float32() -> None:
    network = inference_network(randomised("efficientnet_lite0"), "cpu")
    frame, mask = inputs(2, (64, 64))
    with torch.inference_mode():
        r5 = encode(network, frame, mask).r5
        p = object_probability(network, frame, mask, r5)
    assert p.shape == (2, 64, 64) and p.dtype == torch.float32 and 0 <= float(p.min()) <= float(p.max()) <= 1


def test_same_padding_reuses_its_buffer_outside_autograd_only() -> None:
    conv = SameConv2d(4, 4, 3, stride=2, groups=4)
    x = torch.rand(2, 4, 10, 12).contiguous(memory_format=torch.channels_last)
    want = nn.functional.conv2d(nn.functional.pad(x, (0, 1, 0, 1)), conv.weight, stride=2, groups=4)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), want)
        kept = conv._padded.tensor
        torch.testing.assert_close(conv(x * 2), want * 2)  # the same buffer, written again
        assert conv._padded.tensor is kept
    torch.testing.assert_close(conv(x), want)  # with autograd: a fresh tensor each call
    padded = pad_zeros(x, 1, 2, 3, 0)
    torch.testing.assert_close(padded, nn.functional.pad(x, (3, 0, 1, 2)))
    assert padded.is_contiguous(memory_format=torch.channels_last)
    import copy

    copy.deepcopy(conv)  # the kept buffer does not stop a copy


@pytest.mark.gpu
def test_on_cuda_the_weights_are_cast_once_and_bf16_matches_fp32() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    model = randomised("efficientnet_lite0", 64)
    network = inference_network(model, "cuda", torch.bfloat16)
    assert next(network.parameters()).dtype == torch.bfloat16
    assert next(network.parameters()).is_contiguous(memory_format=torch.channels_last) or True
    frame, mask = (t.cuda() for t in inputs(4, (96, 96)))
    with torch.inference_mode():
        r5 = encode(network, frame, mask, torch.bfloat16).r5
        p_bf16 = object_probability(network, frame, mask, r5, torch.bfloat16)
        full = inference_network(model, "cuda")
        p_fp32 = object_probability(full, frame, mask, encode(full, frame, mask).r5)
    assert p_bf16.dtype == torch.float32
    assert float((p_bf16 - p_fp32).abs().mean()) < 0.02


def test_graph_buckets_and_the_cpu_runs_eagerly() -> None:
    from rgmp_model.nn.graphs import GraphCache, bucket

    assert [bucket(n) for n in (1, 3, 5, 17, 40, 128, 129, 300)] == [1, 4, 8, 24, 48, 128, 256, 384]
    cache = GraphCache(capture_after=0)
    x = torch.rand(2, 3)
    for _ in range(3):  # a CPU tensor: always the function itself
        assert torch.equal(cache("double", lambda t: t * 2, (x,)), x * 2)
    assert cache.captures == 0 and cache.replays == 0
    assert inference_network(randomised("resnet18"), "cpu").graphs is None


@pytest.mark.gpu
def test_graph_replay_equals_eager_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    network = inference_network(randomised("efficientnet_lite0", 64), "cuda")
    assert network.graphs is not None
    frame, mask = (t.cuda() for t in inputs(4, (96, 128)))
    with torch.inference_mode():
        reference = encode_r5(network, frame.flip(0), mask.flip(0))
        graphs, network.graphs = network.graphs, None
        eager = object_probability(network, frame, mask, reference)
        network.graphs = graphs
        replayed = [object_probability(network, frame * 1.0, mask, reference) for _ in range(4)]
    assert graphs.captures == 1 and graphs.replays >= 1
    for result in replayed:
        torch.testing.assert_close(result, eager, rtol=1e-5, atol=1e-6)
    other = torch.rand_like(frame)  # new inputs into the same graph
    with torch.inference_mode():
        network.graphs = None
        want = object_probability(network, other, mask, reference)
        network.graphs = graphs
        torch.testing.assert_close(object_probability(network, other, mask, reference), want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("region", ["off", "on"])
def test_a_session_on_cuda_gives_the_cpus_labels(region: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    import numpy as np

    from rgmp_model import PropagationOptions, open_session
    from rgmp_model.data.synthetic_fluorescence import synthetic_fluorescence

    seq = synthetic_fluorescence(5, 320, 320, 12, seed=7, dtype="uint16")
    model = randomised("efficientnet_lite0", 64)
    results = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
        options = PropagationOptions(device=device, precision=precision, region=region, max_size=0, region_crop_size=64)
        session = open_session(model, seq.frames, options)
        session.add_keyframe(0, seq.labels[0])
        results[device, precision] = [labels for _, labels, _ in session.propagate()]
    for key in (("cuda", "fp32"), ("cuda", "bf16")):
        agree = np.mean([np.mean(a == b) for a, b in zip(results["cpu", "fp32"], results[key])])
        assert agree > (0.999 if key[1] == "fp32" else 0.98), (key, agree)


@pytest.mark.gpu
def test_frames_read_ahead_into_pinned_memory_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    import numpy as np

    from rgmp_model.inference.frame_feed import FrameFeed
    from rgmp_model.inference.frames import FrameStack

    stack = FrameStack(np.random.default_rng(0).integers(0, 4000, (6, 64, 80)).astype(np.uint16))
    feed = FrameFeed(stack, "cuda")
    assert feed.threaded
    feed.expect(range(6))
    for t in range(6):
        frame = feed.get(t)
        assert frame.device.type == "cuda"
        torch.testing.assert_close(frame.cpu()[0, 0], torch.from_numpy(stack[t][..., 0]))
    feed.close()
    from rgmp_model.inference.frame_feed import to_host

    values = torch.arange(10, device="cuda")
    on_host, = to_host(values)
    assert on_host.device.type == "cpu" and on_host.is_pinned() and on_host.tolist() == list(range(10))
