"""The checkpoint loader: project format, the authors' weights.pth layout, and clear errors."""

from __future__ import annotations

import pickle
import types
from collections import OrderedDict

import pytest
import torch
import torchvision

from tests.helpers.authors_reference import AuthorsRGMP, authors_state_dict, randomize_
from rgmp_model import ModelConfig, build_rgmp, load_checkpoint, read_checkpoint_info, save_checkpoint


@pytest.fixture(scope="module")
def authors_weights() -> "OrderedDict[str, torch.Tensor]":
    torch.manual_seed(0)
    return authors_state_dict(randomize_(AuthorsRGMP()))


class _PyTorch031Pickler(pickle.Pickler):
    """Pickles tensors as PyTorch 0.3.1 did: torch._utils._rebuild_tensor(storage, offset, size,
    stride), inside the legacy (non-zip) container."""

    def reducer_override(self, obj):
        if type(obj) is torch.Tensor:
            storage = obj.untyped_storage()
            typed = torch.storage.TypedStorage(wrap_storage=storage, dtype=obj.dtype, _internal=True)
            return torch._utils._rebuild_tensor, (typed, obj.storage_offset(), tuple(obj.size()), obj.stride())
        return NotImplemented


def save_like_pytorch_031(state_dict, path) -> None:
    module = types.SimpleNamespace(Pickler=_PyTorch031Pickler, dump=pickle.dump, __name__="pickle")
    with open(path, "wb") as stream:
        torch.save(state_dict, stream, pickle_module=module, pickle_protocol=2, _use_new_zipfile_serialization=False)


def test_project_checkpoint_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_rgmp("resnet18", 24)
    path = save_checkpoint(tmp_path / "m.pt", model, {"recipe": "test", "iterations": 3, "data": ["synthetic"]})
    loaded, info = load_checkpoint(path)
    assert info.source == "napari-rgmp" and info.config == ModelConfig("resnet18", 24)
    assert info.metadata["recipe"] == "test" and info.metadata["iterations"] == 3 and "date" in info.metadata
    assert len(info.sha256) == 64
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    assert not loaded.training
    assert read_checkpoint_info(path).describe().startswith("resnet18, decoder 24")
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left


def test_half_precision_checkpoint_loads_as_float32(tmp_path) -> None:
    model = build_rgmp("resnet18", 16)
    path = save_checkpoint(tmp_path / "half.pt", model, dtype=torch.float16)
    loaded, _ = load_checkpoint(path)
    weight = loaded.encoder.conv1.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.encoder.conv1.weight.half().float())


def test_authors_layout_loads_strictly(tmp_path, authors_weights) -> None:
    assert all(k.startswith("module.") for k in authors_weights)
    assert "module.Encoder.conv1_p.weight" in authors_weights and "module.Decoder.RF4.convFS1.weight" in authors_weights
    assert not any("num_batches_tracked" in k for k in authors_weights)
    path = tmp_path / "weights.pth"
    torch.save(authors_weights, path)
    model, info = load_checkpoint(path)
    assert info.source == "authors" and "non-commercial" in info.describe()
    torch.testing.assert_close(model.encoder.conv1_mask.bias, authors_weights["module.Encoder.conv1_p.bias"])
    torch.testing.assert_close(model.decoder.residual.conv2.weight, authors_weights["module.Decoder.convG2.weight"])
    torch.testing.assert_close(model.decoder.refine3.merge_conv1.weight, authors_weights["module.Decoder.RF3.convMM1.weight"])
    torch.testing.assert_close(model.encoder.res4[2].bn2.running_var, authors_weights["module.Encoder.res4.2.bn2.running_var"])


def test_authors_file_in_the_pytorch_031_legacy_format_loads(tmp_path, authors_weights) -> None:
    path = tmp_path / "weights.pth"
    save_like_pytorch_031(authors_weights, path)
    assert not __import__("zipfile").is_zipfile(path)
    assert b"torch._utils\n_rebuild_tensor\n" in path.read_bytes()  # the 0.3.1 tensor reducer, not _v2
    model, info = load_checkpoint(path)
    assert info.source == "authors"
    torch.testing.assert_close(model.decoder.pred5.weight, authors_weights["module.Decoder.pred5.weight"])


