"""Weight averaging of checkpoints (training/average.py, scripts/average_checkpoints.py): the
default recipe's last step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from training.average import average_checkpoints, write_average

ROOT = Path(__file__).resolve().parents[2]


def tiny(path: Path, seed: int, backbone: str = "resnet18", recipe: str = "stage") -> Path:
    torch.manual_seed(seed)
    network = build_rgmp(backbone, 8)
    with torch.no_grad():  # BatchNorm buffers that differ too (running statistics are averaged)
        for module in network.modules():
            if getattr(module, "running_var", None) is not None:
                module.running_var.uniform_(0.5, 2.0)
    return save_checkpoint(path, network, {"recipe": recipe, "licence": "test"})


def test_every_float_weight_is_the_weighted_sum(tmp_path) -> None:
    a, b = tiny(tmp_path / "a.pt", 0, recipe="stage 3"), tiny(tmp_path / "b.pt", 1, recipe="stage 4")
    network, metadata = average_checkpoints([a, b], [0.25, 0.75])
    wa, wb = load_checkpoint(a)[0].state_dict(), load_checkpoint(b)[0].state_dict()
    mixed = network.state_dict()
    floats = [k for k in mixed if mixed[k].is_floating_point()]
    assert len(floats) > 50 and any("running_var" in k for k in floats)
    for key in floats:
        torch.testing.assert_close(mixed[key], 0.25 * wa[key] + 0.75 * wb[key], rtol=1e-6, atol=1e-6)
    differing = [k for k in floats if not torch.equal(wa[k], wb[k])]  # (constant buffers aside)
    assert len(differing) > 50
    assert all(not torch.equal(mixed[k], wa[k]) and not torch.equal(mixed[k], wb[k]) for k in differing)
    assert metadata["averaged_from"] == [{"checkpoint": str(a), "weight": 0.25}, {"checkpoint": str(b), "weight": 0.75}]
    assert "stage 4" in metadata["recipe"] and metadata["licence"] == "test"


def test_the_written_average_loads_and_the_sources_are_unchanged(tmp_path) -> None:
    a, b = tiny(tmp_path / "a.pt", 0), tiny(tmp_path / "b.pt", 1)
    before = [p.read_bytes() for p in (a, b)]
    out = write_average([a, b], [0.5, 0.5], tmp_path / "average.pt")
    network, info = load_checkpoint(out)
    assert info.metadata["averaged_from"][1]["checkpoint"] == str(b)
    assert all(v.dtype == torch.float32 for v in network.state_dict().values() if v.is_floating_point())
    assert [p.read_bytes() for p in (a, b)] == before
    with pytest.raises(ValueError, match="would overwrite an input"):
        write_average([a, b], [0.5, 0.5], b)
    assert b.read_bytes() == before[1]


@pytest.mark.parametrize("weights, message", [([0.5], "one weight each"), ([0.7, 0.7], "sum to 1"),
                                              ([1.5, -0.5], "positive")])
def test_bad_weights_are_refused(tmp_path, weights, message) -> None:
    a, b = tiny(tmp_path / "a.pt", 0), tiny(tmp_path / "b.pt", 1)
    with pytest.raises(ValueError, match=message):
        average_checkpoints([a, b], weights)


def test_two_architectures_are_refused_naming_the_files(tmp_path) -> None:
    a = tiny(tmp_path / "a.pt", 0)
    torch.manual_seed(2)
    other = save_checkpoint(tmp_path / "other.pt", build_rgmp("resnet18", 16), {"recipe": "wider decoder"})
    with pytest.raises(ValueError, match="other.pt.*one architecture"):
        average_checkpoints([a, other], [0.5, 0.5])


def test_the_script_writes_an_equal_average_and_reports_errors(tmp_path) -> None:
    a, b = tiny(tmp_path / "a.pt", 0), tiny(tmp_path / "b.pt", 1)
    script = ROOT / "scripts" / "average_checkpoints.py"
    done = subprocess.run([sys.executable, str(script), str(a), str(b), "--out", str(tmp_path / "avg.pt")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "0.5 x" in done.stdout
    weights = [entry["weight"] for entry in load_checkpoint(tmp_path / "avg.pt")[1].metadata["averaged_from"]]
    assert weights == [0.5, 0.5]
    missing = subprocess.run([sys.executable, str(script), str(a), str(tmp_path / "nope.pt"), "--out",
                              str(tmp_path / "x.pt")], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and "nope.pt" in missing.stderr and not (tmp_path / "x.pt").exists()
