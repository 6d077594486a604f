"""Synthetic fluorescence time-lapse stacks with exact cell labels (see :mod:`rgmp_model.data.synthetic`).

Image model, per frame: expected counts = constant uneven background (~100-300 counts)
+ PSF-blurred cell emission (bright irregular cells of ~1000-4000 counts with a brighter
nucleus-like region, granules and fine texture) x a slowly varying illumination (vignetting,
drift, mild bleaching); the frame is Poisson(expected counts) + Gaussian read noise, as uint16.

Cells are star-shaped blobs whose outline wobbles; they drift as persistent random walks, push
each other apart (they may touch but hardly overlap) and stay inside the frame. A dividing
cell rounds up, brightens, elongates and pinches (two merging "metaball" halves moving apart)
into two daughters that move apart. **Id convention: both daughters keep the parent's id** (an
id is a lineage, as for a user propagating frame-0 labels); ``SyntheticSequence.divisions``
lists ``(frame, id)`` with ``frame`` the first frame in which the two daughters are separate.

:class:`Cell`, :func:`render_cell`, :func:`step_cells` and ``TEX_SPAN`` are shared with
:mod:`rgmp_model.data.synthetic_fluorescence` (same cell dynamics, other textures and image model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from rgmp_model.data.synthetic import SyntheticSequence, bilinear, blob_lut, lut_radius, noise_field, smooth_series

__all__ = ["synthetic_microscopy"]

_ALPHA = 4.0  # metaball sharpness: a blob's field is exp(-ALPHA (q^2 - 1)), q = r / boundary radius
_G0 = 1.0 / np.sqrt(1.0 + np.log(2.0) / _ALPHA)  # two coincident halves of this size = the whole cell
_GD = 0.8  # daughter radius / parent radius at the split
_SPLIT = 1.35  # half-distance between the daughters at the split, in daughter radii (>1.08: separate)
_K = 4  # outline harmonics (k = 2..5)
TEX_SPAN = 1.4  # the texture covers +-1.4 cell radii


@dataclass
class Cell:
    """State of one cell (or nucleus): ``tex`` is its emission map covering +-TEX_SPAN radii."""

    oid: int
    pos: np.ndarray  # (y, x)
    vel: np.ndarray
    radius: float
    target: float
    angle: float
    omega: float
    amps: np.ndarray
    phases: np.ndarray
    tex: np.ndarray
    brightness: float
    wobble: float = 1.0
    div_step: int = -1  # -1: not dividing, else frames since the division started
    div_len: int = 0
    axis: float = 0.0
    refractory: int = 0

    def blobs(self) -> list[tuple[np.ndarray, float]]:
        """The metaball halves (centre, radius): one for a resting cell, two while dividing."""
        if self.div_step < 0:
            return [(self.pos, self.radius)]
        p = self.div_step / self.div_len
        rs = self.radius * (_G0 + (_GD - _G0) * p)
        off = _SPLIT * rs * p**1.5 * np.array([np.sin(self.axis), np.cos(self.axis)])
        return [(self.pos + off, rs), (self.pos - off, rs)]

    def extent(self) -> float:
        """Radius of a disc around ``pos`` holding the cell (for repulsion)."""
        blobs = self.blobs()
        return float(np.hypot(*(blobs[0][0] - self.pos)) + blobs[0][1])


def _cell_texture(rng: np.random.Generator, radius: float) -> np.ndarray:
    """(P, P) float32 relative emission map of one cell, ~0.6 cytoplasm up to ~1.6 in the nucleus."""
    size = int(2 * TEX_SPAN * radius * 1.3) + 8
    c = (size - 1) / 2.0
    s = c / TEX_SPAN  # texture pixels per cell radius
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) - c) / s
    tex = 0.6 + 0.1 * noise_field(rng, (size, size), max(0.25 * s, 1.0))[..., 0]
    tex += 0.05 * noise_field(rng, (size, size), max(0.07 * s, 0.7))[..., 0]
    ny, nx = rng.uniform(-0.25, 0.25, 2)
    nr, ne, na = rng.uniform(0.4, 0.6), rng.uniform(0.75, 1.3), rng.uniform(0, np.pi)
    du = (xx - nx) * np.cos(na) + (yy - ny) * np.sin(na)
    dv = -(xx - nx) * np.sin(na) + (yy - ny) * np.cos(na)
    dn = np.hypot(du / ne, dv * ne) / nr
    nucleus = 1.0 / (1.0 + np.exp(np.clip((dn - 1.0) * nr * s / 0.8, -30, 30)))
    chromatin = 1.0 + 0.25 * noise_field(rng, (size, size), max(0.06 * s, 0.7))[..., 0]
    gain = rng.uniform(0.5, 1.0) if rng.random() < 0.75 else -rng.uniform(0.15, 0.3)  # bright or dim nucleus
    tex += gain * nucleus * chromatin
    spots = np.zeros((size, size), np.float32)
    n_gran = int(rng.integers(4, 16))
    ang, rad = rng.uniform(0, 2 * np.pi, n_gran), np.sqrt(rng.uniform(0, 0.8, n_gran))
    gy = np.clip((c + s * rad * np.sin(ang)).astype(int), 0, size - 1)
    gx = np.clip((c + s * rad * np.cos(ang)).astype(int), 0, size - 1)
    sg = max(0.06 * s, 0.7)
    np.add.at(spots, (gy, gx), rng.uniform(0.3, 0.8, n_gran) * 2 * np.pi * sg**2)
    tex += ndi.gaussian_filter(spots, sg)
    return np.clip(tex, 0.2, None).astype(np.float32)


def _new_cell(rng: np.random.Generator, oid: int, pos: np.ndarray, radius: float) -> Cell:
    k = np.arange(1, _K + 1)
    return Cell(oid=oid, pos=pos, vel=np.zeros(2), radius=radius, target=radius,
                 angle=rng.uniform(0, 2 * np.pi), omega=rng.uniform(-0.05, 0.05),
                 amps=rng.uniform(0.0, 0.12, _K) / k**0.7, phases=rng.uniform(0, 2 * np.pi, _K),
                 tex=_cell_texture(rng, radius), brightness=rng.uniform(1000.0, 2500.0))


def _place_cells(rng: np.random.Generator, n: int, h: int, w: int, base_r: float) -> list[Cell]:
    """Random non-overlapping initial cells; about a third are placed touching another one."""
    cells: list[Cell] = []
    for i in range(n):
        r = base_r * rng.uniform(0.8, 1.15)
        pos = np.array([h / 2, w / 2])
        for _ in range(200):
            if cells and rng.random() < 0.35:
                other = cells[int(rng.integers(len(cells)))]
                a = rng.uniform(0, 2 * np.pi)
                pos = other.pos + (r + other.radius) * 0.98 * np.array([np.sin(a), np.cos(a)])
            else:
                pos = rng.uniform([r, r], [h - r, w - r])
            inside = r <= pos[0] <= h - r and r <= pos[1] <= w - r
            if inside and all(np.hypot(*(pos - o.pos)) >= 0.95 * (r + o.radius) for o in cells):
                break
        cells.append(_new_cell(rng, i + 1, pos, r))
    return cells


def render_cell(signal: np.ndarray, best: np.ndarray, lab: np.ndarray, cell: Cell, gain: float) -> None:
    """Add the cell's emission to ``signal`` and claim the pixels where its field wins in ``lab``."""
    h, w = lab.shape
    blobs = cell.blobs()
    lut = blob_lut(cell.amps * cell.wobble, cell.phases)
    ext = max(r for _, r in blobs) * lut.max() * 1.15 + 3
    cy = [c[0] for c, _ in blobs]
    cx = [c[1] for c, _ in blobs]
    y0, y1 = max(int(min(cy) - ext), 0), min(int(max(cy) + ext) + 2, h)
    x0, x1 = max(int(min(cx) - ext), 0), min(int(max(cx) + ext) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ca, sa = np.float32(np.cos(cell.angle)), np.float32(np.sin(cell.angle))
    tc = (cell.tex.shape[0] - 1) / 2.0
    ts = tc / TEX_SPAN
    total = fmax = value = None
    for centre, r in blobs:
        dy, dx = ys - np.float32(centre[0]), xs - np.float32(centre[1])
        u, v = ca * dx + sa * dy, -sa * dx + ca * dy
        rb = lut_radius(lut, np.arctan2(v, u)).astype(np.float32) * np.float32(r)
        q2 = np.minimum((u * u + v * v) / (rb * rb), 20.0)
        f = np.exp(-_ALPHA * (q2 - 1.0))
        val = bilinear(cell.tex, (v * (ts / r) + tc).ravel(), (u * (ts / r) + tc).ravel()).reshape(f.shape)
        if total is None:
            total, fmax, value = f, f, val
        else:
            value = np.where(f > fmax, val, value)
            fmax = np.maximum(f, fmax)
            total = total + f
    log_f = np.log(total)
    r_min = min(r for _, r in blobs)
    mask = np.clip(0.5 + log_f * (r_min / (2 * _ALPHA * 1.2)), 0, 1)  # ~1.2 px soft edge
    signal[y0:y1, x0:x1] += np.float32(cell.brightness * gain) * value * mask
    claim = log_f > best[y0:y1, x0:x1]
    best[y0:y1, x0:x1][claim] = log_f[claim]
    lab[y0:y1, x0:x1][claim] = cell.oid


def step_cells(rng: np.random.Generator, cells: list[Cell], t_next: int, t_n: int, h: int, w: int, unit: float,
               division_rate: float, max_cells: int, divisions: list[tuple[int, int]]) -> list[Cell]:
    """Advance all cells to frame ``t_next``: motion, wobble, growth, divisions, repulsion, bounds."""
    out: list[Cell] = []
    for c in cells:
        c.vel = 0.8 * c.vel + 0.35 * unit * rng.standard_normal(2)
        c.pos = c.pos + c.vel
        c.angle += c.omega + 0.02 * rng.standard_normal()
        c.amps = np.clip(c.amps + 0.012 * rng.standard_normal(_K), 0.0, 0.15)
        c.phases = c.phases + 0.12 * rng.standard_normal(_K)
        c.radius += 0.08 * (c.target - c.radius)
        c.refractory = max(c.refractory - 1, 0)
        if c.div_step >= 0:
            c.div_step += 1
            c.wobble = 0.0
            if c.div_step == c.div_len:  # split: two daughters with the parent's id
                rs = c.radius * _GD
                e = np.array([np.sin(c.axis), np.cos(c.axis)])
                for sign in (1.0, -1.0):
                    out.append(Cell(oid=c.oid, pos=c.pos + sign * _SPLIT * rs * e, vel=c.vel + sign * 0.6 * unit * e,
                                     radius=rs, target=c.target, angle=c.angle + (sign < 0) * np.pi, omega=c.omega,
                                     amps=c.amps * 0.5, phases=c.phases.copy(), tex=c.tex, brightness=c.brightness,
                                     wobble=0.0, refractory=10))
                divisions.append((t_next, c.oid))
                continue
        else:
            c.wobble = min(c.wobble + 0.15, 1.0)
            length = int(rng.integers(4, 7))
            fits = 2 * c.radius <= c.pos[0] <= h - 2 * c.radius and 2 * c.radius <= c.pos[1] <= w - 2 * c.radius
            if (rng.random() < division_rate and c.refractory == 0 and fits and t_next + length < t_n
                    and len(cells) < max_cells):
                c.div_step, c.div_len, c.axis = 0, length, rng.uniform(0, np.pi)
        out.append(c)
    # repulsion: cells may touch but hardly overlap (a few Jacobi iterations)
    if len(out) > 1:
        ext = np.array([c.extent() for c in out])
        pos = np.stack([c.pos for c in out])
        for _ in range(4):
            diff = pos[:, None] - pos[None]
            dist = np.maximum(np.hypot(diff[..., 0], diff[..., 1]), 1e-6)
            overlap = np.clip(0.95 * (ext[:, None] + ext[None]) - dist, 0, None)
            np.fill_diagonal(overlap, 0.0)
            pos = pos + 0.5 * ((overlap / dist)[..., None] * diff).sum(1)
        for c, p in zip(out, pos):
            c.pos = p
    for c in out:  # reflecting bounds; dividing cells keep room for both daughters
        m = (2.0 if c.div_step >= 0 else 0.7) * c.radius
        lo, hi = np.array([m, m]), np.array([h - m, w - m])
        hit = (c.pos < lo) | (c.pos > hi)
        c.pos = np.clip(c.pos, np.minimum(lo, hi), np.maximum(lo, hi))
        c.vel = np.where(hit, -c.vel, c.vel)
    return out


def synthetic_microscopy(num_frames: int = 24, height: int = 128, width: int = 128, num_cells: int = 6,
                         seed: int = 0, division_rate: float = 0.05) -> SyntheticSequence:
    """Fluorescence-like time-lapse: frames (T, H, W) uint16 counts, labels (T, H, W) uint16.

    ``num_cells`` cells with ids 1..num_cells. ``division_rate`` is the probability per cell
    and frame that a (non-refractory) cell starts dividing; a division takes 4-6 frames and
    both daughters keep the parent's id (``divisions`` lists (frame, id), frame = first frame
    with the daughters apart). The background is constant in time (only cell emission is
    modulated by the illumination), so its pixel statistics are Poisson + read noise.
    """
    rng = np.random.default_rng(seed)
    t_n, h, w, n = int(num_frames), int(height), int(width), int(num_cells)
    unit = min(h, w) / 128.0
    base_r = float(np.clip(np.sqrt(0.14 * h * w / (max(n, 1) * np.pi)), 3.0, min(h, w) / 5))
    cells = _place_cells(rng, n, h, w, base_r)
    bg = np.float32(rng.uniform(90, 140)) + np.float32(rng.uniform(60, 150)) * (
        0.5 + 0.5 * np.tanh(noise_field(rng, (h, w), min(h, w) / 4)[..., 0]))
    yy, xx = np.ogrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.25 * (h * h + w * w))
    vignette = (1 - rng.uniform(0.1, 0.3) * r2).astype(np.float32)
    illum = np.exp(0.05 * smooth_series(rng, t_n, 8) - rng.uniform(0, 0.008) * np.arange(t_n))
    psf, read = rng.uniform(0.9, 1.4), rng.uniform(2.0, 5.0)
    frames = np.empty((t_n, h, w), np.uint16)
    labels = np.zeros((t_n, h, w), np.uint16)
    divisions: list[tuple[int, int]] = []
    for t in range(t_n):
        if t > 0:
            cells = step_cells(rng, cells, t, t_n, h, w, unit, division_rate, 4 * max(n, 1), divisions)
        signal = np.zeros((h, w), np.float32)
        best = np.zeros((h, w), np.float32)
        for c in cells:
            mitosis = 1.0 + 0.35 * np.sin(np.pi * c.div_step / c.div_len) if c.div_step >= 0 else 1.0
            render_cell(signal, best, labels[t], c, mitosis)
        expected = ndi.gaussian_filter(signal, psf) * (vignette * np.float32(illum[t])) + bg
        counts = rng.poisson(expected).astype(np.float32)
        counts += rng.standard_normal((h, w), dtype=np.float32) * np.float32(read) + np.float32(0.5)
        frames[t] = np.clip(counts, 0, 65535)  # +0.5 then truncation: rounding
    return SyntheticSequence(f"synthetic_cells_{seed}", frames, labels, tuple(divisions))
