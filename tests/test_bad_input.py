"""Bad and hostile inputs: each case asserts the message a user gets and that the inputs are
byte-identical afterwards (nothing a user owns is ever written)."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint


def digest(*paths: Path) -> dict[Path, str]:
    """sha256 of every file under ``paths`` (files or folders)."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "base.pt", build_rgmp("resnet18", 8))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "pwned"

    class RunsCode:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": RunsCode()}))
    before = digest(path)
    with pytest.raises(ValueError) as error:
        load_checkpoint(path)
    assert not marker.exists()  # nothing ran
    message = str(error.value)
    assert "evil.pt cannot be read as a PyTorch checkpoint" in message
    assert "weights_only=False" not in message  # torch's advice to disable the protection is not repeated
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
    from training.static_pairs import StaticPairDataset

    class HugeIds:
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            labels = np.zeros((64, 64), np.int64)
            labels[10:40, 10:40] = 2**40  # a bincount would need 8 TiB
            return np.zeros((64, 64, 3), np.float32), labels

    item = StaticPairDataset([HugeIds()], crop_size=(32, 32), length=2)[0]
    assert item["reference_mask"].sum() > 0


def test_a_session_never_moves_the_callers_network_in_place() -> None:
    from rgmp_model import PropagationSession

    torch.manual_seed(1)
    model = build_rgmp("resnet18", 8)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    frames = np.zeros((2, 32, 32), np.uint8)
    session = PropagationSession(model, frames, device="meta")  # a device with no data at all
    assert session.model is not model and next(session.model.parameters()).device.type == "meta"
    assert all(t.device.type == "cpu" for t in model.state_dict().values())
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    same = PropagationSession(model, frames, device="cpu")
    assert same.model is model  # already there: used as is, no copy
