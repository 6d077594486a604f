"""``rgmp propagate`` keeps the frames done on any failure once its output is open: an engine
error, a damaged frame, a full disk, Ctrl-C (in-process and a real SIGINT to a subprocess). The
output is a valid TIFF / zarr / PNG folder / CTC folder holding exactly the frames done, stderr
says how many and what to do, the exit code is 1 (130 for Ctrl-C), and the inputs are
byte-identical afterwards."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rgmp_model.cli import main
from rgmp_model.data.synthetic_io import save_tiff
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
from rgmp_model.inference.propagators import BatchedPropagator
from rgmp_model.io import tiff_out
from rgmp_model.io.label_io import open_label_stack

FRAMES = 8


def digest(*paths: Path) -> dict[Path, str]:
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*")))]
    return {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> tuple[Path, Path]:
    """An 8-frame uint16 stack and a label image for its frame 0."""
    folder = tmp_path_factory.mktemp("inputs")
    sequence = synthetic_microscopy(num_frames=FRAMES, height=48, width=64, num_cells=3, seed=4)
    images, labels = folder / "cells.tif", folder / "cells_labels.tif"
    save_tiff(sequence, images, labels)
    tifffile.imwrite(labels, sequence.labels[0].astype(np.uint16))  # one label image for frame 0
    return images, labels


@pytest.fixture(scope="module")
def complete(stack, checkpoint, tmp_path_factory) -> np.ndarray:
    """The output of an uninterrupted run."""
    out = tmp_path_factory.mktemp("complete") / "all.tif"
    assert _propagate(stack, checkpoint, out) == 0
    return tifffile.imread(out)


def _propagate(stack: tuple[Path, Path], checkpoint: Path, out: Path, *extra: str) -> int:
    images, labels = stack
    return main(["propagate", str(images), "--labels", str(labels), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--direction", "forward", *extra])


def _fail_step_after(monkeypatch, calls: int, error: BaseException) -> None:
    """The propagator's step raises ``error`` on call ``calls + 1`` (frame ``calls + 1``)."""
    original, count = BatchedPropagator.step, [0]

    def step(self, *args):
        count[0] += 1
        if count[0] > calls:
            raise error
        return original(self, *args)

    monkeypatch.setattr(BatchedPropagator, "step", step)


def _assert_kept(out: Path, complete: np.ndarray, kept: int) -> None:
    """``out`` opens as a label stack holding the first ``kept`` frames of the complete run, 0 after."""
    result = np.asarray(open_label_stack(out)[:])
    assert result.shape == complete.shape
    np.testing.assert_array_equal(result[:kept], complete[:kept])
    assert not result[kept:].any()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]  # no temporary file left


def test_an_engine_error_part_way_keeps_the_frames_done(tmp_path, stack, checkpoint, complete, monkeypatch, capsys) -> None:
    before = digest(*stack, checkpoint)
    _fail_step_after(monkeypatch, 3, ValueError("frame 4 of cells.tif is damaged"))
    code = _propagate(stack, checkpoint, tmp_path / "out.tif")
    err = capsys.readouterr().err
    assert code == 1
    assert "rgmp propagate: error: frame 4 of cells.tif is damaged" in err
    assert f"kept the 4 of {FRAMES} frames done in {tmp_path / 'out.tif'} (frames not reached are 0)" in err
    assert "fix the problem above, then run the command again" in err and "Traceback" not in err
    _assert_kept(tmp_path / "out.tif", complete, 4)
    assert digest(*stack, checkpoint) == before


@pytest.mark.parametrize("suffix", [".zarr", "_png"])
def test_zarr_and_png_outputs_keep_the_frames_done(tmp_path, stack, checkpoint, complete, monkeypatch, suffix, capsys) -> None:
    _fail_step_after(monkeypatch, 2, RuntimeError("out of memory at frame 3"))
    out = tmp_path / f"out{suffix}"
    assert _propagate(stack, checkpoint, out) == 1
    assert "kept the 3 of 8 frames done" in capsys.readouterr().err
    if suffix == "_png":
        assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00002.png"]
        np.testing.assert_array_equal(open_label_stack(out)[:], complete[:3])
    else:
        _assert_kept(out, complete, 3)


def test_a_ctc_output_is_finished_with_a_valid_track_file(tmp_path, stack, checkpoint, complete, monkeypatch, capsys) -> None:
    from rgmp_model.io.ctc_export import read_ctc

    _fail_step_after(monkeypatch, 2, ValueError("damaged frame"))
    assert _propagate(stack, checkpoint, tmp_path / "01_RES", "--format", "ctc") == 1
    assert "with a new --out folder" in capsys.readouterr().err
    masks, tracks = read_ctc(tmp_path / "01_RES")
    assert masks.shape == complete.shape and not masks[3:].any()
    assert all(track.end <= 2 for track in tracks)


