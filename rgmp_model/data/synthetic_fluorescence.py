"""Realistic synthetic fluorescence time-lapses of labelled nuclei (e.g. H2B-GFP), with exact labels.

Unlike :func:`rgmp_model.data.synthetic_microscopy.synthetic_microscopy` (bright textured cells on a
high background) this mimics real GFP-nuclei stacks: a near-black background, small nuclei of
very different brightness and a low dynamic range. Image model, in camera counts (ADU), for
frame ``t`` and pixel ``p``::

    expected(p) = [PSF * sum_i b_i g_i(t) tex_i(p)] vignette(p) + a(p)
    frame(p)    = G Poisson(expected(p) / G) + offset + N(0, read^2), rounded, clipped to the dtype

* ``b_i``: mean emission of nucleus ``i``, log-uniform over exactly one decade: the brightest
  nucleus has ``b_max`` (uint8: 70-160 counts; uint16: 250-3000 counts, a low dynamic range),
  the dimmest ``b_max / 10``, k = 3-6 background noise sigmas above the background (less in the
  measured mean, as the soft, blurred edges lower it).
* ``g_i(t)``: slow bleaching (<= 0.6 %/frame), +-3 % smooth fluctuations, brightening in mitosis.
* ``tex_i``: unit-mean emission map: smooth chromatin unevenness and grain, a brighter centre,
  1-4 nucleoli (darker holes, or brighter foci in a quarter of the nuclei); ~1 px soft edge.
  PSF: Gaussian, sigma 0.8-1.5 px. ``vignette``: up to 8 % fall-off towards the corners.
* ``a(p)``: uneven autofluorescence of about one noise sigma; ``offset``: 0-2 % of ``b_max``.
  ``G`` (ADU per photo-electron) and ``read`` are set so that the background's noise sigma is
  ``b_max / (10 k)``, ~60 % of its variance being read noise.

Nuclei: diameters 2-6 % of the reference side (default the shorter frame side; a sequence's
nuclei share a base size, +-20 % each), round-ish star-shaped outlines (up to ~1.3:1) that
wobble slowly, placed without overlap uniformly or in clusters (``clustering``), so fields are
sparse or dense by ``num_cells``. Motion, repulsion and divisions are those of
``synthetic_microscopy`` (:func:`~rgmp_model.data.synthetic_microscopy.step_cells`) with slow drift:
a persistent random walk of ~0.1-0.3 % of the reference side per frame. **Both daughters of a
division keep the parent's id** and ``divisions`` lists ``(frame, id)`` (first frame with the
daughters apart). ``FluorescenceSequence.brightness`` gives every id's measured mean brightness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from rgmp_model.data.synthetic import SyntheticSequence, noise_field, smooth_series
from rgmp_model.data.synthetic_microscopy import TEX_SPAN, Cell, render_cell, step_cells

__all__ = [
    "FluorescenceSequence", "fluorescence_cell_range", "object_brightness", "random_fluorescence",
    "synthetic_fluorescence",
]

DTYPES = ("uint8", "uint16")
TRAINING_FIELD = 480  # px: training frames are crops of a field this large (the default working size)
_AMP_CAP = np.array([0.12, 0.03, 0.02, 0.015])  # outline harmonics k = 2..5: round-ish nuclei
_DIAMETER = (0.021, 0.058)  # nucleus diameters, fractions of the reference side


@dataclass(frozen=True, eq=False)
class FluorescenceSequence(SyntheticSequence):
    """A :class:`SyntheticSequence` plus ``brightness``: id -> mean counts above the background
    inside the id's labels, over all frames (see :func:`object_brightness`)."""

    brightness: Mapping[int, float] = field(default_factory=dict)

    def dimmest(self, fraction: float = 0.1) -> tuple[int, ...]:
        """Ids of the dimmest ``fraction`` of the objects (at least one), dimmest first."""
        return dimmest_ids(self.brightness, fraction)


