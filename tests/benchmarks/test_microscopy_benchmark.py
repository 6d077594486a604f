"""benchmarks/microscopy.py runs end to end on tiny settings and prints both parts."""

from __future__ import annotations

import sys

import torch

from benchmarks import microscopy
from rgmp_model import build_rgmp, save_checkpoint


def test_tiny_run_prints_both_modes_and_the_long_stack_memory(tmp_path, monkeypatch, capsys) -> None:
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "m.pt", build_rgmp("resnet18", 8))
    monkeypatch.setattr(sys, "argv", ["microscopy.py", "--checkpoint", str(model), "--frames", "3", "--cells", "4",
                                      "--size", "128", "--long-frames", "6"])
    microscopy.main()
    out = capsys.readouterr().out
    assert "| region mode |" in out and "| full-frame mode |" in out
    assert "region / full-frame speed:" in out and out.count("PASS") + out.count("FAIL") == 4
    assert "long stack: 6 frames 128x128 uint16" in out and "peak RSS" in out
