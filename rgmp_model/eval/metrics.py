"""DAVIS evaluation protocol: region similarity J, contour accuracy F and their statistics.

Masks are ``(H, W)`` arrays; label stacks are ``(T, H, W)`` integer arrays (0 = background).
Stacks may be any array-like with ``.shape`` whose integer indexing returns one frame (numpy
arrays, memmaps, lazy readers): they are read one frame at a time.

Conventions (as in the DAVIS benchmark):

* J is the IoU of two binary masks; J = 1 when both are empty.
* F is the boundary F-measure. Boundaries follow DAVIS ``seg2bmap`` at native size; the
  tolerance is ``ceil(bound_th * diagonal)`` pixels (``bound_th >= 1`` is a pixel count). A
  boundary pixel matches when it lies inside the other boundary dilated with a disk of that
  radius (``dy**2 + dx**2 <= radius**2``: ``skimage.morphology.disk(radius)`` for an integer
  radius), computed row by row with shifted ORs, which is faster than a generic dilation.
* In a sequence the objects are the non-zero ids of the first GT frame; the first and last
  frames are not scored (all frames are scored when ``T < 3``).
* Per object: mean, recall (fraction of scored frames with score > 0.5) and decay (mean of the
  first minus mean of the last of four DAVIS bins) for J and for F. The DAVIS bin formula is
  used for any number of scored frames: with one scored frame the decay is 0.
* Overall statistics are means over all objects of all sequences (DAVIS-2017 style).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ObjectScores",
    "OverallScores",
    "SequenceScores",
    "boundary_f",
    "boundary_map",
    "evaluate_sequence",
    "format_table",
    "jaccard",
    "summarize",
    "write_csv",
]

_STATS = ("j_mean", "j_recall", "j_decay", "f_mean", "f_recall", "f_decay")


# ----------------------------------------------------------------------------- per-frame scores


def _as_mask_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred).astype(bool, copy=False)
    g = np.asarray(gt).astype(bool, copy=False)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(
            f"pred and gt must be 2-D masks of the same shape (H, W); got pred {p.shape} and "
            f"gt {g.shape}. Pass one frame and one object at a time."
        )
    return p, g


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two ``(H, W)`` binary masks; 1.0 when both are empty."""
    p, g = _as_mask_pair(pred, gt)
    return _jaccard(p, g)


