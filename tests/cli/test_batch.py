"""``rgmp batch`` on a local cluster of 2 worker processes with tiny stacks and a random-weight
model: outputs equal (byte for byte on the CPU) to single ``rgmp propagate`` runs of the same rows
(TIFF, zarr, PNG folder, CTC layout, per-row options), a bad row failing alone with its frames
done kept, a second run skipping the finished rows, and Ctrl-C (a real SIGINT to the command's
process group, as a terminal sends it) keeping the finished rows and the rows' frames done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rgmp_model.batch import local_cluster, read_manifest, run_batch
from rgmp_model.cli import main
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_davis_layout, save_tiff
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
from rgmp_model.io.label_io import open_label_stack

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 worker processes for the module."""
    with local_cluster(2) as client:
        yield client


@pytest.fixture
def one_torch_thread():
    """Single runs in this process with the workers' torch threads (1), for byte-equal outputs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiff_stack(folder: Path, name: str, frames: int, seed: int, label_frames: tuple[int, ...] = (0,)) -> None:
    """``name.tif`` (uint16 cells) and ``name_labels.tif``: a label image of frame 0, or a label
    stack with ``label_frames`` labelled."""
    sequence = synthetic_microscopy(num_frames=frames, height=48, width=64, num_cells=3, seed=seed)
    save_tiff(sequence, folder / f"{name}.tif", folder / f"{name}_labels.tif")
    if label_frames == (0,):
        tifffile.imwrite(folder / f"{name}_labels.tif", sequence.labels[0].astype(np.uint16))
    else:
        stack = np.zeros_like(sequence.labels, dtype=np.uint16)
        stack[list(label_frames)] = sequence.labels[list(label_frames)]
        tifffile.imwrite(folder / f"{name}_labels.tif", stack)


def _frame_folder(folder: Path, name: str, damaged: int | None = None) -> tuple[Path, Path]:
    """A DAVIS-layout folder of JPEG frames and its frame-0 annotation; frame ``damaged`` truncated."""
    sequence = synthetic_video(num_frames=6, height=48, width=64, num_objects=2, seed=len(name))
    save_davis_layout(sequence, folder / name)
    frames = folder / name / "JPEGImages" / "480p" / sequence.name
    if damaged is not None:
        bad = sorted(frames.iterdir())[damaged]
        bad.write_bytes(bad.read_bytes()[:200])
    return frames, folder / name / "Annotations" / "480p" / sequence.name / "00000.png"


def _files(path: Path) -> dict[str, bytes]:
    """Every file of an output (a file, or a folder such as a zarr store) -> its bytes."""
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def plate(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("plate")
    _tiff_stack(folder, "A01", 6, seed=1)
    _tiff_stack(folder, "A02", 7, seed=2, label_frames=(2, 5))
    _tiff_stack(folder, "A03", 6, seed=3)
    frames, labels = _frame_folder(folder, "davis")
    (folder / "plate.csv").write_text(
        "images,labels,out,reference-frame,direction,format\n"
        "A01.tif,A01_labels.tif,../res/A01_rgmp.tif,,forward,\n"
        "A02.tif,A02_labels.tif,../res/A02_rgmp.zarr,5,both,\n"
        "A03.tif,A03_labels.tif,../res/A03_RES,,,ctc\n"
        f"{frames},{labels},../res/davis_png,,forward,\n")
    return folder


def test_outputs_equal_single_propagate_runs(client, plate, checkpoint, tmp_path, one_torch_thread) -> None:
    rows = read_manifest(plate / "plate.csv")
    report = run_batch(client, rows, {"checkpoint": checkpoint}, torch_threads=1)
    assert [r.status for r in report.rows] == ["done"] * 4, report.table()
    assert [r.worker for r in report.rows] != [report.rows[0].worker] * 4  # both workers took rows
    assert all(r.peak_memory_mb and r.peak_memory_mb > 50 for r in report.rows)
    models = client.run(lambda: [key[0] for key in __import__("rgmp_model.inference.session").inference.session._models])
    assert sorted(models.values()) == [[str(checkpoint.resolve())]] * 2  # each worker loaded the model once, kept it
    for row in rows:
        single = tmp_path / "single" / row.out.name
        extra = [a for name, value in row.options if value for a in (f"--{name.replace('_', '-')}", str(value))]
        assert main(["propagate", str(row.images), "--labels", str(row.labels), "--checkpoint", str(checkpoint),
                     "--out", str(single), *extra]) == 0
        assert _files(row.out) == _files(single), row.out.name
    assert not [p for p in (plate.parent / "res").iterdir() if ".partial" in p.name]


def test_a_bad_row_fails_alone_and_a_second_run_skips_the_finished_rows(client, checkpoint, tmp_path, capsys) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    _tiff_stack(folder, "B01", 6, seed=4)
    frames, labels = _frame_folder(folder, "bad", damaged=3)
    _tiff_stack(folder, "B02", 6, seed=5)
    manifest = folder / "plate.yaml"
    manifest.write_text("- {images: B01.tif, labels: B01_labels.tif, out: res/B01.tif}\n"
                        f"- {{images: {frames}, labels: {labels}, out: res/bad.tif}}\n"
                        "- {images: B02.tif, labels: B02_labels.tif, out: res/B02.tif}\n")
    args = ["batch", str(manifest), "--checkpoint", str(checkpoint), "--direction", "forward",
            "--torch-threads", "1", "--scheduler", client.scheduler.address]
    assert main(args) == 1
    out = capsys.readouterr().out
    first = json.loads((folder / "plate_report.json").read_text())
    assert [r["status"] for r in first["rows"]] == ["done", "failed", "done"], out
    message = first["rows"][1]["message"]
    damaged = sorted(frames.iterdir())[3].name
    assert damaged in message and f"the 3 frame(s) done are in {folder / 'res' / 'bad.partial.tif'}" in message
    assert message in out and "3 rows: 2 done, 1 failed" in out
    kept = np.asarray(open_label_stack(folder / "res" / "bad.partial.tif")[:])
    assert kept.shape == (6, 48, 64) and kept[:3].any() and not kept[3:].any()
    assert not (folder / "res" / "bad.tif").exists()
    finished = {p: p.stat().st_mtime_ns for p in (folder / "res" / "B01.tif", folder / "res" / "B02.tif")}

    assert main(args) == 1  # the bad row runs again (and fails again); the finished rows are skipped
    second = json.loads((folder / "plate_report.json").read_text())
    assert [r["status"] for r in second["rows"]] == ["skipped", "failed", "skipped"]
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert "1 to run, 2 complete already (skipped)" in capsys.readouterr().out


_SLOW_BATCH = """
import contextlib, os, signal, sys, time
from pathlib import Path
from distributed.diagnostics.plugin import WorkerPlugin