def test_wrong_state_dict_names_missing_and_unexpected_keys(tmp_path, authors_weights) -> None:
    broken = OrderedDict(authors_weights)
    del broken["module.Decoder.pred3.bias"]
    broken["module.Decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert "missing keys: decoder.pred3.bias" in message
    assert "unexpected keys: decoder.extra.weight" in message


def test_foreign_state_dict_is_refused_naming_the_keys(tmp_path) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet50\.pth does not fit") as error:
        load_checkpoint(path)
    assert "missing keys: decoder." in str(error.value) and "unexpected keys: bn1.bias" in str(error.value)
    with pytest.raises(ValueError, match=r"resnet50\.pth does not fit"):  # the same verdict, no network built
        read_checkpoint_info(path)


def test_wrong_shapes_are_refused(tmp_path) -> None:
    state = build_rgmp("resnet18", 16).state_dict()
    state["decoder.pred2.weight"] = torch.zeros(2, 16, 5, 5)
    path = tmp_path / "shapes.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shapes\.pth: the weights do not fit a resnet18"):
        load_checkpoint(path)


def test_bare_state_dict_in_our_naming_infers_its_config(tmp_path) -> None:
    model = build_rgmp("resnet34", 32)
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict(), path)
    loaded, info = load_checkpoint(path)
    assert info.source == "state-dict" and info.config == ModelConfig("resnet34", 32)


def test_truncated_file_is_a_clear_error(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", build_rgmp("resnet18", 16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"m\.pt cannot be read as a PyTorch checkpoint.*truncated"):
        load_checkpoint(path)


def test_not_a_checkpoint_and_missing_file(tmp_path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt cannot be read"):
        load_checkpoint(text)
    with pytest.raises(FileNotFoundError, match="nothere.pt does not exist"):
        load_checkpoint(tmp_path / "nothere.pt")
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "lr": 0.1}, other)
    with pytest.raises(ValueError, match=r"neither a napari-rgmp checkpoint nor a state dict .*epoch, lr"):
        load_checkpoint(other)


def test_random_bytes_are_damage_not_a_code_risk(tmp_path) -> None:
    """Random bytes fail torch's safe unpickler on an unsupported operand: the message says the
    file is damaged or not a checkpoint, not that it could run code (that is for pickles naming a
    callable, test_unsafe_pickle_is_refused)."""
    for seed in range(8):
        path = tmp_path / f"noise{seed}.pt"
        path.write_bytes(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.uint8).numpy().tobytes())
        with pytest.raises(ValueError, match=rf"noise{seed}\.pt cannot be read as a PyTorch checkpoint") as error:
            load_checkpoint(path)
        assert "truncated or not a checkpoint" in str(error.value)
        assert "could run code" not in str(error.value)


def test_corrupted_weights_fail_the_hash(tmp_path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", build_rgmp("resnet18", 16))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["decoder.pred2.bias"] += 1.0
    torch.save(payload, path)
    with pytest.raises(ValueError, match="sha256 .* differs .*corrupted"):
        load_checkpoint(path)


def test_unsafe_pickle_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": types.SimpleNamespace(a=1)}, path)
    with pytest.raises(ValueError, match="evil.pt cannot be read.*could run code"):
        load_checkpoint(path)


def test_claimed_config_is_checked_against_the_tensor_shapes_before_building(tmp_path, monkeypatch) -> None:
    """A file whose config claims a huge decoder is refused from the shapes alone: no network of
    the claimed size is ever built (only the meta-device one, which allocates nothing)."""
    import rgmp_model.nn.checkpoint as checkpoint_module

    path = save_checkpoint(tmp_path / "m.pt", build_rgmp("resnet18", 8))
    payload = torch.load(path, weights_only=True)
    payload["config"]["decoder_channels"] = 1_000_000
    torch.save(payload, path)
    built = []
    real_rgmp = checkpoint_module.RGMP
    monkeypatch.setattr(checkpoint_module, "RGMP", lambda config: built.append(torch.empty(0).device) or real_rgmp(config))
    with pytest.raises(ValueError, match=r"m.pt: the weights do not fit a resnet18 RGMP network.*decoder"):
        load_checkpoint(path)
    assert all(device.type == "meta" for device in built)


def test_bundled_file_record_is_checked_once_per_file_version(tmp_path, monkeypatch) -> None:
    from rgmp_model.nn import file_records

    path = save_checkpoint(tmp_path / "default.pt", build_rgmp("resnet18", 8))
    file_records.write_file_sha256(path)
    hashed = []
    real = file_records.file_sha256
    monkeypatch.setattr(file_records, "file_sha256", lambda p: hashed.append(p) or real(p))
    load_checkpoint(path)
    load_checkpoint(path)
    assert len(hashed) == 1  # cached for this file version
    # a tampered file whose inner weights hash is recomputed is still caught by the file record
    model = build_rgmp("resnet18", 8)
    save_checkpoint(path, model, {"tampered": True})
    with pytest.raises(ValueError, match=r"default.pt: file sha256 .* differs from default.pt.sha256"):
        load_checkpoint(path)
