"""scripts/training_history.py: the README's training-history table from a run's validation.csv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from training_history import main  # noqa: E402


def test_history_table_marks_each_stage_best(tmp_path, capsys) -> None:
    for stage, rows in {"pretrain": [(500, 0.4), (1000, 0.6)], "video": [(500, 0.7), (1000, 0.65)]}.items():
        run = tmp_path / stage
        run.mkdir()
        lines = ["iteration,sequence,j,f,jf"]
        for iteration, jf in rows:
            lines += [f"{iteration},cows,0,0,{jf + 0.1}", f"{iteration},overall,0,0,{jf}"]
        (run / "validation.csv").write_text("\n".join(lines) + "\n")
    cells = tmp_path / "cells"  # a stage that also validates on generated sequences
    cells.mkdir()
    (cells / "validation.csv").write_text("iteration,sequence,j,f,jf\n250,cows,0,0,0.7\n"
                                          "250,synthetic_fluorescence_1000006_0001,0,0,0.9\n250,overall,0,0,0.85\n")
    assert main([str(tmp_path / "pretrain"), str(tmp_path / "video"), str(cells)]) == 0
    out = capsys.readouterr().out
    assert "| stage | iteration | cows | fluorescence 1 | clips mean | overall J&F |" in out
    assert "| pretrain | 1,000 (best) | 0.700 | - | 0.700 | 0.600 |" in out
    assert "| video | 500 (best) | 0.800 | - | 0.800 | 0.700 |" in out
    assert "| video | 1,000 | 0.750 | - | 0.750 | 0.650 |" in out
    assert "| cells | 250 (best) | 0.700 | 0.900 | 0.700 | 0.850 |" in out  # the clips' mean leaves generated ones out


def test_a_run_without_validation_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="validation.csv does not exist"):
        main([str(tmp_path)])
