"""Soak: a long propagation with its output on disk, memory sampled, and the same stack in chunks.

    python benchmarks/soak.py                               # 5000 frames, the default model, CPU
    python benchmarks/soak.py --frames 200 --size 64 --checkpoint tiny.pt

The stack: a 40-frame synthetic RGB clip (rgmp_model.data.synthetic_video, a seed training never
draws) played back and forth for ``--frames`` frames, each frame made when it is read (with its own
noise), so the stack is never in memory. Every ``--every``-th frame is a keyframe (the clip's exact
labels). One session propagates forward through the whole stack, writing each frame to a label
TIFF on disk as it comes (rgmp_model.io.label_io.LabelStackWriter, the CLI's writer); the process's
resident and anonymous memory (psutil, else /proc/self/status VmRSS / RssAnon) is sampled every
``--sample-every`` frames. Anonymous memory is the heap (tensors, arrays, caches), the part that a
leak grows; the output's memory map is file-backed and not counted. Drift = the largest anonymous
memory after the warm-up (the first tenth of the frames) minus the value at its end: it must stay
under 50 MB. Then the same stack is propagated as ``--chunks`` separate sessions over consecutive
slices, each starting at a keyframe (as a user splitting a long stack would), into a second TIFF:
the labels must equal the long run's, frame for frame.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rgmp_model.data.synthetic import synthetic_video  # noqa: E402

SEED = 2026_1207  # not a training seed (training seeds are drawn by default_rng((seed + j, i)))
MB = 1024**2
DRIFT_LIMIT_MB = 50.0


class SyntheticStream:
    """(N, H, W, 3) uint8 frames of a short synthetic clip played back and forth, from ``start``;
    frame t is made when read (the clip's frame plus noise seeded by t). ``labels(t)``: its labels."""

    def __init__(self, num_frames: int, height: int, width: int, clip: int = 40, seed: int = SEED,
                 start: int = 0, _sequence: Any = None) -> None:
        self._sequence = _sequence or synthetic_video(clip, height, width, num_objects=3, seed=seed)
        self.start, self.shape, self.dtype = int(start), (int(num_frames), int(height), int(width), 3), np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def _clip_index(self, t: int) -> int:
        clip = len(self._sequence.frames)
        k = (self.start + t) % (2 * clip - 2)
        return k if k < clip else 2 * clip - 2 - k

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {t} is outside a stream of {self.shape[0]} frames")
        frame = self._sequence.frames[self._clip_index(int(t))].astype(np.int16)
        noise = np.random.default_rng((SEED, self.start + int(t))).integers(-6, 7, frame.shape, dtype=np.int16)
        return np.clip(frame + noise, 0, 255).astype(np.uint8)

    def labels(self, t: int) -> np.ndarray:
        return self._sequence.labels[self._clip_index(int(t))]

    def slice(self, start: int, stop: int) -> SyntheticStream:
        """Frames ``start``..``stop - 1`` as a stream of their own (the same frames)."""
        return SyntheticStream(stop - start, *self.shape[1:3], start=self.start + start, _sequence=self._sequence)


def memory() -> tuple[int, int]:
    """(resident, anonymous) bytes of this process."""
    try:
        import psutil

        info = psutil.Process().memory_info()
        return info.rss, info.rss - getattr(info, "shared", 0)  # shared: file-backed and shared-memory pages
    except ImportError:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["RssAnon"].split()[0]) * 1024


@dataclass(frozen=True)
class SoakResult:
    frames: int
    seconds: float  # the long run
    samples: tuple[tuple[int, int, int], ...]  # (frames done, resident, anonymous bytes)
    warmup: int  # frames before the drift baseline
    drift_mb: float
    chunks: int
    chunks_equal: bool
    differing_frames: int


def _propagate(stream: SyntheticStream, checkpoint: Any, every: int, writer: Any, offset: int,
               device: str, on_frame: Any = None) -> None:
    """Forward from every keyframe of ``stream`` (frames 0, every, 2 every, ...), into writer[offset + t]."""
    from rgmp_model import PropagationOptions, open_session

    session = open_session(checkpoint, stream, PropagationOptions(direction="forward", max_size=0, region="off",
                                                                  device=device))
    for t in range(0, len(stream), every):
        session.add_keyframe(t, stream.labels(t))
    for t, labels, _ in session.propagate():
        writer[offset + t] = labels
        if on_frame is not None:
            on_frame()


