"""``rgmp-train``: each stage's own --help, bundled configs found by name, ``finetune`` reading a
single label image with --reference-frame like ``rgmp propagate``, ``--base default``, and user
messages for files that are not checkpoints. Tiny networks and stacks on the CPU."""

from __future__ import annotations

import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from rgmp_model import load_checkpoint
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.io.label_io import write_palette_png
from training.cli import build_parser, main
from training.config import CONFIG_DIR, bundled_configs

FAST = ["device=cpu", "data.crop_size=[64, 64]", "data.batch_size=2", "optim.iterations=2"]
INTERNAL = re.compile(r"Traceback|PytorchStreamReader|Unpickling|\b[A-Z]\w*(Error|Exception)\b|weights_only")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A 4-frame image TIFF, its label stack (frames 0 and 3 labelled) and one label PNG (frame 2)."""
    folder = tmp_path_factory.mktemp("stack")
    sequence = synthetic_video(num_frames=4, height=64, width=80, num_objects=1, seed=4)
    labels = np.zeros_like(sequence.labels)
    labels[[0, 3]] = sequence.labels[[0, 3]]
    tifffile.imwrite(folder / "images.tif", np.asarray(sequence.frames), photometric="rgb")
    tifffile.imwrite(folder / "labels.tif", labels, photometric="minisblack")
    write_palette_png(folder / "frame2.png", sequence.labels[2])
    small = np.zeros((32, 40), np.uint8)
    small[5:20, 5:20] = 1
    write_palette_png(folder / "small.png", small)  # a label image for another image size
    return {"images": folder / "images.tif", "labels": folder / "labels.tif", "png": folder / "frame2.png",
            "small": folder / "small.png"}


def _finetune(files, labels: Path, base: Path, out: Path, *extra: str) -> list[str]:
    return ["finetune", "--images", str(files["images"]), "--labels", str(labels), "--base", str(base),
            "--out", str(out), f"output_dir={out.parent / 'work'}", *FAST, *extra]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------- help


@pytest.mark.parametrize("stage", ["pretrain", "video", "finetune"])
def test_each_stage_has_its_own_help_with_every_option_explained(stage, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main([stage, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: rgmp-train {stage}")
    parser = build_parser()[1][stage]
    for action in parser._actions:
        assert action.help, f"{stage}: {action.option_strings or action.dest} has no help"
        for option in action.option_strings:
            assert option in text
    expected = {"finetune": ["--images", "--labels", "--reference-frame", "--base", "--out", "--config"],
                "pretrain": ["--config", "--init"], "video": ["--config", "--init"]}[stage]
    assert all(option in text for option in expected)
    assert ("--images" in text) == (stage == "finetune")  # finetune's options are only in its own help
    assert all(name in text for name in bundled_configs())  # --config says which names exist


def test_no_or_unknown_stage_names_the_stages(capsys) -> None:
    for argv in ([], ["train"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        assert "pretrain" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- configs


def _stage_of(name: str) -> str:
    """The stage a bundled config is for, as its file says (default_cells is a video stage)."""
    stage = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["stage"]
    assert stage in ("pretrain", "video", "finetune")
    return stage


def test_every_bundled_config_is_found_by_name(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))  # the default recipes' data paths
    monkeypatch.chdir(tmp_path)  # not the repository: names are not paths
    assert set(bundled_configs()) == {p.stem for p in CONFIG_DIR.glob("*.yaml")} >= {"pretrain", "video", "finetune"}
    for name in bundled_configs():
        for given in (name, f"{name}.yaml"):
            assert main([_stage_of(name), "--config", given, "--show-config", "seed=7"]) == 0
            out = capsys.readouterr().out
            assert out.splitlines()[0] == f"# config: {CONFIG_DIR / name}.yaml"
            shown = yaml.safe_load(out)
            assert shown["stage"] == _stage_of(name) and shown["seed"] == 7
    # the stage's own file by default
    assert main(["video", "--show-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"# config: {CONFIG_DIR / 'video'}.yaml"


def test_a_config_path_still_works_and_unknown_names_list_the_bundled_ones(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "mine.yaml"
    own.write_text("stage: pretrain\nseed: 3\n")
    assert main(["pretrain", "--config", str(own), "--show-config"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"# config: {own}" and yaml.safe_load(out)["seed"] == 3
    Path("pretrain.yaml").write_text("stage: pretrain\nseed: 5\n")  # a file in the working folder wins
    assert main(["pretrain", "--config", "pretrain.yaml", "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 5
    names = ", ".join(bundled_configs())
    assert main(["pretrain", "--config", "pretrian"]) == 2
    assert f"no bundled config is named pretrian: choose one of {names}" in capsys.readouterr().err
    assert main(["pretrain", "--config", "recipes/missing.yaml"]) == 2
    err = capsys.readouterr().err
    assert "config file recipes/missing.yaml does not exist" in err and names in err


# ------------------------------------------------------------------------------------- finetune


def test_finetune_takes_one_label_image_with_its_reference_frame(files, checkpoint, tmp_path) -> None:
    before = {p: _digest(p) for p in (files["images"], files["png"], checkpoint)}
    out = tmp_path / "tuned.pt"
    assert main(_finetune(files, files["png"], checkpoint, out, "--reference-frame", "2")) == 0
    assert load_checkpoint(out)[1].metadata["frames_used"] == [2]
    assert main(_finetune(files, files["png"], checkpoint, tmp_path / "at0.pt")) == 0  # default: frame 0
    assert load_checkpoint(tmp_path / "at0.pt")[1].metadata["frames_used"] == [0]
    assert {p: _digest(p) for p in before} == before  # inputs are never written


def test_finetune_on_a_label_stack_uses_its_labelled_frames_or_the_reference_frame(files, checkpoint, tmp_path) -> None:
    assert main(_finetune(files, files["labels"], checkpoint, tmp_path / "all.pt")) == 0
    assert load_checkpoint(tmp_path / "all.pt")[1].metadata["frames_used"] == [0, 3]
    assert main(_finetune(files, files["labels"], checkpoint, tmp_path / "one.pt", "--reference-frame", "3")) == 0
    assert load_checkpoint(tmp_path / "one.pt")[1].metadata["frames_used"] == [3]


def test_finetune_label_messages_come_before_the_model_loads(files, tmp_path, capsys) -> None:
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a checkpoint")
    argv = _finetune(files, files["png"], not_a_model, tmp_path / "x.pt", "--reference-frame", "9")
    assert main(argv) == 2
    assert f"--reference-frame 9 is outside the 4 frames of {files['images']} (0..3)" in capsys.readouterr().err
    assert main(_finetune(files, files["small"], not_a_model, tmp_path / "x.pt")) == 2
    err = capsys.readouterr().err
    assert "have shape (32, 40) but the frames are (64, 80)" in err and "notes.pt" not in err
    assert not (tmp_path / "x.pt").exists()


def test_base_default_is_the_bundled_model(files, checkpoint, tmp_path, capsys, monkeypatch) -> None:
    from rgmp_model.nn import models

    bundled = models.bundled_checkpoint()
    assert bundled is not None  # the package ships one
    argv = _finetune(files, files["png"], "default", tmp_path / "x.pt", "--show-config")
    assert main(argv) == 0
    assert yaml.safe_load(capsys.readouterr().out)["finetune"]["base"] == str(bundled)
    assert main(["video", "--init", "default", "--show-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["init_checkpoint"] == str(bundled)
    # the run starts from it (a tiny stand-in for the bundled model, to stay fast)
    monkeypatch.setattr(models, "bundled_checkpoint", lambda: checkpoint)
    assert main(_finetune(files, files["png"], "default", tmp_path / "tuned.pt")) == 0
    assert load_checkpoint(tmp_path / "tuned.pt")[1].metadata["base_checkpoint"] == str(checkpoint)
    monkeypatch.setattr(models, "bundled_checkpoint", lambda: None)
    assert main(_finetune(files, files["png"], "default", tmp_path / "none.pt")) == 2
    assert "--base default: this napari-rgmp has no bundled model; give --base a checkpoint file" in capsys.readouterr().err


def _not_checkpoints(folder: Path) -> list[Path]:
    """Files that are not checkpoints: text, random bytes, an image, a zip archive, an empty file."""
    text, noise, image, archive, empty = (folder / n for n in ("notes.pt", "noise.pt", "image.pt", "archive.pt",
                                                               "empty.pt"))
    text.write_text("hello, not a checkpoint\n")
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    write_palette_png(folder / "image.png", np.eye(16, dtype=np.uint8))
    image.write_bytes((folder / "image.png").read_bytes())
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data.txt", "a zip archive, not a torch file")
    empty.write_bytes(b"")
    return [text, noise, image, archive, empty]


def test_a_file_that_is_not_a_checkpoint_gets_a_user_message(files, tmp_path, capsys) -> None:
    for bad in _not_checkpoints(tmp_path):
        before = _digest(bad)
        assert main(_finetune(files, files["png"], bad, tmp_path / "x.pt")) != 0
        captured = capsys.readouterr()
        assert not INTERNAL.search(captured.err), captured.err
        assert f"rgmp-train finetune: error: {bad} cannot be read as a PyTorch checkpoint" in captured.err
        assert "checkpoint:" not in captured.out and _digest(bad) == before


def _tiny_config(folder: Path) -> Path:
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "stage": "pretrain", "output_dir": str(folder / "run"), "device": "cpu",
        "model": {"backbone": "resnet18", "decoder_channels": 8},
        "data": {"sources": [{"kind": "synthetic_video", "count": 1, "num_frames": 4, "size": [64, 64]}],
                 "crop_size": [64, 64], "batch_size": 1}, "optim": {"iterations": 1}}))
    return config


def test_init_that_is_not_a_checkpoint_gets_the_same_message(tmp_path, capsys) -> None:
    config = _tiny_config(tmp_path)
    bad = _not_checkpoints(tmp_path)[0]
    assert main(["pretrain", "--config", str(config), "--init", str(bad)]) == 2
    err = capsys.readouterr().err
    assert not INTERNAL.search(err), err
    assert f"rgmp-train pretrain: error: {bad} cannot be read as a PyTorch checkpoint" in err


def test_finetune_on_a_stack_with_time_and_z_takes_the_index_like_propagate(checkpoint, tmp_path, capsys) -> None:
    sequence = synthetic_video(num_frames=3, height=64, width=64, num_objects=1, seed=2)
    grey = np.asarray(sequence.frames).mean(axis=-1).astype(np.uint8)  # (T, H, W)
    images = tmp_path / "tz.tif"
    tifffile.imwrite(images, np.stack([grey, grey[:, ::-1]], axis=1), imagej=True, metadata={"axes": "TZYX"})
    label = tmp_path / "t2.png"
    write_palette_png(label, sequence.labels[2])
    hyper = tmp_path / "labels_tz.tif"
    both = np.zeros((3, 2, 64, 64), np.uint8)
    both[0, 0], both[0, 1] = sequence.labels[0], sequence.labels[0][:, ::-1]
    tifffile.imwrite(hyper, both, imagej=True, metadata={"axes": "TZYX"})
    run = ["finetune", "--images", str(images), "--base", str(checkpoint), f"output_dir={tmp_path / 'work'}", *FAST]
    assert main([*run, "--labels", str(label), "--out", str(tmp_path / "x.pt")]) == 2
    assert "say which with --at I" in capsys.readouterr().err
    assert main([*run, "--labels", str(hyper), "--out", str(tmp_path / "x.pt")]) == 2
    assert "has labels on 2 Z indices: fine-tuning trains on one T stack, choose its index with --at" in \
        capsys.readouterr().err
    assert main([*run, "--labels", str(label), "--at", "1", "--reference-frame", "2", "--out", str(tmp_path / "z1.pt")]) == 0
    assert load_checkpoint(tmp_path / "z1.pt")[1].metadata["frames_used"] == [2]


def test_a_folder_problem_is_a_message_with_exit_code_1(tmp_path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["pretrain", "--config", str(_tiny_config(tmp_path)), f"output_dir={blocker / 'run'}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"rgmp-train pretrain: error: {blocker}") and "Not a directory" in err
    assert not INTERNAL.search(err), err


def test_finetune_refuses_an_existing_out_and_keeps_its_run_where_the_dock_keeps_its_own(files, checkpoint, tmp_path,
                                                                                         capsys) -> None:
    from training.run_folders import finetune_runs_dir

    out = tmp_path / "cli-adapted.pt"
    argv = ["finetune", "--images", str(files["images"]), "--labels", str(files["png"]), "--base", str(checkpoint),
            "--out", str(out), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    run = finetune_runs_dir() / "cli-adapted"  # the Fine-tune dock's folder (user cache), not ./runs/finetune
    assert f"run folder: {run}" in printed and run.is_dir() and any(run.iterdir())
    written = _digest(out)
    assert main(argv) == 2
    assert f"--out {out} exists: choose another file, or add --overwrite to replace it" in capsys.readouterr().err
    assert _digest(out) == written and not (finetune_runs_dir() / "cli-adapted-2").exists()
    assert main([*argv, "--overwrite"]) == 0
    assert f"run folder: {finetune_runs_dir() / 'cli-adapted-2'}" in capsys.readouterr().out  # a new folder
    assert main([*argv, "--overwrite", f"output_dir={tmp_path / 'mine'}"]) == 0  # a folder the user chose
    assert f"run folder: {tmp_path / 'mine'}" in capsys.readouterr().out and any((tmp_path / "mine").iterdir())


def test_finetune_show_config_shows_what_applies_to_the_base(checkpoint, tmp_path, capsys) -> None:
    from training.run_folders import finetune_runs_dir

    assert main(["finetune", "--base", str(checkpoint), "--out", str(tmp_path / "shown.pt"), "--show-config"]) == 0
    printed = capsys.readouterr().out
    settings = yaml.safe_load(printed)
    assert "the network is the base's: resnet18, decoder 8 channels, working size full size" in printed
    assert "backbone" not in settings.get("model", {}) and "sources" not in settings["data"]
    assert "validation" not in settings and "clip_length" not in settings["data"]
    assert settings["output_dir"] == str(finetune_runs_dir() / "shown") and not (tmp_path / "shown.pt").exists()
