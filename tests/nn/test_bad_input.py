"""Bad and hostile inputs: each case asserts the message a user gets and that the inputs are
byte-identical afterwards (nothing a user owns is ever written)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from tests.helpers.bad_input_checks import digest, hostile_checkpoint, run_main
from rgmp_model import build_rgmp, load_checkpoint, read_checkpoint_info, save_checkpoint


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "base.pt", build_rgmp("resnet18", 8))


def _refusals(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What each way of loading ``path`` says: the loader, the session factory, ``rgmp models
    --add``, ``rgmp propagate --checkpoint``, ``rgmp models`` (the file in the user folder) and
    ``rgmp-train finetune --base``."""
    from rgmp_model import open_session
    from rgmp_model.cli import main
    from training.cli import main as train_main

    said = {}
    for name, load in (("load_checkpoint", load_checkpoint), ("read_checkpoint_info", read_checkpoint_info),
                       ("open_session", lambda p: open_session(p, np.zeros((2, 32, 32), np.uint8)))):
        with pytest.raises(ValueError) as error:
            load(path)
        said[name] = str(error.value)
    frames, labels = tmp_path / "frames.tif", tmp_path / "labels.tif"
    tifffile.imwrite(frames, np.zeros((3, 32, 32), np.uint8), photometric="minisblack")
    tifffile.imwrite(labels, np.pad(np.ones((8, 8), np.uint8), 12))
    monkeypatch.chdir(tmp_path)  # anything written by mistake would land here, not in the project
    code, _, said["models --add"] = run_main(main, ["models", "--add", path])
    assert code == 2
    code, _, said["propagate"] = run_main(main, ["propagate", frames, "--labels", labels, "--checkpoint", path,
                                                 "--out", tmp_path / "out.tif", "--device", "cpu"])
    assert code != 0 and not (tmp_path / "out.tif").exists()
    users = Path(os.environ["RGMP_MODELS_DIR"])
    users.mkdir(parents=True, exist_ok=True)
    (users / path.name).symlink_to(path)
    code, said["models"], _ = run_main(main, ["models"])
    assert code == 1 and "DAMAGED" in said["models"]
    code, _, said["rgmp-train finetune"] = run_main(train_main, [
        "finetune", "--images", frames, "--labels", labels, "--base", path, "--out", tmp_path / "tuned.pt",
        f"output_dir={tmp_path / 'work'}", "optim.iterations=1"])
    assert code != 0 and not (tmp_path / "tuned.pt").exists()
    return said


@pytest.mark.parametrize("zipped", [True, False], ids=["torch-zip", "bare-pickle"])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, monkeypatch, zipped) -> None:
    marker = tmp_path / "pwned"
    live = hostile_checkpoint(tmp_path / "live.pt", marker, zipped=zipped)
    if zipped:  # an unprotected load runs the payload...
        torch.load(live, weights_only=False)
    else:
        pickle.loads(live.read_bytes())
    assert marker.exists()
    marker.unlink()
    path = hostile_checkpoint(tmp_path / "evil.pt", marker, zipped=zipped)
    before = digest(path)
    said = _refusals(path, tmp_path, monkeypatch)
    assert not marker.exists()  # ...but no way of loading the file ran it
    for way, message in said.items():
        assert "evil.pt" in message, way
        assert "weights_only=False" not in message, way  # torch's advice to disable the protection is not repeated
        assert "Traceback" not in message and "UnpicklingError" not in message, way
        assert "could run code when loaded" in message, way  # says why, in words
    assert digest(path) == before


def test_fine_tuning_never_writes_over_its_base_checkpoint(tmp_path, checkpoint) -> None:
    from training.finetune import finetune_config, finetune_on_stack

    frames = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    labels = np.zeros((3, 64, 64), np.uint8)
    labels[0, 10:30, 10:30] = 1
    before = digest(checkpoint)
    config = finetune_config(checkpoint, checkpoint, ["optim.iterations=1"], output_dir=tmp_path / "work")
    with pytest.raises(ValueError, match=r"the output .*base.pt is an input of this run.*never overwritten"):
        finetune_on_stack(frames, labels, config)
    link = tmp_path / "link.pt"
    link.symlink_to(checkpoint)
    config = finetune_config(checkpoint, link, ["optim.iterations=1"], output_dir=tmp_path / "work")
    with pytest.raises(ValueError, match="is an input of this run"):
        finetune_on_stack(frames, labels, config)
    assert digest(checkpoint) == before


def test_huge_label_ids_never_size_an_allocation() -> None:
    from rgmp_model.adapt.pairs import StaticPairDataset

    class HugeIds:
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            labels = np.zeros((64, 64), np.int64)
            labels[10:40, 10:40] = 2**40  # a bincount would need 8 TiB
            return np.zeros((64, 64, 3), np.float32), labels

    item = StaticPairDataset([HugeIds()], crop_size=(32, 32), length=2)[0]
    assert item["reference_mask"].sum() > 0


def test_a_session_never_moves_the_callers_network_in_place(monkeypatch) -> None:
    from rgmp_model import PropagationSession
    from rgmp_model.inference import engine

    torch.manual_seed(1)
    model = build_rgmp("resnet18", 8)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    frames = np.zeros((2, 32, 32), np.uint8)
    with pytest.raises(ValueError, match="device 'meta' cannot run a propagation"):  # refused by resolve_device
        PropagationSession(model, frames, device="meta")
    # a session on another device than the network's: "meta" (a device with no data at all), past the rule
    monkeypatch.setattr(engine, "resolve_device", lambda device: torch.device("meta"))
    session = PropagationSession(model, frames, device="cpu")
    monkeypatch.undo()
    assert session.model is not model and next(session.model.parameters()).device.type == "meta"
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    same = PropagationSession(model, frames, device="cpu")
    assert same.model is model  # already there: used as is, no copy
