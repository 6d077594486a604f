"""The soak benchmark at 200 frames (benchmarks/soak.py; ``make soak`` runs 5000): memory does not
drift while a long stack is propagated with its output on disk, and chunks give the same labels.
A correctness check, not a timing: tiny frames and a tiny random-weight model."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from soak import DRIFT_LIMIT_MB, SyntheticStream, soak  # noqa: E402


def test_soak_memory_stays_flat_and_chunks_equal_the_long_run(tmp_path, checkpoint) -> None:
    result = soak(checkpoint, tmp_path, frames=200, size=(64, 64), every=50, chunks=3, sample_every=10)
    assert result.chunks == 3 and len(result.samples) == 21
    assert result.chunks_equal, f"{result.differing_frames} frames differ between the long and the chunked run"
    assert result.drift_mb < DRIFT_LIMIT_MB, result.samples


def test_the_synthetic_stream_is_made_frame_by_frame_and_slices_agree() -> None:
    stream = SyntheticStream(100, 32, 40, clip=8)
    part = stream.slice(30, 60)
    assert stream.shape == (100, 32, 40, 3) and part.shape == (30, 32, 40, 3)
    for t in (0, 7, 29):
        assert (part[t] == stream[30 + t]).all() and (part.labels(t) == stream.labels(30 + t)).all()
    assert (stream.labels(14) == stream.labels(0)).all() and not (stream[14] == stream[0]).all()  # back and forth, new noise
