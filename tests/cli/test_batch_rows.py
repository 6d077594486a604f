"""``rgmp batch``'s rows without a cluster: manifests (CSV, YAML), pairing two glob patterns by
name, every row checked before any work (all problems listed at once, nothing written), and the
message naming the extra when dask.distributed is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rgmp_model.batch import BatchRow, check_rows, pair_by_name, partial_path, read_manifest, row_arguments
from rgmp_model.cli import main


def _stack(path: Path, frames: int = 5) -> Path:
    rng = np.random.default_rng(len(path.name))
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, rng.integers(0, 255, (frames, 32, 48), dtype=np.uint8), photometric="minisblack")
    return path


def _labels(path: Path) -> Path:
    labels = np.zeros((32, 48), np.uint16)
    labels[8:20, 10:30] = 1
    tifffile.imwrite(path, labels)
    return path


@pytest.fixture
def plate(tmp_path) -> Path:
    """plate/A01.tif, A02.tif, B01.tif and their *_labels.tif."""
    for name in ("A01", "A02", "B01"):
        _stack(tmp_path / "plate" / f"{name}.tif")
        _labels(tmp_path / "plate" / f"{name}_labels.tif")
    return tmp_path / "plate"


def test_glob_patterns_pair_images_and_labels_by_name(plate, tmp_path) -> None:
    rows = pair_by_name(str(plate / "*.tif"), str(plate / "*_labels.tif"), tmp_path / "results")
    assert [(r.images.name, r.labels.name, r.out) for r in rows] == [
        (f"{n}.tif", f"{n}_labels.tif", tmp_path / "results" / f"{n}_rgmp.tif") for n in ("A01", "A02", "B01")]
    ctc = pair_by_name(str(plate / "A*.tif"), str(plate / "A*_labels.tif"), tmp_path / "res", {"format": "ctc"})
    assert [r.out.name for r in ctc] == ["A01_RES", "A02_RES"]  # rgmp propagate's default names


def test_pairing_refuses_an_image_without_labels_and_patterns_matching_nothing(plate, tmp_path) -> None:
    _stack(plate / "C01.tif")
    with pytest.raises(ValueError, match=r"1 image\(s\) have no labels .*C01.tif"):
        pair_by_name(str(plate / "*.tif"), str(plate / "*_labels.tif"), tmp_path)
    with pytest.raises(ValueError, match="no files match --labels"):
        pair_by_name(str(plate / "*.tif"), str(plate / "*_masks.tif"), tmp_path)


def test_pairing_by_folder_with_a_recursive_pattern(tmp_path) -> None:
    for well in ("A01", "A02"):
        _stack(tmp_path / "plate" / well / "stack.tif")
        _labels(tmp_path / "plate" / well / "labels.tif")
    rows = pair_by_name(str(tmp_path / "plate/**/stack.tif"), str(tmp_path / "plate/**/labels.tif"), tmp_path / "out")
    assert [(r.images.parent.name, r.labels.parent.name) for r in rows] == [("A01", "A01"), ("A02", "A02")]


def test_a_csv_manifest_gives_rows_with_their_options_and_paths_from_its_folder(plate, tmp_path) -> None:
    manifest = plate / "plate.csv"
    manifest.write_text("# a plate\nimages,labels,out,reference-frame,region,official,checkpoint\n"
                        "A01.tif,A01_labels.tif,../res/A01.tif,2,on,yes,model.pt\n"
                        "A02.tif,A02_labels.tif,../res/A02.zarr,,,false,\n")
    first, second = read_manifest(manifest)
    assert (first.images, first.out) == (plate / "A01.tif", plate / "../res/A01.tif")
    args = row_arguments(first, {"direction": "forward", "region": "off"})
    assert (args.reference_frame, args.region, args.official, args.direction) == (2, "on", True, "forward")
    assert args.checkpoint == plate / "model.pt"  # a path option is relative to the manifest too
    args = row_arguments(second, {"direction": "forward", "region": "off"})
    assert (args.reference_frame, args.region, args.official, args.checkpoint) == (None, "off", False, None)


def test_a_yaml_manifest(plate) -> None:
    manifest = plate / "plate.yaml"
    manifest.write_text("- {images: A01.tif, labels: A01_labels.tif, out: A01_rgmp.tif, axis: t, split-divisions: true,"
                        " region: on}\n"
                        "- images: B01.tif\n  labels: B01_labels.tif\n  out: B01_RES\n  format: ctc\n")
    first, second = read_manifest(manifest)
    assert row_arguments(first).split_divisions and row_arguments(first).axis == "t"
    assert row_arguments(first).region == "on"  # YAML's bare on (true) is the choice "on"
    assert row_arguments(second).format == "ctc" and second.out == plate / "B01_RES"


@pytest.mark.parametrize("text, message", [
    ("images,labels\nA01.tif,A01_labels.tif\n", "needs a header row with the columns images, labels, out"),
    ("images,labels,out,speed\nA01.tif,A01_labels.tif,o.tif,9\n", "unknown column 'speed'"),
    ("images,labels,out\nA01.tif,,o.tif\n", "row 1 of plate.csv has no labels"),
])
def test_a_malformed_manifest_is_refused_with_what_to_fix(plate, text, message) -> None:
    (plate / "plate.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_manifest(plate / "plate.csv")


def test_every_row_is_checked_before_any_work_and_all_problems_are_listed(plate, tmp_path, checkpoint) -> None:
    rows = [
        BatchRow(plate / "A01.tif", plate / "A01_labels.tif", tmp_path / "res" / "A01.tif"),  # fine
        BatchRow(plate / "A02.tif", plate / "missing_labels.tif", tmp_path / "res" / "A02.tif"),
        BatchRow(plate / "nowhere.tif", plate / "A01_labels.tif", tmp_path / "res" / "X.tif"),
        BatchRow(plate / "B01.tif", plate / "B01_labels.tif", plate / "A01.tif"),  # another row's input
        BatchRow(plate / "B01.tif", plate / "B01_labels.tif", tmp_path / "res" / "A01.tif"),  # row 1's output
        BatchRow(plate / "B01.tif", plate / "B01_labels.tif", tmp_path / "res" / "B.tif", {"region": "maybe"}),
    ]
    with pytest.raises(ValueError) as error:
        check_rows(rows, {"checkpoint": checkpoint})
    text = str(error.value)
    assert text.startswith("5 problem(s) in the batch, nothing was run")
    assert "row 2 " in text and "missing_labels.tif do not exist" in text
    assert "row 3 " in text and "nowhere.tif" in text
    assert "row 4 " in text and "would overwrite an input" in text
    assert "row 5 " in text and "also written by row 1" in text
    assert "row 6 " in text and "invalid choice: 'maybe'" in text
    assert not (tmp_path / "res").exists()


def test_the_command_refuses_bad_rows_before_starting_a_cluster(plate, tmp_path, checkpoint, capsys) -> None:
    (plate / "plate.csv").write_text("images,labels,out\nA01.tif,A01_labels.tif,A01.tif\n")
    assert main(["batch", str(plate / "plate.csv"), "--checkpoint", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "rgmp batch: error: 1 problem(s) in the batch, nothing was run" in err and "would overwrite an input" in err
    assert not list(plate.glob("*report*"))


def test_a_partial_output_keeps_the_kind_of_its_output(tmp_path) -> None:
    assert partial_path(tmp_path / "A01_rgmp.tif", "tif").name == "A01_rgmp.partial.tif"
    assert partial_path(tmp_path / "A01.zarr", "zarr").name == "A01.partial.zarr"
    assert partial_path(tmp_path / "A01_RES", "ctc").name == "A01_RES.partial"


def test_without_dask_distributed_the_message_names_the_extra(plate, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    code = main(["batch", "--images", str(plate / "*.tif"), "--labels", str(plate / "*_labels.tif"),
                 "--out-dir", str(tmp_path / "res")])
    assert code == 2
    assert "pip install 'napari-rgmp[batch]'" in capsys.readouterr().err
