"""Cell Tracking Challenge (CTC) result layout: what tracking tools and the CTC evaluation read.

A result folder holds one 16-bit label TIFF per frame, ``mask000.tif``, ``mask001.tif``, ...
(four digits when the stack has 1,000 frames or more), and ``res_track.txt`` with one line
``L B E P`` per track: label, first and last frame, parent label (0 for none). A CTC track is
continuous: an object that vanishes and comes back continues as a new track whose parent is the
earlier one (gap closing), and a daughter cell's track names its mother.

:class:`CTCWriter` takes frames in any order (as the engine yields them), writes each at once,
and on :meth:`CTCWriter.close` relabels the frames after a gap and writes ``res_track.txt``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tifffile

__all__ = ["Track", "CTCWriter", "ctc_tracks", "read_ctc", "write_ctc"]

_MASK = re.compile(r"^mask(\d{3,})\.tif$")


@dataclass(frozen=True)
class Track:
    """One line of res_track.txt: ``label`` present on every frame ``begin``..``end`` (inclusive)."""

    label: int
    begin: int
    end: int
    parent: int = 0


def ctc_tracks(presence: Mapping[int, set[int] | frozenset[int]], parents: Mapping[int, int] | None = None,
               first_free: int | None = None) -> tuple[list[Track], dict[tuple[int, int], int]]:
    """Tracks from which ids are on which frame.

    ``presence``: frame -> ids present; ``parents``: id -> parent id (divisions). An id present
    on several separate runs of frames keeps its id on the first run; each later run gets a new
    label (from ``first_free``, default max id + 1) whose parent is the run before. A parent that
    is still present when its daughter begins (the engine keeps the mother's id on one part) ends
    there too: from that frame on it continues as a new label, a daughter of it like the other.
    A daughter's parent is the parent's run that ends last before the daughter begins. Returns
    the tracks (sorted by label) and the relabelling ``{(frame, id): new label}`` for those runs.
    """
    frames_of: dict[int, list[int]] = {}
    for t in sorted(presence):
        for i in presence[t]:
            frames_of.setdefault(int(i), []).append(int(t))
    parents = {int(c): int(p) for c, p in (parents or {}).items() if int(c) in frames_of}
    cuts: dict[int, set[int]] = {}  # id -> frames where it divides (a daughter begins)
    for child, parent in parents.items():
        cuts.setdefault(parent, set()).add(frames_of[child][0])
    next_label = first_free if first_free is not None else max(frames_of, default=0) + 1
    runs_of: dict[int, list[tuple[int, list[int]]]] = {}  # id -> [(label, frames)]
    relabel: dict[tuple[int, int], int] = {}
    for i in sorted(frames_of):
        frames = np.asarray(frames_of[i])
        breaks = (np.diff(frames) > 1) | np.isin(frames[1:], sorted(cuts.get(i, ())))
        for k, run in enumerate(np.split(frames, np.flatnonzero(breaks) + 1)):
            label = i
            if k > 0:
                label, next_label = next_label, next_label + 1
                relabel.update({(int(t), i): label for t in run})
            runs_of.setdefault(i, []).append((label, [int(t) for t in run]))
    tracks: list[Track] = []
    for i, runs in runs_of.items():
        parent = 0
        if i in parents:
            begin = runs[0][1][0]
            before = [label for label, run in runs_of.get(parents[i], []) if run[-1] < begin]
            parent = before[-1] if before else 0
        for label, run in runs:
            tracks.append(Track(label, run[0], run[-1], parent))
            parent = label
    return sorted(tracks, key=lambda track: track.label), relabel


def _mask_name(t: int, num_frames: int) -> str:
    return f"mask{t:0{4 if num_frames >= 1000 else 3}d}.tif"


class CTCWriter:
    """Writes a (T, H, W) label result in the CTC layout under ``folder``, frame by frame.

    ``writer[t] = labels`` writes ``mask<t>.tif`` (uint16) at once; :meth:`close` closes gaps
    (rewriting only the frames whose ids continue a track after a gap) and writes
    ``res_track.txt``. ``parents``: id -> parent id for daughter cells. Only the ids present on
    each frame are kept in memory. An existing non-empty folder is refused unless ``overwrite``.
    """

    def __init__(self, folder: str | os.PathLike, num_frames: int, *, parents: Mapping[int, int] | None = None,
                 overwrite: bool = False) -> None:
        self.folder = Path(folder)
        if self.folder.is_file():
            raise ValueError(f"{self.folder} is a file: give a folder for the Cell Tracking Challenge result")
        if self.folder.is_dir() and any(self.folder.iterdir()) and not overwrite:
            raise ValueError(f"{self.folder} is not empty: choose a new folder or allow overwriting")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.num_frames = int(num_frames)
        self.parents = dict(parents or {})
        self.presence: dict[int, frozenset[int]] = {}
        self.tracks: list[Track] | None = None

    def __setitem__(self, t: int, labels: np.ndarray) -> None:
        t = int(t)
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} is outside 0..{self.num_frames - 1}")
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype.kind not in "iub":
            raise ValueError(f"frame {t}: labels must be an (H, W) integer image, got {labels.dtype} {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
            raise ValueError(f"frame {t}: CTC masks are uint16, ids must be in 0..65535")
        path = self.folder / _mask_name(t, self.num_frames)
        try:
            tifffile.imwrite(path, labels.astype(np.uint16), compression="zlib")
        except OSError:
            path.unlink(missing_ok=True)  # never leave a half-written mask (a full disk)
            raise
        self.presence[t] = frozenset(int(i) for i in np.unique(labels) if i != 0)

    def close(self) -> list[Track]:
        """Relabel the frames after gaps, write res_track.txt and return the tracks. Frames
        never written are written empty (CTC needs every frame)."""
        if self.tracks is not None:
            return self.tracks
        shape = None
        for t in sorted(self.presence):
            shape = tifffile.imread(self.folder / _mask_name(t, self.num_frames)).shape
            break
        for t in range(self.num_frames):
            if t not in self.presence and shape is not None:
                self[t] = np.zeros(shape, np.uint16)
        self.tracks, relabel = ctc_tracks(self.presence, self.parents)
        by_frame: dict[int, dict[int, int]] = {}
        for (t, old), new in relabel.items():
            by_frame.setdefault(t, {})[old] = new
        for t, mapping in by_frame.items():
            path = self.folder / _mask_name(t, self.num_frames)
            labels = tifffile.imread(path)
            out = labels.copy()
            for old, new in mapping.items():
                out[labels == old] = new
            tifffile.imwrite(path, out, compression="zlib")
        lines = [f"{tr.label} {tr.begin} {tr.end} {tr.parent}\n" for tr in self.tracks]
        (self.folder / "res_track.txt").write_text("".join(lines))
        return self.tracks

    def __enter__(self) -> CTCWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_ctc(folder: str | os.PathLike, labels: Any, *, parents: Mapping[int, int] | None = None,
              overwrite: bool = False) -> list[Track]:
    """Write a (T, H, W) label stack (read one frame at a time) in the CTC layout."""
    shape = tuple(getattr(labels, "shape", np.shape(labels)))
    if len(shape) != 3:
        raise ValueError(f"labels must be a (T, H, W) stack, got shape {shape}")
    with CTCWriter(folder, shape[0], parents=parents, overwrite=overwrite) as writer:
        for t in range(shape[0]):
            writer[t] = np.asarray(labels[t])
    return writer.close()


def read_ctc(folder: str | os.PathLike) -> tuple[np.ndarray, list[Track]]:
    """A CTC result folder -> ((T, H, W) uint16 labels, tracks). Raises ValueError when the
    masks are not numbered 0..T-1 or res_track.txt is malformed."""
    folder = Path(folder)
    masks = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _MASK.match(p.name)))
    if not masks or [t for t, _ in masks] != list(range(len(masks))):
        raise ValueError(f"{folder} does not hold mask000.tif, mask001.tif, ... numbered from 0 without gaps")
    stack = np.stack([tifffile.imread(p) for _, p in masks])
    tracks = []
    for n, line in enumerate((folder / "res_track.txt").read_text().splitlines(), 1):
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{folder / 'res_track.txt'} line {n} is not 'L B E P': {line!r}")
        tracks.append(Track(*map(int, parts)))
    return stack, tracks