def dimmest_ids(brightness: Mapping[int, float], fraction: float = 0.1) -> tuple[int, ...]:
    """Ids of the dimmest ``fraction`` of ``brightness``'s objects (at least one), dimmest first."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = sorted(brightness, key=lambda i: (brightness[i], i))
    return tuple(int(i) for i in order[: max(1, int(round(fraction * len(order))))]) if order else ()


def object_brightness(frames: Any, labels: Any) -> dict[int, float]:
    """Mean brightness of every id of ``labels`` (T, H, W) in ``frames`` (T, H, W) grey: the mean
    of its pixels minus the frame's background level (median of the label-0 pixels), over all frames."""
    sums: dict[int, float] = {}
    counts: dict[int, int] = {}
    for t in range(len(labels)):
        lab = np.asarray(labels[t])
        img = np.asarray(frames[t], np.float64)
        if img.shape != lab.shape:
            raise ValueError(f"frame {t} is {img.shape} but its labels are {lab.shape}: give grey (T, H, W) frames")
        bg = img[::2, ::2][lab[::2, ::2] == 0]
        level = float(np.median(bg)) if bg.size else 0.0
        flat = lab.ravel().astype(np.intp)
        s, c = np.bincount(flat, weights=img.ravel()), np.bincount(flat)
        for i in np.flatnonzero(c[1:]) + 1:
            sums[int(i)] = sums.get(int(i), 0.0) + float(s[i]) - level * float(c[i])
            counts[int(i)] = counts.get(int(i), 0) + int(c[i])
    return {i: sums[i] / counts[i] for i in sorted(sums)}


def _nucleus_texture(rng: np.random.Generator, radius: float) -> np.ndarray:
    """(P, P) float32 emission map of one nucleus (mean 1 inside it), covering +-TEX_SPAN radii."""
    size = int(2 * TEX_SPAN * radius * 1.3) + 8
    c = (size - 1) / 2.0
    s = c / TEX_SPAN  # texture pixels per nucleus radius
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) - c) / s
    rho2 = yy * yy + xx * xx
    tex = 1.0 + 0.12 * noise_field(rng, (size, size), max(0.35 * s, 1.0))[..., 0]
    tex += 0.08 * noise_field(rng, (size, size), max(0.08 * s, 0.7))[..., 0]  # chromatin grain
    tex *= 1.12 - 0.25 * np.minimum(rho2, 1.5)  # thicker, brighter centre
    n, bright = int(rng.integers(1, 5)), rng.random() < 0.25
    ang, dist = rng.uniform(0, 2 * np.pi, n), 0.5 * np.sqrt(rng.uniform(0, 1, n))
    spots = np.zeros_like(tex)
    for a, d, r, depth in zip(ang, dist, rng.uniform(0.12, 0.25, n), rng.uniform(0.35, 0.65, n)):
        d2 = (yy - d * np.sin(a)) ** 2 + (xx - d * np.cos(a)) ** 2
        spots = np.maximum(spots, depth * np.exp(-d2 / (2 * r * r)))
    tex = tex + tex * spots if bright else tex * (1.0 - spots)  # nucleoli: holes, or bright foci
    tex /= tex[rho2 <= 1.0].mean()
    return np.clip(tex, 0.05, None).astype(np.float32)


