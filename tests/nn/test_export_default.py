"""scripts/export_default.py: fp16 weights, file hash record, recipe and validation scores."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.nn.models import verify_model
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import export_default  # noqa: E402
from benchmarks.accuracy import EvalSequence  # noqa: E402


def test_export_writes_a_verified_fp16_checkpoint_with_scores(tmp_path, capsys, monkeypatch):
    def tiny_samples(names):  # the real samples (40 frames, up to 8 objects) take minutes on a CPU
        seq = synthetic_video(num_frames=4, height=40, width=48, num_objects=2, seed=5)
        return [EvalSequence(f"synthetic-{n}", seq.frames, seq.labels) for n in names]

    monkeypatch.setattr(export_default, "sample_sequences", tiny_samples)
    monkeypatch.setattr(export_default, "load_sequences", lambda kind, names: tiny_samples([kind]))
    davis = tmp_path / "davis"
    for seed, name in enumerate(("libby", "scooter-black")):
        seq = synthetic_video(num_frames=5, height=48, width=64, num_objects=1, seed=seed)
        save_davis_layout(dataclasses.replace(seq, name=name), davis)
    torch.manual_seed(0)
    trained = save_checkpoint(tmp_path / "model.pt", build_rgmp("efficientnet_lite0", 8),
                              {"recipe": "video", "iterations": 3,
                               "stages": [{"recipe": "pretrain", "iterations": 5}, {"recipe": "video", "iterations": 3}],
                               "averaged_from": [{"checkpoint": "a.pt", "weight": 0.5},
                                                 {"checkpoint": "b.pt", "weight": 0.5}]})
    out = tmp_path / "weights" / "default.pt"
    assert export_default.main([str(trained), "--davis", str(davis), "--out", str(out)]) == 0
    entry = verify_model(out, "bundled")
    assert entry.ok, entry.problem
    assert out.with_name("default.pt.sha256").is_file()
    meta = entry.info.metadata
    assert meta["iterations"] == 8 and len(meta["stages"]) == 2 and meta["working_size"] == export_default.WORKING_SIZE == 448
    assert [entry["checkpoint"] for entry in meta["averaged_from"]] == ["a.pt", "b.pt"]
    assert "average_checkpoints.py" in meta["recipe"]
    assert set(meta["validation"]) == {"DAVIS-2016 validation (2 clips) J&F", "fluorescence set J&F",
                                       "low-contrast set J&F", "synthetic microscopy sample J&F",
                                       "synthetic video sample J&F",
                                       "selection (mean of DAVIS, fluorescence and low-contrast sets) J&F"}
    chosen = [meta["validation"][k] for k in ("DAVIS-2016 validation (2 clips) J&F", "fluorescence set J&F",
                                              "low-contrast set J&F")]
    assert abs(meta["validation"]["selection (mean of DAVIS, fluorescence and low-contrast sets) J&F"]
               - sum(chosen) / 3) < 1e-3
    assert meta["encoder"] == "efficientnet_lite0"
    assert "non-commercial" in meta["licence"] and "DUTS" in meta["trained_on"]
    state = torch.load(out, weights_only=True)["state_dict"]
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    model, _ = load_checkpoint(out)
    assert next(model.parameters()).dtype == torch.float32
    assert "libby: J" in capsys.readouterr().out
