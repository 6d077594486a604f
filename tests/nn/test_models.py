"""Where models are found (bundled, user folder), hash verification, `rgmp models`, and the
recipes' ${VARIABLE} data paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rgmp_model import build_rgmp, save_checkpoint
from rgmp_model.nn import models as models_module
from rgmp_model.cli import main as rgmp
from rgmp_model.nn.models import (
    add_user_model,
    file_sha256,
    list_models,
    user_checkpoints,
    user_models_dir,
    verify_model,
    write_file_sha256,
)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, build_rgmp("resnet18", 8), {"recipe": "test", "validation": {"J&F": 0.5}})


def test_user_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RGMP_MODELS_DIR", str(tmp_path / "mine"))
    assert user_models_dir() == tmp_path / "mine"
    monkeypatch.delenv("RGMP_MODELS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(models_module.sys, "platform", "linux")
    assert user_models_dir() == tmp_path / "cache" / "napari-rgmp" / "models"


def test_add_and_list_user_models(tiny_checkpoint):
    assert list_models() == [] or all(e.location == "bundled" for e in list_models())
    target = add_user_model(tiny_checkpoint, name="mine")
    assert target == user_models_dir() / "mine.pt" and target.is_file()
    assert file_sha256(target) == file_sha256(tiny_checkpoint)
    users = [e for e in list_models() if e.location == "user"]
    assert [e.path for e in users] == [target] and users[0].ok
    assert users[0].info.metadata["recipe"] == "test"
    with pytest.raises(ValueError, match="already exists"):
        add_user_model(tiny_checkpoint, name="mine")
    add_user_model(tiny_checkpoint, name="mine", overwrite=True)
    assert user_checkpoints() == [target]


def test_damaged_files_are_reported_not_raised(tiny_checkpoint, tmp_path):
    folder = user_models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "junk.pt").write_bytes(b"not a checkpoint")
    entry = verify_model(folder / "junk.pt")
    assert not entry.ok and entry.info is None and "cannot be read" in entry.problem
    with pytest.raises(ValueError, match="was not added"):
        add_user_model(folder / "junk.pt", name="junk2")
    # A recorded file hash that no longer matches (e.g. a changed bundled file) is caught.
    copy = tmp_path / "recorded.pt"
    copy.write_bytes(tiny_checkpoint.read_bytes())
    write_file_sha256(copy)
    assert verify_model(copy).ok
    copy.write_bytes(copy.read_bytes() + b"\0")
    problem = verify_model(copy).problem
    assert problem is not None and "differs from recorded.pt.sha256" in problem


def test_rgmp_models_command(tiny_checkpoint, capsys):
    assert rgmp(["models", "--add", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert f"added {tiny_checkpoint}" in out and "[user]" in out and "ok" in out and "J&F 0.5" in out
    (user_models_dir() / "broken.pt").write_bytes(b"xx")
    assert rgmp(["models"]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    assert rgmp(["models", "--add", str(tiny_checkpoint.parent / "absent.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bundled_model_is_listed_and_verified_when_present(tiny_checkpoint, tmp_path, monkeypatch):
    bundled = tmp_path / "weights"
    bundled.mkdir()
    (bundled / "default.pt").write_bytes(tiny_checkpoint.read_bytes())
    write_file_sha256(bundled / "default.pt")
    monkeypatch.setattr(models_module, "BUNDLED_DIR", bundled)
    entries = list_models()
    assert entries[0].location == "bundled" and entries[0].ok


def test_shipped_bundled_model_matches_its_record():
    """The real package data, when this build ships a default model."""
    path = models_module.bundled_checkpoint()
    if path is None:
        pytest.skip("this build ships no default model")
    assert path.with_name(path.name + ".sha256").is_file()
    entry = verify_model(path, "bundled")
    assert entry.ok, entry.problem
    meta = entry.info.metadata
    for key in ("recipe", "validation", "iterations", "working_size", "trained_on"):
        assert key in meta
    assert path.stat().st_size <= 40 * 2**20  # fp16 package data
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    # Shipped only past the release bars (README, benchmarks/accuracy.py): mean J&F at least 0.65
    # over all 8 DAVIS-2016 validation clips, never trained on, and at least 0.85 on the synthetic
    # microscopy sample; an ImageNet-initialised encoder with its data licence stated.
    assert meta["validation"]["DAVIS-2016 validation (8 clips) J&F"] >= 0.65
    assert meta["validation"]["synthetic microscopy sample J&F"] >= 0.95
    assert meta["encoder"] == "efficientnet_lite0"
    assert "non-commercial" in meta["licence"]


def test_shipped_model_follows_fluorescence_nuclei_with_default_settings():
    """Measured, not read from the metadata: the sparse sequence of the fluorescence set (seeds
    training never draws) with default options, scored as benchmarks/accuracy.py does."""
    import numpy as np

    from benchmarks.fluorescence_set import fluorescence_sequences
    from rgmp_model import PropagationOptions, open_session
    from rgmp_model.data.synthetic_fluorescence import dimmest_ids
    from rgmp_model.eval.metrics import evaluate_sequence

    path = models_module.bundled_checkpoint()
    if path is None:
        pytest.skip("this build ships no default model")
    seq = fluorescence_sequences(["sparse-uint8"])[0]
    session = open_session(path, seq.frames, PropagationOptions(direction="forward", device="cpu"))
    session.add_keyframe(0, seq.labels[0])
    predicted = np.stack([labels for _, labels, _ in session.propagate()]).astype(np.int64)
    scores = evaluate_sequence(predicted, seq.labels.astype(np.int64), name=seq.name)
    assert session.region_used == {0: True}  # small nuclei in a 512 px frame: region mode
    assert scores.jf_mean >= 0.85
    dim = dimmest_ids({o.object_id: seq.brightness[o.object_id] for o in scores.objects}, 0.1)
    assert all(o.j_mean > 0.5 for o in scores.objects if o.object_id in dim)  # the dimmest are kept


def test_recipe_paths_expand_environment_variables(monkeypatch, tmp_path):
    from training.config import load_config

    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    config = load_config("training/configs/default_pretrain.yaml")
    assert config.data.sources[0].path == f"{tmp_path}/duts-tr/images"
    assert config.validation.sources[0].path == f"{tmp_path}/davis16-dev"
    cells = load_config("training/configs/default_cells.yaml")  # stage 3: from stage 2's best, cells validated too
    assert cells.model.init_checkpoint == "runs/default/video/best.pt" and cells.data.max_objects == 3
    assert [s.kind for s in cells.validation.sources] == ["davis", "synthetic_fluorescence"]
    monkeypatch.delenv("DATA_ROOT")
    with pytest.raises(ValueError, match=r"set the environment variable DATA_ROOT"):
        load_config("training/configs/default_video.yaml")