def _place(rng: np.random.Generator, radii: np.ndarray, h: int, w: int, clustering: float) -> np.ndarray:
    """(n, 2) non-overlapping centres; a ``clustering`` fraction of the candidates near cluster centres."""
    n = len(radii)
    centres = rng.uniform((0, 0), (h, w), (1 + n // 12, 2))
    spread = rng.uniform(0.06, 0.15) * min(h, w)
    pos = np.zeros((n, 2))
    for i, r in enumerate(radii):
        lo = np.minimum([r, r], [h / 2, w / 2])
        hi = np.maximum([h - r, w - r], [h / 2, w / 2])
        best, best_gap = None, -np.inf
        for _ in range(4):
            cand = rng.uniform(lo, hi, (48, 2))
            near = rng.random(48) < clustering
            around = centres[rng.integers(len(centres), size=48)] + spread * rng.standard_normal((48, 2))
            cand[near] = np.clip(around[near], lo, hi)
            d = cand[:, None, :] - pos[None, :i, :]  # (48, i, 2)
            gap = (np.sqrt((d * d).sum(-1)) - (r + radii[:i])).min(1) if i else np.zeros(48)
            k = int(np.argmax(gap >= 0)) if (gap >= 0).any() else int(np.argmax(gap))
            if gap[k] > best_gap:
                best, best_gap = cand[k], gap[k]
            if best_gap >= 0:
                break
        pos[i] = best  # when the field is too full, the least overlapping candidate
    return pos


def synthetic_fluorescence(num_frames: int = 24, height: int = 256, width: int = 256, num_cells: int = 20,
                           seed: int = 0, dtype: str = "uint8", clustering: float | None = None,
                           division_rate: float = 0.003, reference_side: int | None = None) -> FluorescenceSequence:
    """GFP-nuclei-like time-lapse: frames (T, H, W) ``dtype`` counts, labels (T, H, W) uint16 with ids
    1..num_cells (0 = background), ``divisions`` and per-id ``brightness`` (see the module docstring).

    ``dtype``: "uint8" or "uint16" (low dynamic range: brightest nuclei 250-3000 counts).
    ``clustering``: fraction of nuclei placed in clusters, 0-1 (default: random in 0-0.8).
    ``division_rate``: probability per nucleus and frame to start a 4-6 frame division.
    ``reference_side``: the side (px) that nucleus sizes (2-6 %) and drift are relative to, default
    the shorter frame side; a larger value makes the frame a crop of a larger field.
    """
    t_n, h, w, n = int(num_frames), int(height), int(width), int(num_cells)
    if t_n < 1 or min(h, w) < 16 or n < 1:
        raise ValueError(f"need num_frames >= 1, height and width >= 16 and num_cells >= 1; got {t_n}, {h}x{w}, {n}")
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    if clustering is not None and not 0 <= clustering <= 1:
        raise ValueError(f"clustering must be between 0 and 1 (or None for random), got {clustering}")
    if not 0 <= division_rate <= 1:
        raise ValueError(f"division_rate is a probability per nucleus and frame, 0-1; got {division_rate}")
    side = float(reference_side if reference_side is not None else min(h, w))
    if side < 16:
        raise ValueError(f"reference_side must be >= 16 px, got {reference_side}")
    fit = int(0.55 * h * w / (np.pi * (_DIAMETER[0] * side / 2) ** 2))
    if n > fit:
        raise ValueError(f"{n} nuclei of >= {_DIAMETER[0]:.0%} of {side:.0f} px do not fit in {h}x{w}: "
                         f"use at most {fit} nuclei or a larger frame")
    rng = np.random.default_rng(seed)
    # nuclei: a base diameter for the sequence (smaller when the field is dense), +-20 % each
    cover = 2.0 * np.sqrt(0.3 * h * w / (n * np.pi))  # keeps the coverage <= 30 %
    base = max(min(rng.uniform(0.025, 0.05) * side, cover), 0.022 * side)
    radii = np.maximum(np.clip(base * np.exp(rng.uniform(-0.2, 0.2, n)), *(np.array(_DIAMETER) * side)) / 2, 2.0)
    clustering = rng.uniform(0.0, 0.8) if clustering is None else float(clustering)
    pos = _place(rng, radii, h, w, clustering)
    u = rng.uniform(0, 1, n)
    u = (u - u.min()) / (u.max() - u.min()) if n > 1 else np.ones(1)  # exactly one decade, log-uniform
    b_max = rng.uniform(70, 160) if dtype == "uint8" else float(np.exp(rng.uniform(np.log(250), np.log(3000))))
    brightness = b_max * 10.0 ** (u - 1.0)
    unit = rng.uniform(0.5, 1.2) * side / 512  # drift: ~0.7 unit px per frame
    cells = []
    for i in range(n):
        cap = _AMP_CAP * rng.uniform(0.3, 1.0)
        cells.append(Cell(oid=i + 1, pos=pos[i], vel=0.5 * unit * rng.standard_normal(2), radius=radii[i],
                          target=radii[i], angle=rng.uniform(0, 2 * np.pi), omega=rng.uniform(-0.01, 0.01),
                          amps=rng.uniform(0, cap), phases=rng.uniform(0, 2 * np.pi, 4),
                          tex=_nucleus_texture(rng, radii[i]), brightness=brightness[i]))
    # camera and optics
    sigma_bg = b_max / 10.0 / rng.uniform(3.0, 6.0)
    read = sigma_bg * rng.uniform(0.7, 0.85)
    auto = sigma_bg * rng.uniform(0.7, 1.3)
    gain = (sigma_bg**2 - read**2) / auto  # ADU per photo-electron: shot variance of the background = gain * auto
    offset = rng.uniform(0, 0.02) * b_max
    psf = rng.uniform(0.8, 1.5)
    background = (auto * (1.0 + 0.3 * np.tanh(noise_field(rng, (h, w), side / 3)[..., 0]))).astype(np.float32)
    yy, xx = np.ogrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    vignette = (1 - rng.uniform(0, 0.08) * ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.25 * (h * h + w * w)))
    vignette = vignette.astype(np.float32)
    bleach = np.exp(-rng.uniform(0, 0.006) * np.arange(t_n))
    flicker = np.exp(0.03 * smooth_series(rng, t_n, 6, (n,)))
    frames = np.empty((t_n, h, w), np.dtype(dtype))
    labels = np.zeros((t_n, h, w), np.uint16)
    top = float(np.iinfo(frames.dtype).max)
    divisions: list[tuple[int, int]] = []
    for t in range(t_n):
        if t > 0:
            cells = step_cells(rng, cells, t, t_n, h, w, unit, division_rate, 2 * n, divisions)
            for c in cells:
                c.amps = np.minimum(c.amps, _AMP_CAP)
        signal = np.zeros((h, w), np.float32)
        best = np.zeros((h, w), np.float32)
        for c in cells:
            mitosis = 1.0 + 0.35 * np.sin(np.pi * c.div_step / c.div_len) if c.div_step >= 0 else 1.0
            render_cell(signal, best, labels[t], c, mitosis * bleach[t] * flicker[t, c.oid - 1])
        expected = ndi.gaussian_filter(signal, psf) * vignette + background
        counts = rng.poisson(expected / gain).astype(np.float32) * np.float32(gain)
        counts += rng.standard_normal((h, w), dtype=np.float32) * np.float32(read) + np.float32(offset + 0.5)
        frames[t] = np.clip(counts, 0, top)  # +0.5 then truncation: rounding
    return FluorescenceSequence(f"synthetic_fluorescence_{seed}", frames, labels, tuple(divisions),
                                object_brightness(frames, labels))


def fluorescence_cell_range(height: int, width: int) -> tuple[int, int]:
    """Default (fewest, most) nuclei of a training frame (height, width): 5 (sparse) to 150 (dense)
    per field of side max(shorter side, TRAINING_FIELD) px, scaled by the frame's area."""
    side = max(min(int(height), int(width)), TRAINING_FIELD)
    area = int(height) * int(width) / side**2
    return max(1, round(5 * area)), max(2, round(150 * area))


def random_fluorescence(rng: np.random.Generator, num_frames: int, height: int, width: int,
                        num_cells: tuple[int, int] | None = None) -> FluorescenceSequence:
    """A training sequence with random settings drawn from ``rng``: a nucleus count log-uniform in
    ``num_cells`` (default :func:`fluorescence_cell_range`), uint8 or uint16 (even odds), nuclei sized
    as in a field of side max(shorter side, TRAINING_FIELD) px (as the model sees them)."""
    lo, hi = num_cells if num_cells is not None else fluorescence_cell_range(height, width)
    if not 1 <= lo <= hi:
        raise ValueError(f"num_cells must be (lo, hi) with 1 <= lo <= hi, got {num_cells}")
    n = int(np.clip(np.exp(rng.uniform(np.log(lo), np.log(hi + 1))), lo, hi))
    dtype = DTYPES[int(rng.integers(2))]
    seed = int(rng.integers(2**31))
    side = max(min(int(height), int(width)), TRAINING_FIELD)
    return synthetic_fluorescence(num_frames, height, width, n, seed=seed, dtype=dtype, reference_side=side)