def _jaccard(p: np.ndarray, g: np.ndarray) -> float:
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return np.count_nonzero(p & g) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` mask -> ``(H, W)`` bool boundary map (DAVIS ``seg2bmap`` at native size).

    A pixel is a boundary pixel when it differs from its right, bottom or bottom-right
    neighbour (only those that exist: the last row looks right, the last column looks down,
    the bottom-right corner is never a boundary pixel).
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W); got shape {m.shape}.")
    b = np.zeros(m.shape, dtype=bool)
    b[:, :-1] |= m[:, :-1] != m[:, 1:]
    b[:-1, :] |= m[:-1, :] != m[1:, :]
    b[:-1, :-1] |= m[:-1, :-1] != m[1:, 1:]
    return b


def _tolerance_px(shape: tuple[int, ...], bound_th: float) -> float:
    if not bound_th >= 0:
        raise ValueError(
            f"bound_th must be >= 0 (a fraction of the diagonal, or >= 1 for pixels), "
            f"got {bound_th}."
        )
    if bound_th >= 1:
        return float(bound_th)
    return float(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def _crop_to_union(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Crop both masks to the bounding box of their union plus one pixel (None when empty).

    Every boundary pixel of either mask lies in that box and the one-pixel margin keeps the
    neighbour comparisons of the full image, so boundaries computed on the crop are exact.
    """
    union = p | g
    rows = np.flatnonzero(union.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(union.any(axis=0))
    r0, r1 = max(rows[0] - 1, 0), rows[-1] + 2
    c0, c1 = max(cols[0] - 1, 0), cols[-1] + 2
    return p[r0:r1, c0:c1], g[r0:r1, c0:c1]


def _dilate_disk(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation of a 2-D ``mask`` with the disk ``dy**2 + dx**2 <= radius**2``.

    Equal to ``binary_dilation(mask, skimage.morphology.disk(radius))`` for an integer radius:
    row ``dy`` of the disk is a horizontal segment of half-width ``w(dy)``; the horizontal
    dilations are built by widening one pixel at a time and OR-ed in with a vertical shift.
    Shifts beyond the array are clipped (they cannot add anything).
    """
    height, width = mask.shape
    reach = min(int(math.floor(radius)), height - 1)
    offsets = range(-reach, reach + 1)
    half = [int(math.floor(math.sqrt(radius * radius - dy * dy) + 1e-9)) for dy in offsets]
    widths = [min(w, width - 1) for w in half]
    by_width: dict[int, np.ndarray] = {}
    wide = mask.copy()
    for w in range(max(widths) + 1):
        if w:
            wide[:, w:] |= mask[:, :-w]
            wide[:, :-w] |= mask[:, w:]
        if w in widths:
            by_width[w] = wide.copy()
    out = np.zeros_like(mask)
    for dy, w in zip(offsets, widths):
        if dy >= 0:
            out[: height - dy] |= by_width[w][dy:]
        else:
            out[-dy:] |= by_width[w][: height + dy]
    return out


def _boundary_f(p: np.ndarray, g: np.ndarray, tol: float) -> float:
    crop = _crop_to_union(p, g)
    if crop is None:  # both masks empty: both boundaries empty
        return 1.0
    pb, gb = boundary_map(crop[0]), boundary_map(crop[1])
    n_p, n_g = np.count_nonzero(pb), np.count_nonzero(gb)
    if n_p == 0 and n_g == 0:
        precision = recall = 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(pb & _dilate_disk(gb, tol)) / n_p
        recall = np.count_nonzero(gb & _dilate_disk(pb, tol)) / n_g
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    """Boundary F-measure of two ``(H, W)`` binary masks.

    ``bound_th < 1`` is a fraction of the image diagonal (tolerance ``ceil(bound_th * diag)``
    pixels); ``bound_th >= 1`` is the tolerance in pixels.
    """
    p, g = _as_mask_pair(pred, gt)
    return _boundary_f(p, g, _tolerance_px(p.shape, bound_th))


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ObjectScores:
    """Scores of one object over the scored frames of one sequence."""

    sequence: str
    object_id: int
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    j_per_frame: tuple[float, ...]
    f_per_frame: tuple[float, ...]

    @property
    def jf_mean(self) -> float:
        """(J mean + F mean) / 2."""
        return (self.j_mean + self.f_mean) / 2.0


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


@dataclass(frozen=True)
class SequenceScores:
    """Scores of one sequence: one entry per object; ``num_frames`` is T (all frames)."""

    name: str
    objects: tuple[ObjectScores, ...]
    num_frames: int

    @property
    def j_mean(self) -> float:
        """Mean J over the objects (NaN when there are none)."""
        return _mean([o.j_mean for o in self.objects])

    @property
    def f_mean(self) -> float:
        """Mean F over the objects (NaN when there are none)."""
        return _mean([o.f_mean for o in self.objects])

    @property
    def jf_mean(self) -> float:
        """(J mean + F mean) / 2."""
        return (self.j_mean + self.f_mean) / 2.0


@dataclass(frozen=True)
class OverallScores:
    """Statistics averaged over all objects of all sequences (DAVIS-2017 style)."""

    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float
    jf_mean: float
    num_objects: int
    num_sequences: int


def _statistics(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame scores, DAVIS formulas."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.mean(bins[0]) - np.mean(bins[3]))
    return float(np.mean(v)), float(np.mean(v > 0.5)), decay


# ----------------------------------------------------------------------------- sequences


def _check_stack(name: str, stack: Any) -> tuple[int, ...]:
    shape = getattr(stack, "shape", None)
    if shape is None:
        raise ValueError(f"{name} has no .shape: pass a (T, H, W) array or array-like label stack.")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(
            f"{name} must be a (T, H, W) label stack, got ndim {len(shape)} (shape {shape}); "
            "for a single frame pass stack[None], for RGB/one-hot data convert to integer ids."
        )
    dtype = getattr(stack, "dtype", None)
    if dtype is not None:
        _check_dtype(name, np.dtype(dtype))
    return shape


def _check_dtype(name: str, dtype: np.dtype) -> None:
    if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise ValueError(
            f"{name} has dtype {dtype}, but labels must be integer object ids (0 = background); "
            "convert with .astype(np.int32) (threshold probability maps first)."
        )


def _read_frame(name: str, stack: Any, t: int, hw: tuple[int, ...]) -> np.ndarray:
    frame = np.asarray(stack[t])
    _check_dtype(name, frame.dtype)
    if frame.shape != hw:
        raise ValueError(f"{name}[{t}] has shape {frame.shape}, expected {hw} from {name}.shape.")
    return frame


def _object_ids(gt: Any, shape: tuple[int, ...]) -> list[int]:
    ids = np.unique(_read_frame("gt", gt, 0, shape[1:]))
    ids = ids[ids != 0]
    if ids.size == 0:  # no object in the reference frame: use every object of the GT
        seen: set[int] = set()
        for t in range(shape[0]):
            seen.update(int(i) for i in np.unique(_read_frame("gt", gt, t, shape[1:])))
        seen.discard(0)
        return sorted(seen)
    return [int(i) for i in ids]


def evaluate_sequence(
    pred: Any, gt: Any, name: str = "sequence", bound_th: float = 0.008
) -> SequenceScores:
    """Score a ``(T, H, W)`` predicted label stack against a ``(T, H, W)`` GT label stack.

    Objects are the non-zero ids of ``gt[0]`` (or of the whole GT when ``gt[0]`` has none).
    Frames ``1 .. T-2`` are scored (all frames when ``T < 3``); frames are read one at a time.
    """
    p_shape, g_shape = _check_stack("pred", pred), _check_stack("gt", gt)
    if p_shape != g_shape:
        raise ValueError(
            f"pred shape {p_shape} does not match gt shape {g_shape}: both must be (T, H, W) "
            "label stacks of the same sequence, with the same number of frames and frame size."
        )
    num_frames, hw = g_shape[0], g_shape[1:]
    if num_frames == 0:
        raise ValueError("pred and gt have no frames (T = 0): nothing to evaluate.")
    tol = _tolerance_px(hw, bound_th)
    obj_ids = _object_ids(gt, g_shape)
    frames = range(1, num_frames - 1) if num_frames >= 3 else range(num_frames)

    j_scores: dict[int, list[float]] = {k: [] for k in obj_ids}
    f_scores: dict[int, list[float]] = {k: [] for k in obj_ids}
    for t in frames if obj_ids else ():
        p_frame = _read_frame("pred", pred, t, hw)
        g_frame = _read_frame("gt", gt, t, hw)
        for k in obj_ids:
            pm, gm = p_frame == k, g_frame == k
            crop = _crop_to_union(pm, gm)
            if crop is None:  # absent from both: perfect by convention
                j_scores[k].append(1.0)
                f_scores[k].append(1.0)
                continue
            j_scores[k].append(_jaccard(*crop))
            f_scores[k].append(_boundary_f(crop[0], crop[1], tol))

    objects = []
    for k in obj_ids:
        jm, jr, jd = _statistics(j_scores[k])
        fm, fr, fd = _statistics(f_scores[k])
        objects.append(
            ObjectScores(name, k, jm, jr, jd, fm, fr, fd, tuple(j_scores[k]), tuple(f_scores[k]))
        )
    return SequenceScores(name=name, objects=tuple(objects), num_frames=num_frames)


# ----------------------------------------------------------------------------- reports


def summarize(sequences: Sequence[SequenceScores]) -> OverallScores:
    """Mean of every statistic over all objects of all sequences (not over sequences)."""
    objects = [o for s in sequences for o in s.objects]
    means = {stat: _mean([getattr(o, stat) for o in objects]) for stat in _STATS}
    return OverallScores(
        **means,
        jf_mean=(means["j_mean"] + means["f_mean"]) / 2.0,
        num_objects=len(objects),
        num_sequences=len(sequences),
    )


def format_table(sequences: Sequence[SequenceScores]) -> str:
    """Text table: one row per sequence (J, F, J&F, objects) and an ``overall`` row."""
    overall = summarize(sequences)
    rows = [(s.name, s.j_mean, s.f_mean, s.jf_mean, len(s.objects)) for s in sequences]
    rows.append(("overall", overall.j_mean, overall.f_mean, overall.jf_mean, overall.num_objects))
    width = max(len("sequence"), *(len(r[0]) for r in rows))
    lines = [f"{'sequence':<{width}}  {'J':>6}  {'F':>6}  {'J&F':>6}  {'objects':>7}"]
    lines += [f"{n:<{width}}  {j:6.3f}  {f:6.3f}  {jf:6.3f}  {k:7d}" for n, j, f, jf, k in rows]
    lines.insert(-1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_csv(path: str | os.PathLike[str], sequences: Sequence[SequenceScores]) -> None:
    """Write per-object rows, a ``mean`` row per sequence and an ``overall`` row to ``path``.

    Columns: sequence, object_id, j_mean, j_recall, j_decay, f_mean, f_recall, f_decay, jf_mean.
    Values are written at full precision (``repr`` of the float).
    """

    def row(seq: str, obj: str, scores: Any) -> list[str]:
        values = [getattr(scores, stat) for stat in (*_STATS, "jf_mean")]
        return [seq, obj, *(repr(float(v)) for v in values)]

    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sequence", "object_id", *_STATS, "jf_mean"])
        for s in sequences:
            for o in s.objects:
                writer.writerow(row(s.name, str(o.object_id), o))
            writer.writerow(row(s.name, "mean", summarize([s])))
        writer.writerow(row("overall", "", summarize(sequences)))
