"""Synthetic image sequences with exact ground-truth labels.

Two flavours, both deterministic for a given ``seed`` and built with numpy / scipy only:

* :func:`synthetic_video` -- natural-video-like RGB clips: textured objects (smooth blobs or
  rounded polygons, each with its own colour texture attached to the object) moving, rotating,
  scaling and deforming over a slowly panning textured background, with occlusions, mild
  illumination changes and pixel noise.
* :func:`rgmp_model.data.synthetic_microscopy.synthetic_microscopy` -- fluorescence
  time-lapse-like uint16 stacks with drifting, wobbling, dividing cells.

Both return a :class:`SyntheticSequence`; :mod:`rgmp_model.data.synthetic_io` writes one to disk.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SyntheticSequence", "synthetic_video"]

_TWO_PI = 2.0 * np.pi
_NPHI = 256  # resolution of the polar radius look-up tables
_LUT_PHI = np.linspace(0.0, _TWO_PI, _NPHI, endpoint=False)


@dataclass(frozen=True, eq=False)
class SyntheticSequence:
    """A generated sequence with exact labels.

    ``frames``: (T, H, W, 3) uint8 RGB or (T, H, W) uint16 grey; ``labels``: (T, H, W) uint16,
    0 = background. ``divisions``: (frame, id) events, ``frame`` being the first frame in which
    the two daughters of cell ``id`` are separate (both keep the parent's id).
    """

    name: str
    frames: np.ndarray
    labels: np.ndarray
    divisions: tuple[tuple[int, int], ...] = ()

    @property
    def num_objects(self) -> int:
        """Number of distinct non-zero ids in ``labels``."""
        return int(np.count_nonzero(np.unique(self.labels)))


# --------------------------------------------------------------------------- shared helpers


def smooth_series(rng: np.random.Generator, n: int, sigma: float, size: tuple[int, ...] = ()) -> np.ndarray:
    """(n, *size) smooth random series: Gaussian-filtered white noise, zero mean, ~unit std."""
    sigma = max(float(sigma), 1.0)
    pad = int(3 * sigma) + 1
    white = rng.standard_normal((n + 2 * pad, *size))
    out = ndi.gaussian_filter1d(white, sigma, axis=0, mode="reflect")[pad : pad + n]
    return out * np.sqrt(2.0 * np.sqrt(np.pi) * sigma)


def noise_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, channels: int = 1) -> np.ndarray:
    """(h, w, channels) float32 smooth Gaussian noise, correlation length ~``sigma`` px, unit std.

    Large scales are generated at low resolution and upsampled (bilinear), so this is cheap.
    """
    h, w = shape
    f = max(1, int(sigma // 3))
    low = rng.standard_normal((h // f + 3, w // f + 3, channels)).astype(np.float32)
    low = ndi.gaussian_filter(low, (sigma / f, sigma / f, 0), mode="wrap")
    if f > 1:
        low = ndi.zoom(low, (f, f, 1), order=1)
    out = low[:h, :w]
    out = out - out.mean(axis=(0, 1))
    return out / np.maximum(out.std(axis=(0, 1)), 1e-6)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 (3,) from hue (wraps), saturation, value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1))), np.float32)


def bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``image`` (h, w) or (h, w, c) at float ``rows``/``cols`` (n,), clamped at the edges.

    Returns (n,) or (n, c).
    """
    h, w = image.shape[:2]
    rows = np.clip(rows, 0, h - 1.001)
    cols = np.clip(cols, 0, w - 1.001)
    r0 = rows.astype(np.intp)
    c0 = cols.astype(np.intp)
    fr = (rows - r0).astype(np.float32)
    fc = (cols - c0).astype(np.float32)
    if image.ndim == 3:
        fr, fc = fr[:, None], fc[:, None]
    top = image[r0, c0] * (1 - fc) + image[r0, c0 + 1] * fc
    bot = image[r0 + 1, c0] * (1 - fc) + image[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bot * fr


def blob_lut(amps: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """(_NPHI,) relative radius r(phi) = 1 + sum_k a_k cos(k phi + p_k), k = 2, 3, ...; >= 0.35."""
    k = np.arange(2, 2 + len(amps))[:, None]
    r = 1.0 + (amps[:, None] * np.cos(k * _LUT_PHI[None] + phases[:, None])).sum(0)
    return np.maximum(r, 0.35)


def polygon_lut(angles: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(_NPHI,) exact polar radius of the star-shaped polygon with vertices (angle, radius)."""
    order = np.argsort(np.mod(angles, _TWO_PI))
    a = np.mod(angles, _TWO_PI)[order]
    r = radii[order]
    a_ext = np.concatenate([[a[-1] - _TWO_PI], a, [a[0] + _TWO_PI]])
    r_ext = np.concatenate([[r[-1]], r, [r[0]]])
    i = np.clip(np.searchsorted(a_ext, _LUT_PHI, side="right") - 1, 0, len(a))
    a0, a1, r0, r1 = a_ext[i], a_ext[i + 1], r_ext[i], r_ext[i + 1]
    den = r0 * np.sin(_LUT_PHI - a0) + r1 * np.sin(a1 - _LUT_PHI)
    return r0 * r1 * np.sin(a1 - a0) / np.maximum(den, 1e-6)


def lut_radius(lut: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Evaluate a radius look-up table at angles ``phi`` (any shape, radians)."""
    return np.interp(phi, _LUT_PHI, lut, period=_TWO_PI)


# --------------------------------------------------------------------------- natural video


def _texture(rng: np.random.Generator, size: int, radius: float, hue: float) -> np.ndarray:
    """(size, size, 3) float32 colour texture in object coordinates (1 unit = 1 px at scale 1)."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - c
    n1 = noise_field(rng, (size, size), max(radius / 4, 1.5))[..., 0]
    n2 = noise_field(rng, (size, size), max(radius / 10, 1.0))[..., 0]
    grain = noise_field(rng, (size, size), 0.8)[..., 0]
    hue2 = hue + rng.choice([-1, 1]) * rng.uniform(0.06, 0.5)
    c0 = hsv(hue, rng.uniform(0.45, 1.0), rng.uniform(0.35, 0.95))
    c1 = hsv(hue2, rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0))
    c2 = hsv(hue + rng.uniform(-0.1, 0.1), rng.uniform(0.0, 0.6), rng.uniform(0.7, 1.0))
    kind = rng.integers(4)
    beta = rng.uniform(0, np.pi)
    xr = xx * np.cos(beta) + yy * np.sin(beta)
    yr = -xx * np.sin(beta) + yy * np.cos(beta)
    if kind == 0:  # mottled
        t = 0.5 + 0.5 * np.tanh(1.5 * n1)
    elif kind == 1:  # stripes, warped by noise
        period = radius * rng.uniform(0.3, 0.7)
        t = 0.5 + 0.5 * np.tanh(2.5 * np.sin(_TWO_PI * xr / period + 1.2 * n1))
    elif kind == 2:  # checker, warped by noise
        p = radius * rng.uniform(0.25, 0.5)
        t = 0.5 + 0.5 * np.tanh(3.0 * np.sin(np.pi * xr / p + 0.5 * n1) * np.sin(np.pi * yr / p + 0.5 * n1))
    else:  # spots
        t = np.clip((n2 + 0.5 * n1 - 0.5) * 2.5, 0, 1)
    t = t[..., None]
    col = c0 * (1 - t) + c1 * t
    w2 = np.clip(n2 - 1.0, 0, 1)[..., None] * 0.7  # sparse highlights of a third colour
    col = col * (1 - w2) + c2 * w2
    col *= (1.0 + 0.12 * n1 + 0.06 * grain)[..., None]
    return np.clip(col, 0, 1).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int, hue: float) -> np.ndarray:
    """(h, w, 3) float32 multi-scale colour noise with a few soft static distractor patches."""
    s = float(min(h, w))
    cols = [hsv(hue + rng.uniform(-0.12, 0.12), rng.uniform(0.15, 0.7), rng.uniform(0.2, 0.85)) for _ in range(3)]
    t1 = 0.5 + 0.5 * np.tanh(1.3 * noise_field(rng, (h, w), s / 6))
    t2 = 0.5 + 0.5 * np.tanh(1.3 * noise_field(rng, (h, w), s / 18))
    lum = (1.0 + 0.16 * noise_field(rng, (h, w), s / 45)[..., 0] + 0.08 * noise_field(rng, (h, w), s / 120)[..., 0]
           + 0.04 * noise_field(rng, (h, w), 1.0)[..., 0])
    img = (cols[0] * (1 - t1) + cols[1] * t1) * (1 - 0.6 * t2) + cols[2] * (0.6 * t2)
    img *= lum[..., None]
    yy, xx = np.ogrid[0:h, 0:w]
    for _ in range(int(rng.integers(2, 6))):  # soft, unlabelled blobs: distractors
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.04, 0.12) * s
        m = np.clip(1.5 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r, 0, 1)[..., None]
        img = img * (1 - 0.6 * m) + hsv(rng.uniform(), rng.uniform(0.1, 0.6), rng.uniform(0.2, 0.9)) * (0.6 * m)
    return np.clip(img, 0, 1).astype(np.float32)


def _shift_crop(canvas: np.ndarray, oy: float, ox: float, h: int, w: int) -> np.ndarray:
    """(h, w, c) bilinear crop of ``canvas`` at sub-pixel offset (oy, ox)."""
    iy, ix = int(oy), int(ox)
    fy, fx = np.float32(oy - iy), np.float32(ox - ix)
    a = canvas[iy : iy + h, ix : ix + w]
    b = canvas[iy : iy + h, ix + 1 : ix + 1 + w]
    c = canvas[iy + 1 : iy + 1 + h, ix : ix + w]
    d = canvas[iy + 1 : iy + 1 + h, ix + 1 : ix + 1 + w]
    return (1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d)


def _shape_luts(rng: np.random.Generator, t: int) -> np.ndarray:
    """(t, _NPHI) smoothly deforming radius tables of a random blob or rounded polygon, area ~ pi."""
    if rng.random() < 0.55:
        k = 4
        amps0 = rng.uniform(0.0, 0.22, k) / np.arange(1, k + 1) ** 0.6
        amps = np.clip(amps0 * (1 + 0.5 * smooth_series(rng, t, 5, (k,))), 0, None)
        phases = rng.uniform(0, _TWO_PI, k) + 0.2 * smooth_series(rng, t, 6, (k,))
        luts = np.stack([blob_lut(amps[i], phases[i]) for i in range(t)])
    else:
        n = int(rng.integers(3, 8))
        # vertex gaps stay well below pi, so the polygon is star-shaped around its centre
        ang0 = (np.arange(n) + rng.uniform(-0.2, 0.2, n) * (0.5 if n == 3 else 1.0)) * _TWO_PI / n
        rad0 = rng.uniform(0.7, 1.0, n)
        ang = ang0 + 0.04 * np.clip(smooth_series(rng, t, 6, (n,)), -2, 2)
        rad = rad0 * np.exp(0.08 * smooth_series(rng, t, 5, (n,)))
        luts = np.stack([polygon_lut(ang[i], rad[i]) for i in range(t)])
        luts = ndi.gaussian_filter1d(luts, 1.5, axis=1, mode="wrap")  # slightly rounded corners
    return np.maximum(luts / np.sqrt((luts**2).mean(axis=1, keepdims=True)), 0.2)


def _trajectories(rng: np.random.Generator, t: int, h: int, w: int, radii: np.ndarray, unit: float) -> np.ndarray:
    """(t, n, 2) smooth (y, x) centre paths: persistent velocity with smooth acceleration,
    reflected so that centres stay within 0.3 radius of the frame."""
    n = len(radii)
    pos = np.zeros((t, n, 2))
    acc = 0.3 * unit * smooth_series(rng, t, 3, (n, 2))
    for i in range(n):
        lo = np.array([-0.3 * radii[i]] * 2)
        hi = np.array([h + 0.3 * radii[i], w + 0.3 * radii[i]])
        p = rng.uniform(radii[i], [h - radii[i], w - radii[i]])
        a = rng.uniform(0, _TWO_PI)
        vmax = unit * rng.uniform(1.0, 3.0)
        v = unit * rng.uniform(0.5, 2.2) * np.array([np.sin(a), np.cos(a)])
        for k in range(t):
            pos[k, i] = p
            v = v + acc[k, i]
            sp = np.hypot(*v)
            if sp > vmax:
                v *= vmax / sp
            p = p + v
            below, above = p < lo, p > hi
            p = np.where(below, 2 * lo - p, np.where(above, 2 * hi - p, p))
            v = np.where(below | above, -v, v)
    return pos


def _fold(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reflect coordinates into [lo, hi] (a path bouncing off the walls)."""
    span = np.maximum(hi - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _force_crossing(rng: np.random.Generator, pos: np.ndarray, a: int, b: int, radii: np.ndarray, h: int, w: int,
                    unit: float) -> None:
    """Make object ``b`` pass behind object ``a`` in the middle of the frame mid-sequence (in place):
    ``a``'s path is moved to go through a central meeting point, ``b`` follows it with a linear
    relative motion (separate at both ends) plus its own wiggle; both then bounce off the walls."""
    t = pos.shape[0]
    tm = int(round(rng.uniform(0.4, 0.6) * (t - 1)))
    meet = rng.uniform(0.35, 0.65, 2) * np.array([h, w])
    lo, hi = np.zeros(2), np.array([h, w], float)
    path_a = pos[:, a] - pos[tm, a] + meet
    half = max(min(tm, t - 1 - tm), 1.0)
    speed = min(1.15 * (radii[a] + radii[b]) / half, 6.0 * unit)
    d_perp = rng.uniform(0.0, 0.3) * min(radii[a], radii[b])
    own = np.cumsum(0.3 * unit * smooth_series(rng, t, 4, (2,)), axis=0)
    own -= own[tm]
    tt = (np.arange(t) - tm)[:, None]
    inner_lo, inner_hi = np.full(2, radii[b]), np.array([h, w]) - radii[b]
    best, best_cost = path_a, np.inf
    for ang in rng.uniform(0, _TWO_PI) + np.arange(12) * _TWO_PI / 12:  # prefer a direction that stays in view
        e = np.array([np.sin(ang), np.cos(ang)])
        path = path_a + speed * tt * e + d_perp * np.array([-e[1], e[0]]) + own
        cost = (np.clip(inner_lo - path, 0, None) + np.clip(path - inner_hi, 0, None)).sum()
        if cost < best_cost:
            best, best_cost = path, cost
    pos[:, a] = _fold(path_a, lo, hi)
    pos[:, b] = _fold(best, lo, hi)


def _render_object(img: np.ndarray, lab: np.ndarray, oid: int, centre: np.ndarray, theta: float, scale: float,
                   aspect: float, lut: np.ndarray, radius: float, tex: np.ndarray) -> None:
    """Composite one textured object over ``img`` (H, W, 3) and write its visible label into ``lab``."""
    h, w = lab.shape
    sx, sy = scale * aspect, scale / aspect  # object-to-pixel scale along the object's u / v axes
    ext = radius * lut.max() * max(sx, sy) + 2
    cy, cx = centre
    y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 2, h)
    x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    c, s = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = (c * dx + s * dy) / sx
    v = (-s * dx + c * dy) / sy
    rho = np.hypot(u, v)
    rb = lut_radius(lut, np.arctan2(v, u)).astype(np.float32) * radius
    alpha = np.clip((rb - rho) * min(sx, sy) + 0.5, 0, 1)  # ~1 px anti-aliased edge
    inside = alpha > 0
    if not inside.any():
        return
    tc = (tex.shape[0] - 1) / 2.0
    col = bilinear(tex, v[inside] + tc, u[inside] + tc)
    col *= (1.1 - 0.35 * (rho[inside] / rb[inside]) ** 2)[:, None]  # shading: rounded look
    a = alpha[inside][:, None]
    sub = img[y0:y1, x0:x1]
    sub[inside] = sub[inside] * (1 - a) + col * a
    lab[y0:y1, x0:x1][alpha >= 0.5] = oid


def synthetic_video(num_frames: int = 24, height: int = 128, width: int = 160, num_objects: int = 3,
                    seed: int = 0) -> SyntheticSequence:
    """Natural-video-like RGB clip with ``num_objects`` tracked, textured objects.

    Returns frames (T, H, W, 3) uint8 and labels (T, H, W) uint16 (ids 1..num_objects, 0 = bg;
    only the visible part of each object is labelled). Objects move with smooth random
    velocities, rotate, scale, stretch and deform; their texture is attached to the object.
    Objects have a fixed depth order; one pair (when there are >= 2) is made to cross so an
    occlusion always happens. The background pans slowly; illumination and noise vary.
    """
    rng = np.random.default_rng(seed)
    t_n, h, w, n = int(num_frames), int(height), int(width), int(num_objects)
    unit = min(h, w) / 128.0
    radii = min(h, w) * rng.uniform(0.11, 0.19, n) * float(np.clip(np.sqrt(3.0 / max(n, 1)), 0.45, 1.0))
    order = rng.permutation(n)  # render order: back to front
    bg_hue = rng.uniform()
    pos = _trajectories(rng, t_n, h, w, radii, unit)
    if n >= 2:
        front, back = int(order[-1]), int(order[rng.integers(0, n - 1)])
        radii[front] = radii[back] * rng.uniform(0.75, 0.95)  # big enough to hide most of it
        _force_crossing(rng, pos, front, back, radii, h, w, unit)
    theta = rng.uniform(0, _TWO_PI, n) + np.cumsum(
        rng.uniform(-0.06, 0.06, n) + 0.02 * smooth_series(rng, t_n, 4, (n,)), axis=0)
    trend = np.linspace(0, 1, t_n)[:, None] * rng.uniform(-0.15, 0.15, n)  # slow zoom in / out
    scale = np.exp(0.08 * smooth_series(rng, t_n, 6, (n,)) + trend)
    aspect = np.exp(rng.uniform(-0.15, 0.15, n) + 0.07 * smooth_series(rng, t_n, 5, (n,)))
    luts = [_shape_luts(rng, t_n) for _ in range(n)]
    hues = bg_hue + 0.15 + (rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / max(n, 1) * 0.7  # away from bg hue
    texs = []
    for i in range(n):
        stretch = max(scale[:, i].max(), 1.0) * max(aspect[:, i].max(), 1 / aspect[:, i].min())
        size = int(2 * radii[i] * 1.7 * stretch) + 8
        texs.append(_texture(rng, size, radii[i], hues[i]))
    # background canvas large enough for the camera pan
    pan_dir = rng.uniform(0, _TWO_PI)
    pan_v = unit * rng.uniform(0.0, 1.0) * np.array([np.sin(pan_dir), np.cos(pan_dir)])
    pan = np.arange(t_n)[:, None] * pan_v + np.cumsum(0.15 * unit * smooth_series(rng, t_n, 5, (2,)), axis=0)
    pan -= pan.min(axis=0)
    my, mx = (int(np.ceil(pan[:, 0].max())) + 2, int(np.ceil(pan[:, 1].max())) + 2)
    canvas = _background(rng, h + my, w + mx, bg_hue)
    gain = np.exp(0.07 * smooth_series(rng, t_n, 6))
    tint = np.exp(0.025 * smooth_series(rng, t_n, 8, (3,))).astype(np.float32)
    # pixel noise: random crops of one noise bank (cheap, and uncorrelated between frames)
    bank = rng.standard_normal((h + 32, w + 32, 3), dtype=np.float32) * np.float32(rng.uniform(1.5, 3.5))
    frames = np.empty((t_n, h, w, 3), np.uint8)
    labels = np.zeros((t_n, h, w), np.uint16)
    for k in range(t_n):
        img = _shift_crop(canvas, pan[k, 0], pan[k, 1], h, w)
        for i in order:
            _render_object(img, labels[k], int(i) + 1, pos[k, i], theta[k, i], scale[k, i], aspect[k, i],
                           luts[i][k], radii[i], texs[i])
        img *= (255.0 * gain[k] * tint[k]).astype(np.float32)
        oy, ox, flip = rng.integers(0, 33), rng.integers(0, 33), rng.integers(0, 4)
        noise = bank[oy : oy + h, ox : ox + w]
        noise = noise[::-1] if flip & 1 else noise
        img += noise[:, ::-1] if flip & 2 else noise
        img += np.float32(0.5)
        frames[k] = np.clip(img, 0, 255, out=img)
    return SyntheticSequence(f"synthetic_video_{seed}", frames, labels)