class SlowStep(WorkerPlugin):
    '''On each worker, every network step takes 0.3 s more and leaves a marker file.'''
    def setup(self, worker):
        from rgmp_model.inference.propagators import BatchedPropagator
        step, markers = BatchedPropagator.step, Path(os.environ["RGMP_TEST_MARKERS"])
        def slow(self, *args):
            result = step(self, *args)
            (markers / f"{os.getpid()}-{time.monotonic_ns()}").touch()
            time.sleep(0.3)
            return result
        BatchedPropagator.step = slow

import rgmp_model.batch.runner as runner
local_cluster = runner.local_cluster
@contextlib.contextmanager
def slow_cluster(*args, **kwargs):
    with local_cluster(*args, **kwargs) as client:
        client.register_plugin(SlowStep())
        yield client
runner.local_cluster = slow_cluster
# Ctrl-C as in a terminal: a child of a background job inherits SIGINT ignored, and Python keeps it so
signal.signal(signal.SIGINT, signal.default_int_handler)
from rgmp_model.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_ctrl_c_keeps_the_finished_rows_and_the_frames_done(checkpoint, tmp_path, one_torch_thread) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    for n, frames in enumerate((4, 20, 20, 20)):
        _tiff_stack(folder, f"P{n}", frames, seed=10 + n)
    markers, results = tmp_path / "markers", tmp_path / "res"
    markers.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]),
               RGMP_TEST_MARKERS=str(markers))
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BATCH, "batch", "--images", str(folder / "P?.tif"), "--labels",
         str(folder / "P?_labels.tif"), "--out-dir", str(results), "--workers", "2", "--checkpoint", str(checkpoint),
         "--direction", "forward", "--torch-threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 180
    while process.poll() is None and time.monotonic() < deadline and not (
            (results / "P0_rgmp.tif").exists() and len(list(markers.iterdir())) >= 8):
        time.sleep(0.05)  # row P0 (3 steps) is done and the other rows have taken 5 steps or more
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)  # the whole process group, workers included, as Ctrl-C does
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and "rgmp batch: interrupted (Ctrl-C)" in err
    rows = json.loads((results / "rgmp_batch_report.json").read_text())["rows"]
    assert rows[0]["status"] == "done"
    assert {r["status"] for r in rows[1:]} <= {"interrupted", "not run"}
    assert any(r["status"] == "interrupted" and r["frames"] >= 1 for r in rows[1:]), rows
    for row in rows:
        name = Path(row["images"]).stem
        single = tmp_path / "single" / f"{name}.tif"
        assert main(["propagate", row["images"], "--labels", row["labels"], "--checkpoint", str(checkpoint),
                     "--out", str(single), "--direction", "forward"]) == 0
        complete = tifffile.imread(single)
        if row["status"] == "done":
            assert (results / f"{name}_rgmp.tif").read_bytes() == single.read_bytes()
        elif row["frames"]:  # the frames done, then zeros, in the row's partial output
            kept = tifffile.imread(results / f"{name}_rgmp.partial.tif")
            done = row["frames"]
            np.testing.assert_array_equal(kept[:done], complete[:done])
            assert not kept[done:].any() and f"the {done} frame(s) done are in" in row["message"]
        assert row["status"] == "done" or not (results / f"{name}_rgmp.tif").exists()
    group = subprocess.run(["ps", "-o", "pid,ppid,stat,args", "--no-headers", "-g", str(process.pid)],
                           capture_output=True, text=True).stdout
    # No process of the command left running. Exited ones may wait a moment as zombies for init
    # to reap them (multiprocessing's resource tracker outlives the command by design, by a moment).
    running = [line for line in group.splitlines() if line.split()[2][0] != "Z"]
    assert running == [], group
