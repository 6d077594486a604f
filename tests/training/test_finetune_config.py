"""Fine-tuning takes its TrainConfig as given: every key of training/configs/finetune.yaml changes
the run (or is rejected), keys that cannot apply are rejected, the base checkpoint is read once.
Tiny runs: resnet18 with an 8-channel decoder, 64 px crops, 2 iterations on the CPU."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import yaml

import training.trainer
from rgmp_model import build_rgmp, load_checkpoint, save_checkpoint
from rgmp_model.nn.checkpoint import state_dict_sha256
from rgmp_model.data.synthetic import synthetic_video
from training.finetune import FINETUNE_YAML, NOT_FOR_FINETUNING, finetune_config, finetune_on_stack

FAST = ["device=cpu", "data.crop_size=[64, 64]", "data.batch_size=2", "optim.iterations=2"]
# A value different from the FAST run's for each key (the YAML's own value where FAST keeps it).
CHANGED: dict[str, Any] = {
    "stage": "pretrain", "output_dir": "elsewhere", "seed": 1, "resume": True,
    "data.crop_size": [32, 32], "data.batch_size": 1, "data.num_workers": 1, "data.length": 10,
    "data.box_probability": 1.0, "data.paste_probability": 1.0,
    "optim.lr": 1e-2, "optim.iterations": 3, "optim.aux_weight": 0.0,
    "schedule.log_every": 1, "schedule.checkpoint_every": 1,
}


def _leaf_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        keys += _leaf_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
    return keys


YAML_KEYS = _leaf_keys(yaml.safe_load(FINETUNE_YAML.read_text()))


@dataclasses.dataclass(frozen=True)
class Stack:
    frames: np.ndarray
    labels: np.ndarray  # frame 0 labelled only
    base: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    folder = tmp_path_factory.mktemp("stack")
    sequence = synthetic_video(num_frames=3, height=64, width=80, num_objects=1, seed=4)
    labels = np.zeros_like(sequence.labels)
    labels[0] = sequence.labels[0]
    torch.manual_seed(0)
    base = save_checkpoint(folder / "base.pt", build_rgmp("resnet18", 8), {"working_size": 96})
    return Stack(sequence.frames, labels, base)


def _fingerprint(stack: Stack, cwd: Path, overrides: list[str]) -> dict[str, Any]:
    """What a fine-tuning run observably did, run in ``cwd`` (finetune.yaml's output_dir is
    relative): progress calls (with whether a training state existed then), the DataLoader's
    settings, the log rows, the files written, the new weights and metadata (but not the echo of
    the config itself)."""
    config = finetune_config(stack.base, cwd / "tuned.pt", [*FAST, *overrides])
    progress: list[tuple[int, float, bool]] = []
    loaders: list[tuple[int, int]] = []
    real_loader = training.trainer.DataLoader

    def loader(dataset, **kwargs):
        loaders.append((kwargs["batch_size"], kwargs["num_workers"]))
        return real_loader(dataset, **kwargs)

    def on_progress(iteration: int, total: int, loss: float) -> None:
        state = cwd / config.output_dir / "checkpoints" / "last.pt"
        progress.append((iteration, round(loss, 6), state.exists()))

    with contextlib.chdir(cwd), mock.patch.object(training.trainer, "DataLoader", loader):
        out = finetune_on_stack(stack.frames, stack.labels, config, on_progress=on_progress)
    model, info = load_checkpoint(out)
    logs = sorted(cwd.rglob("train_log.csv"))
    rows = [row[:3] for row in csv.reader(logs[0].open())] if logs else []  # iteration, loss, lr
    return {
        "progress": progress, "loader": loaders, "log": rows,
        "files": sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*") if p.is_file()),
        "weights": state_dict_sha256(model.state_dict()),
        "metadata": {k: v for k, v in info.metadata.items() if k not in ("config", "date")},
    }


@dataclasses.dataclass(frozen=True)
class Run:
    cwd: Path
    fingerprint: dict[str, Any]


@pytest.fixture(scope="module")
def baseline(stack, tmp_path_factory) -> Run:
    cwd = tmp_path_factory.mktemp("baseline")
    return Run(cwd, _fingerprint(stack, cwd, []))


def test_the_test_covers_every_key_of_finetune_yaml() -> None:
    assert sorted(CHANGED) == sorted(YAML_KEYS), "give each new key of finetune.yaml a changed value in CHANGED"


def test_a_run_is_reproducible(stack, baseline, tmp_path) -> None:
    assert _fingerprint(stack, tmp_path, []) == baseline.fingerprint  # so a difference is the key's doing
    metadata = baseline.fingerprint["metadata"]
    assert metadata["frames_used"] == [0] and metadata["working_size"] == 96 and metadata["iterations"] == 2
    assert metadata["base_sha256"] == load_checkpoint(stack.base)[1].sha256


@pytest.mark.parametrize("key", YAML_KEYS)
def test_every_key_of_finetune_yaml_changes_the_run(stack, baseline, tmp_path, key) -> None:
    if key not in CHANGED:
        pytest.fail(f"{key} is new in finetune.yaml: add a changed value for it to CHANGED")
    override = f"{key}={json.dumps(CHANGED[key])}"
    if key == "stage":  # a config of another stage is refused, naming the key
        config = dataclasses.replace(finetune_config(stack.base, tmp_path / "x.pt", FAST), stage="pretrain")
        with pytest.raises(ValueError, match="stage is 'pretrain': fine-tuning runs a config with stage: finetune"):
            finetune_on_stack(stack.frames, stack.labels, config)
        return
    if key == "resume":  # resuming needs a saved state in output_dir: the baseline's
        (tmp_path / "runs/finetune/checkpoints").mkdir(parents=True)
        shutil.copy(baseline.cwd / "runs/finetune/checkpoints/last.pt", tmp_path / "runs/finetune/checkpoints")
    changed = _fingerprint(stack, tmp_path, [override])
    assert any(changed[name] != value for name, value in baseline.fingerprint.items()), \
        f"{override} changed nothing observable"


REJECTED: dict[str, Any] = {
    "model.backbone": "resnet50", "model.decoder_channels": 16, "model.imagenet_weights": True,
    "model.init_checkpoint": "other.pt", "data.sources": [{"kind": "synthetic_microscopy"}],
    "data.clip_length": 5, "data.max_skip": 2, "data.max_objects": 2, "optim.bptt_frames": 2,
    "schedule.validate_every": 5, "validation.sources": [{"kind": "synthetic_video"}],
    "validation.max_frames": 5, "validation.max_size": 100,
}


def test_the_rejection_test_covers_every_rejected_key() -> None:
    assert sorted(REJECTED) == sorted(NOT_FOR_FINETUNING)


@pytest.mark.parametrize("key", sorted(REJECTED))
def test_keys_that_cannot_apply_to_fine_tuning_are_rejected(stack, tmp_path, key) -> None:
    config = finetune_config(stack.base, tmp_path / "x.pt", [*FAST, f"{key}={json.dumps(REJECTED[key])}"],
                             output_dir=tmp_path / "work")
    with pytest.raises(ValueError, match=rf"^{re.escape(key)} does not apply to fine-tuning \(.+\): remove it"):
        finetune_on_stack(stack.frames, stack.labels, config)
    assert not (tmp_path / "work").exists() and not (tmp_path / "x.pt").exists()


def test_paths_must_be_set(stack, tmp_path) -> None:
    config = finetune_config(stack.base, tmp_path / "x.pt", FAST)
    for key in ("base", "out"):
        unset = dataclasses.replace(config, finetune=dataclasses.replace(config.finetune, **{key: None}))
        with pytest.raises(ValueError, match=f"finetune.{key} is not set"):
            finetune_on_stack(stack.frames, stack.labels, unset)


def test_the_base_checkpoint_is_read_once(stack, tmp_path) -> None:
    config = finetune_config(stack.base, tmp_path / "tuned.pt", FAST, output_dir=tmp_path / "work")
    with mock.patch.object(torch, "load", wraps=torch.load) as load:
        out = finetune_on_stack(stack.frames, stack.labels, config)
    reads = [c for c in load.call_args_list if Path(c.args[0]) == Path(stack.base)]
    assert len(reads) == 1
    assert load_checkpoint(out)[1].metadata["base_checkpoint"] == str(stack.base)
    assert (tmp_path / "work" / "train_log.csv").is_file()  # the work files go to output_dir


def test_the_cli_runs_finetune_yaml_with_overrides(stack, tmp_path, capsys) -> None:
    from rgmp_model.data.synthetic import SyntheticSequence
    from rgmp_model.data.synthetic_io import save_tiff
    from training.cli import main as train_main

    save_tiff(SyntheticSequence("s", stack.frames, stack.labels), tmp_path / "stack.tif", tmp_path / "labels.tif")
    paths = ["--images", str(tmp_path / "stack.tif"), "--labels", str(tmp_path / "labels.tif"),
             "--base", str(stack.base), "--out", str(tmp_path / "tuned.pt")]
    assert train_main(["finetune", *paths, f"output_dir={tmp_path / 'work'}", *FAST, "schedule.log_every=1"]) == 0
    info = load_checkpoint(tmp_path / "tuned.pt")[1]
    assert info.metadata["iterations"] == 2 and info.metadata["data"] == [f"stack:{tmp_path / 'stack.tif'}"]
    assert len((tmp_path / "work" / "train_log.csv").read_text().splitlines()) == 1 + 2
    assert train_main(["finetune", *paths, *FAST, "data.max_skip=5"]) == 2
    assert "data.max_skip does not apply to fine-tuning" in capsys.readouterr().err
