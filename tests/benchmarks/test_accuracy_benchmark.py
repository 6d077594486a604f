"""benchmarks/accuracy.py: one table for the model and the baselines, at the model's working size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks import accuracy
from rgmp_model import build_rgmp, save_checkpoint
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout


@pytest.fixture
def davis(tmp_path):
    root = tmp_path / "davis"
    seq = synthetic_video(num_frames=4, height=40, width=64, num_objects=1, seed=3)
    save_davis_layout(dataclasses.replace(seq, name="tiny"), root)
    return root


def checkpoint(tmp_path, working_size):
    torch.manual_seed(0)
    metadata = {"recipe": "test"} if working_size is None else {"recipe": "test", "working_size": working_size}
    return save_checkpoint(tmp_path / f"model-{working_size}.pt", build_rgmp("resnet18", 8), metadata)


def table_rows(out: str, method: str) -> list[str]:
    """The table's rows of ``method``: method, sequence, J, F, J&F, area end, |1-area|, frames/s."""
    return [line for line in out.splitlines() if line.startswith(f"{method} ") and len(line.split()) == 8]


@pytest.mark.parametrize(("working_size", "argv", "expected"), [
    (32, [], "working size <= 32 px"),  # the model's metadata, as `rgmp propagate` uses it
    (32, ["--max-size", "48"], "working size <= 48 px"),  # the option wins
    (32, ["--max-size", "0"], "working size <= full px"),
    (None, [], "working size <= 480 px"),  # no metadata: the documented default
])
def test_working_size_comes_from_the_model_unless_given(tmp_path, davis, capsys, working_size, argv, expected):
    model = checkpoint(tmp_path, working_size)
    code = accuracy.main([str(davis), "tiny", "--methods", "model,copy", "--checkpoint", str(model), *argv])
    assert code == 0
    out = capsys.readouterr().out
    assert expected in out
    for method in ("model", "copy"):  # per-sequence and mean rows with J, F, J&F and frames/s
        assert len(table_rows(out, method)) == 2
    assert "model - better baseline (copy):" in out


def test_baselines_alone_need_no_model(davis, capsys):
    assert accuracy.main([str(davis), "tiny", "--methods", "copy"]) == 0
    out = capsys.readouterr().out
    assert "working size <= 480 px" in out and "model:" not in out
    assert len(table_rows(out, "copy")) == 2


def test_other_models_join_the_same_table_at_their_own_working_size(tmp_path, davis, capsys):
    new, old = checkpoint(tmp_path, 32), checkpoint(tmp_path / "", 48)
    old = old.rename(tmp_path / "old-model.pt")
    argv = [str(davis), "tiny", "--methods", "model,flow,copy", "--checkpoint", str(new),
            "--compare", f"resnet18-v0.1={old}"]
    assert accuracy.main(argv) == 0
    out = capsys.readouterr().out
    assert "resnet18-v0.1: " in out and "working size <= 48 px" in out.split("resnet18-v0.1: ")[1].splitlines()[0]
    for method in ("model", "resnet18-v0.1", "flow", "copy"):
        assert len(table_rows(out, method)) == 2, method
    table = out.split("method ")[1]  # rows in the order: model, compared models, baselines
    assert table.index("\nmodel ") < table.index("\nresnet18-v0.1 ") < table.index("\nflow ") < table.index("\ncopy ")
    assert "resnet18-v0.1 - better baseline" in out
    with pytest.raises(SystemExit):
        accuracy.main([str(davis), "tiny", "--compare", "copy=" + str(old)])  # a method's name is refused
