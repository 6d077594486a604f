"""The rgmp command line: propagate (folders, TIFF stacks) and evaluate."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import tifffile
import torch

from rgmp_model import build_rgmp, save_checkpoint
from rgmp_model.cli import main
from rgmp_model.io.label_io import open_label_stack
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout, save_tiff
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", build_rgmp("resnet18", 16), {"recipe": "random"})


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    sequence = synthetic_video(num_frames=5, height=64, width=80, num_objects=2, seed=3)
    save_davis_layout(sequence, root)
    return root, sequence


def test_propagate_davis_folder_to_png_folder_and_evaluate(tmp_path, checkpoint, davis, capsys) -> None:
    root, sequence = davis
    name = sequence.name
    out = tmp_path / "pred" / name
    code = main(["propagate", str(root / "JPEGImages" / "480p" / name),
                 "--labels", str(root / "Annotations" / "480p" / name / "00000.png"),
                 "--checkpoint", str(checkpoint), "--out", str(out), "--direction", "forward"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{i:05d}.png" for i in range(5)]
    predicted = open_label_stack(out)
    np.testing.assert_array_equal(predicted[0], sequence.labels[0])  # the keyframe is kept
    assert "5 frames (1 keyframe(s), 2 object(s))" in capsys.readouterr().out

    scores = tmp_path / "scores.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(root), "--csv", str(scores)]) == 0
    table = capsys.readouterr().out
    assert name in table and "overall" in table
    rows = list(csv.DictReader(scores.open()))
    assert [r["object_id"] for r in rows] == ["1", "2", "mean", ""]


def test_evaluate_ground_truth_against_itself_is_perfect(davis, capsys) -> None:
    root, sequence = davis
    annotations = root / "Annotations" / "480p" / sequence.name
    assert main(["evaluate", str(annotations), str(root)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last == ["overall", "1.000", "1.000", "1.000", "2"]


def test_propagate_uint16_tiff_stack_with_a_label_stack(tmp_path, checkpoint) -> None:
    sequence = synthetic_microscopy(num_frames=4, height=64, width=64, num_cells=3, seed=2)
    images, labels = tmp_path / "cells.tif", tmp_path / "cells_labels.tif"
    save_tiff(sequence, images, labels)
    keyframe_labels = np.zeros_like(sequence.labels, dtype=np.int64)
    keyframe_labels[2] = sequence.labels[2].astype(np.int64) * 300  # ids 300, 600, 900 on frame 2
    tifffile.imwrite(labels, keyframe_labels, photometric="minisblack")
    out = tmp_path / "out.tif"
    assert main(["propagate", str(images), "--labels", str(labels), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--direction", "both"]) == 0
    result = tifffile.imread(out)
    assert result.shape == (4, 64, 64) and result.dtype == np.int64
    np.testing.assert_array_equal(result[2], keyframe_labels[2])
    assert set(np.unique(result)) <= {0, 300, 600, 900}


def test_reference_frame_picks_one_frame_of_a_label_stack(tmp_path, checkpoint, davis) -> None:
    root, sequence = davis
    annotations = root / "Annotations" / "480p" / sequence.name
    out = tmp_path / "one.tif"
    assert main(["propagate", str(root / "JPEGImages" / "480p" / sequence.name), "--labels", str(annotations),
                 "--reference-frame", "2", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    result = tifffile.imread(out)
    np.testing.assert_array_equal(result[2], sequence.labels[2])
    assert not np.array_equal(result[0], sequence.labels[0]) or not np.array_equal(result[4], sequence.labels[4])


def test_errors_are_reported_without_a_traceback(tmp_path, checkpoint, davis, capsys) -> None:
    root, sequence = davis
    images = str(root / "JPEGImages" / "480p" / sequence.name)
    labels = str(root / "Annotations" / "480p" / sequence.name / "00000.png")
    assert main(["propagate", images, "--labels", labels, "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    assert main(["propagate", images, "--labels", labels, "--checkpoint", str(checkpoint), "--out", labels]) == 2
    assert "would overwrite an input" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), str(root)]) == 2
    assert "holds no label sequences" in capsys.readouterr().err


def test_labels_are_checked_before_the_model_loads_and_photographs_refused(tmp_path, davis, monkeypatch, capsys) -> None:
    from PIL import Image

    import rgmp_model.inference.session as session_module
    from rgmp_model.io.label_io import check_label_values

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the labels were checked")

    monkeypatch.setattr(session_module, "load_model", no_model)
    root, sequence = davis
    images = root / "JPEGImages" / "480p" / sequence.name
    rng = np.random.default_rng(0)
    Image.fromarray((sequence.frames[0].mean(-1) * 255).astype(np.uint8)).save(tmp_path / "grey_photo.png")
    tifffile.imwrite(tmp_path / "fluorescence.tif", rng.integers(100, 4000, (64, 80), dtype=np.uint16))
    not_a_model = tmp_path / "weights.pt"
    not_a_model.write_text("not a checkpoint")
    for labels in ("grey_photo.png", "fluorescence.tif"):
        before = (tmp_path / labels).read_bytes()
        assert main(["propagate", str(images), "--labels", str(tmp_path / labels), "--checkpoint", str(not_a_model),
                     "--out", str(tmp_path / "out.tif")]) == 2
        err = capsys.readouterr().err
        assert f"{labels} does not look like a label image: its values are scattered like a photograph's" in err
        assert "integer object ids, one value per object and 0 for the background" in err
        assert "weights.pt" not in err and (tmp_path / labels).read_bytes() == before
    assert not (tmp_path / "out.tif").exists()
    cells = np.zeros((256, 256), np.uint16)  # 100 small objects: labels, not a photograph
    for i in range(100):
        cells[(i // 10) * 25 + 5:(i // 10) * 25 + 15, (i % 10) * 25 + 5:(i % 10) * 25 + 12] = i + 1
    check_label_values(cells, "cells.tif")


def test_a_file_that_is_not_a_checkpoint_gets_a_message_without_internal_names(tmp_path, davis, capsys) -> None:
    root, sequence = davis
    images = root / "JPEGImages" / "480p" / sequence.name
    labels = root / "Annotations" / "480p" / sequence.name / "00000.png"
    not_a_model = tmp_path / "weights.pt"
    for content in (b"not a checkpoint", b"PK\x03\x04" + bytes(100)):  # text, a broken zip
        not_a_model.write_bytes(content)
        assert main(["propagate", str(images), "--labels", str(labels), "--checkpoint", str(not_a_model),
                     "--out", str(tmp_path / "out.tif")]) == 2
        err = capsys.readouterr().err
        assert "weights.pt cannot be read as a PyTorch checkpoint" in err
        for internal in ("UnpicklingError", "RuntimeError", "PytorchStreamReader", "weights_only", "Traceback"):
            assert internal not in err
    assert not (tmp_path / "out.tif").exists()


def test_models_lists_every_file_even_when_one_fails_in_an_unexpected_way(tmp_path, checkpoint, monkeypatch, capsys) -> None:
    import rgmp_model.nn.models as models

    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("RGMP_MODELS_DIR", str(folder))
    for name in ("a_good.pt", "b_odd.pt", "d_good.pt"):
        (folder / name).write_bytes(checkpoint.read_bytes())
    saved = torch.load(checkpoint, weights_only=True)
    torch.save({**saved, "metadata": "not a mapping"}, folder / "c_metadata.pt")
    (folder / "e_empty.pth").write_bytes(b"")
    read = models.read_checkpoint_info

    def odd(path, *args, **kwargs):
        if path.name == "b_odd.pt":
            raise RuntimeError("internal failure deep in a reader")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(models, "read_checkpoint_info", odd)
    assert main(["models"]) == 1
    out = capsys.readouterr().out
    for name in ("a_good.pt", "b_odd.pt", "c_metadata.pt", "d_good.pt", "e_empty.pth"):
        assert f"{folder / name}\n" in out
    assert out.count("DAMAGED") == 3 and out.count("... ok") == 2 + (models.bundled_checkpoint() is not None)
    assert "b_odd.pt is not a usable napari-rgmp checkpoint (internal failure deep in a reader)" in out


def test_evaluate_scores_the_predicted_sequences_named_from_the_prediction(tmp_path, davis, capsys) -> None:
    import dataclasses
    import shutil

    from rgmp_model.io.label_io import write_palette_png

    shared, sequence = davis
    root = shutil.copytree(shared, tmp_path / "DAVIS")
    other = synthetic_video(num_frames=5, height=64, width=80, num_objects=1, seed=8)
    save_davis_layout(dataclasses.replace(other, name="other-clip"), root)  # GT: two sequences, PRED: one
    results = tmp_path / "results" / sequence.name
    results.mkdir(parents=True)
    for t, labels in enumerate(sequence.labels):
        write_palette_png(results / f"{t:05d}.png", labels)
    assert main(["evaluate", str(tmp_path / "results"), str(root)]) == 0
    table = capsys.readouterr().out
    assert sequence.name in table and "other-clip" not in table
    # one sequence against one, whatever the names: the table names it after the prediction
    tifffile.imwrite(tmp_path / "my-clip.tif", sequence.labels)
    tifffile.imwrite(tmp_path / "truth.tif", sequence.labels)
    assert main(["evaluate", str(tmp_path / "my-clip.tif"), str(tmp_path / "truth.tif")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(row.split()[0] == "my-clip" for row in rows if row.strip()) and "truth" not in " ".join(rows)
    # a predicted sequence without ground truth is named
    tifffile.imwrite(tmp_path / "results" / "unknown.tif", sequence.labels)
    assert main(["evaluate", str(tmp_path / "results"), str(root)]) == 2
    assert "no ground truth for unknown" in capsys.readouterr().err


def test_propagate_prints_no_empty_progress_bar(tmp_path, checkpoint, davis, capsys) -> None:
    root, sequence = davis
    name = sequence.name
    assert main(["propagate", str(root / "JPEGImages" / "480p" / name),
                 "--labels", str(root / "Annotations" / "480p" / name / "00000.png"),
                 "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out.tif"), "--direction", "forward"]) == 0
    err = capsys.readouterr().err
    assert "propagating" in err and "/5 " in err.replace("[", " ")
    assert not re.search(r"propagating: \d+frame", err), err  # a bar without a total ("0frame [00:00, ?frame/s]")