def soak(checkpoint: Any, out_dir: Path, frames: int = 5000, size: tuple[int, int] = (128, 160), every: int = 250,
         chunks: int = 3, sample_every: int = 100, device: str = "cpu") -> SoakResult:
    """Run the soak (see the module docstring); outputs ``long.tif`` and ``chunked.tif`` in ``out_dir``."""
    import tifffile

    from rgmp_model.io.label_io import LabelStackWriter

    stream = SyntheticStream(frames, *size)
    samples: list[tuple[int, int, int]] = [(0, *memory())]
    done = 0

    def count() -> None:
        nonlocal done
        done += 1
        if done % sample_every == 0 or done == frames:
            samples.append((done, *memory()))

    started = time.perf_counter()
    with LabelStackWriter(out_dir / "long.tif", (frames, *size), np.uint16) as writer:
        _propagate(stream, checkpoint, every, writer, 0, device, count)
    seconds = time.perf_counter() - started
    # chunks start at keyframes: the stretches, and so the labels, are the long run's
    bounds = sorted({min(frames, round(k * frames / chunks / every) * every) for k in range(chunks)} | {frames})
    with LabelStackWriter(out_dir / "chunked.tif", (frames, *size), np.uint16) as writer:
        for start, stop in zip(bounds[:-1], bounds[1:]):
            _propagate(stream.slice(start, stop), checkpoint, every, writer, start, device)
    long_labels = tifffile.memmap(out_dir / "long.tif", mode="r")
    chunked = tifffile.memmap(out_dir / "chunked.tif", mode="r")
    differing = sum(not np.array_equal(long_labels[t], chunked[t]) for t in range(frames))
    warmup = max(sample_every, frames // 10)
    after = [anon for n, _, anon in samples if n >= warmup]
    baseline = next(anon for n, _, anon in samples if n >= warmup)
    del long_labels, chunked
    return SoakResult(frames, seconds, tuple(samples), warmup, (max(after) - baseline) / MB, len(bounds) - 1,
                      differing == 0, differing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    parser.add_argument("--every", type=int, default=250, help="a keyframe every N frames")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print("command: python benchmarks/soak.py " + " ".join(sys.argv[1:]))
    import torch

    from rgmp_model.nn.models import bundled_checkpoint

    checkpoint = args.checkpoint or bundled_checkpoint()
    if checkpoint is None:
        raise SystemExit("this napari-rgmp has no bundled model: pass --checkpoint")
    print(f"model: {checkpoint}; {torch.get_num_threads()} torch threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}); "
          f"{args.frames} frames of {args.size[0]}x{args.size[1]} RGB, a keyframe every {args.every}, on {args.device}")
    with tempfile.TemporaryDirectory(prefix="rgmp_soak_") as folder:
        result = soak(checkpoint, Path(folder), args.frames, tuple(args.size), args.every, args.chunks,
                      args.sample_every, args.device)
    print("\n| frames done | resident MB | anonymous MB |\n|---|---|---|")
    step = max(1, len(result.samples) // 20)
    for n, rss, anon in result.samples[::step] + ((result.samples[-1],) if (len(result.samples) - 1) % step else ()):
        print(f"| {n} | {rss / MB:.1f} | {anon / MB:.1f} |")
    print(f"\nlong run: {result.frames} frames in {result.seconds:.1f} s ({result.frames / result.seconds:.2f} frames/s), "
          f"output TIFF on disk; anonymous-memory drift after {result.warmup} warm-up frames: {result.drift_mb:+.1f} MB")
    print(f"chunked run: {result.chunks} sessions, {result.differing_frames} frames differ from the long run")
    for ok, text in ((result.drift_mb < DRIFT_LIMIT_MB, f"anonymous-memory drift under {DRIFT_LIMIT_MB:.0f} MB"),
                     (result.chunks_equal, "chunked output equal to the long run")):
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
    if not (result.drift_mb < DRIFT_LIMIT_MB and result.chunks_equal):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