def test_a_damaged_frame_file_is_named_and_the_frames_before_it_kept(tmp_path, checkpoint, capsys) -> None:
    from rgmp_model.data.synthetic import synthetic_video
    from rgmp_model.data.synthetic_io import save_davis_layout

    sequence = synthetic_video(num_frames=6, height=48, width=64, num_objects=2, seed=1)
    save_davis_layout(sequence, tmp_path / "davis")
    frames = tmp_path / "davis" / "JPEGImages" / "480p" / sequence.name
    damaged = sorted(frames.iterdir())[3]
    damaged.write_bytes(damaged.read_bytes()[:200])  # truncated JPEG
    labels = tmp_path / "davis" / "Annotations" / "480p" / sequence.name / "00000.png"
    before = digest(frames, labels)
    out = tmp_path / "out.tif"
    assert main(["propagate", str(frames), "--labels", str(labels), "--checkpoint", str(checkpoint),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert damaged.name in err and "kept the 3 of 6 frames done" in err, err.split("\r")[-1]
    assert tifffile.imread(out).shape == (6, 48, 64)
    assert digest(frames, labels) == before


def test_a_full_disk_gives_a_message_and_keeps_the_frames_written(tmp_path, stack, checkpoint, complete, monkeypatch, capsys) -> None:
    original, writes = tiff_out.TiffFrameFile.write, [0]

    def write(self, index, frame):
        writes[0] += 1
        if writes[0] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        original(self, index, frame)

    monkeypatch.setattr(tiff_out.TiffFrameFile, "write", write)
    out = tmp_path / "out.tif"
    assert _propagate(stack, checkpoint, out) == 1
    err = capsys.readouterr().err
    assert f"error: {out}: no space left on the disk" in err and "kept the 5 of 8 frames done" in err
    assert "free space on the disk of" in err and "or choose --out on another disk" in err
    _assert_kept(out, complete, 5)


def test_a_disk_too_small_for_the_output_is_found_before_any_frame(tmp_path, stack, checkpoint, monkeypatch, capsys) -> None:
    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tiff_out.os, "posix_fallocate", full)
    assert _propagate(stack, checkpoint, tmp_path / "out.tif") == 1
    assert "not enough free space for the output: it needs" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_nothing_finished_leaves_no_output(tmp_path, stack, checkpoint, monkeypatch, capsys) -> None:
    def write(self, index, frame):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(self.path))

    monkeypatch.setattr(tiff_out.TiffFrameFile, "write", write)
    assert _propagate(stack, checkpoint, tmp_path / "out.tif") == 1
    assert "no frame was finished: nothing was written to" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_output_folder_is_refused_before_the_model_loads(tmp_path, stack, monkeypatch, capsys) -> None:
    import rgmp_model.io.outputs as outputs

    folder = tmp_path / "locked"
    folder.mkdir()
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path) != folder)  # root ignores modes
    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a checkpoint")
    assert _propagate(stack, not_a_model, folder / "sub" / "out.tif") == 2
    err = capsys.readouterr().err
    assert f"{folder} cannot be written (a read-only folder or no permission)" in err
    assert "choose an output in a folder you can write to" in err


def test_ctrl_c_in_process_keeps_the_frames_and_exits_130(tmp_path, stack, checkpoint, complete, monkeypatch, capsys) -> None:
    _fail_step_after(monkeypatch, 1, KeyboardInterrupt())
    assert _propagate(stack, checkpoint, tmp_path / "out.tif") == 130
    err = capsys.readouterr().err
    assert "rgmp propagate: interrupted (Ctrl-C)" in err and "kept the 2 of 8 frames done" in err
    assert "to propagate the whole stack, run the command again" in err
    _assert_kept(tmp_path / "out.tif", complete, 2)


_SLOW_RUN = """
import os, signal, sys, time
from pathlib import Path
# Ctrl-C as in a terminal: a child of a background job (nohup ... &, as CI may run) inherits SIGINT
# ignored, and Python then keeps it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from rgmp_model.inference.propagators import BatchedPropagator
step, calls = BatchedPropagator.step, []
def slow(self, *args):
    calls.append(1)
    if len(calls) == 3:  # frames 1 and 2 are written: say so, then wait to be interrupted
        Path(os.environ["RGMP_TEST_MARKER"]).touch()
        time.sleep(120)
    return step(self, *args)
BatchedPropagator.step = slow
from rgmp_model.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_sigint_to_a_running_command_keeps_the_frames_done(tmp_path, stack, checkpoint, complete) -> None:
    images, labels = stack
    out, marker = tmp_path / "out.tif", tmp_path / "two-frames-done"
    before = digest(*stack, checkpoint)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[2]),
               RGMP_TEST_MARKER=str(marker))
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_RUN, "propagate", str(images), "--labels", str(labels), "--checkpoint",
         str(checkpoint), "--out", str(out), "--direction", "forward"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # no fixed delay: the run waits inside frame 3 until it is interrupted
    assert marker.exists(), "the run never reached frame 3"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "rgmp propagate: interrupted (Ctrl-C)" in err and "Traceback" not in err
    kept = int(err.split("kept the ")[1].split()[0])
    assert 1 <= kept < FRAMES
    _assert_kept(out, complete, kept)
    assert digest(*stack, checkpoint) == before
