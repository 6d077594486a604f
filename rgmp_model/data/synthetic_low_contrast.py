"""Synthetic time-lapses of large, low-contrast nuclei (HeLa-like), with exact labels.

The hard case for a propagation model: nuclei 40-70 px across that are only 1.1-1.5x as bright as
what surrounds them (a bright cytoplasm and background, as with a nuclear marker over strong
autofluorescence or a cytoplasmic leak), slow shape change, divisions and long tracks (100-150
frames). Image model, in camera counts, for frame ``t`` and pixel ``p``::

    expected(p) = [B (1 + u(p)) + h * (PSF * halo)(p) + PSF * sum_i (c_i - 1) B g_i(t) tex_i(p)] v(p)
    frame(p)    = G Poisson(expected(p) / G) + N(0, read^2), rounded, clipped to the dtype

* ``B``: the background level (uint8: 45-90 counts, uint16: 400-3000); ``u``: smooth unevenness
  of +-8 %; ``v``: up to 10 % vignetting; ``halo``: each nucleus sits in a cell body (a blurred
  disc of 1.6-2.2x its radius) ``h`` = 4-12 % of ``B`` brighter than the background, so the
  nucleus's edge is against its own cytoplasm, not against empty background.
* ``c_i``: the nucleus's contrast, its mean over the local surroundings, uniform in
  ``contrast`` (default 1.1-1.5); ``tex_i``: chromatin texture and nucleoli
  (:mod:`rgmp_model.data.synthetic_fluorescence`); ``g_i(t)``: +-3 % flicker and mild bleaching.
* ``G`` and ``read``: the background's noise sigma is 4-8 % of ``B`` (so a 1.1x nucleus is 1-2.5
  sigmas above its surroundings per pixel), half of its variance read noise. PSF: Gaussian,
  sigma 1.5-3 px (widefield). A nucleus is a dome: its rim 40-80 % dimmer than its centre, so
  its true outline lies on a faint shoulder (as in the Cell Tracking Challenge's simulated
  HL60 nuclei, Fluo-N2DH-SIM+).

Motion and divisions are those of :func:`rgmp_model.data.synthetic_microscopy.step_cells`:
slow drift (~0.3-0.8 px per frame), wobbling outlines; **both daughters keep the parent's id**.
Returns a :class:`~rgmp_model.data.synthetic_fluorescence.FluorescenceSequence` (brightness per
id: the mean counts above the background).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from rgmp_model.data.synthetic import noise_field, smooth_series
from rgmp_model.data.synthetic_fluorescence import (
    DTYPES, FluorescenceSequence, _AMP_CAP, _nucleus_texture, _place, object_brightness,
)
from rgmp_model.data.synthetic_microscopy import TEX_SPAN, Cell, render_cell, step_cells

__all__ = ["random_low_contrast", "synthetic_low_contrast"]


def _dome(tex: np.ndarray, falloff: float) -> np.ndarray:
    """``tex`` times a dome: 1 at the centre down to ``1 - falloff`` at the nucleus's edge (a
    thick nucleus seen in widefield: its rim is much dimmer than its middle), mean 1 inside."""
    c = (tex.shape[0] - 1) / 2.0
    yy, xx = (np.mgrid[0 : tex.shape[0], 0 : tex.shape[1]].astype(np.float32) - c) / (c / TEX_SPAN)
    rho2 = yy * yy + xx * xx
    out = tex * np.clip(1.0 - falloff * rho2, 0.05, None)
    return (out / out[rho2 <= 1.0].mean()).astype(np.float32)

_LEVEL = {"uint8": (45.0, 90.0), "uint16": (400.0, 3000.0)}  # background counts


def synthetic_low_contrast(num_frames: int = 120, height: int = 512, width: int = 512, num_cells: int = 8,
                           seed: int = 0, dtype: str = "uint16", contrast: tuple[float, float] = (1.1, 1.5),
                           diameter: tuple[float, float] = (40.0, 70.0),
                           division_rate: float = 0.004, blur: tuple[float, float] = (1.5, 3.0),
                           noise: tuple[float, float] = (0.04, 0.08),
                           falloff: tuple[float, float] = (0.4, 0.8)) -> FluorescenceSequence:
    """Large low-contrast nuclei: frames (T, H, W) ``dtype`` counts, labels (T, H, W) uint16 with ids
    1..num_cells (0 = background), ``divisions`` and per-id ``brightness`` (module docstring).

    ``contrast``: (lowest, highest) nucleus brightness over its surroundings, each > 1.
    ``diameter``: (smallest, largest) nucleus diameter in px. ``division_rate``: probability per
    nucleus and frame to start a 4-6 frame division. ``blur``: range of the PSF's sigma (px);
    ``noise``: range of the background's noise sigma as a fraction of its level. ``falloff``: range
    of how much dimmer a nucleus's rim is than its centre (0: flat, 0.7: the rim at 30 %).
    """
    t_n, h, w, n = int(num_frames), int(height), int(width), int(num_cells)
    if t_n < 1 or min(h, w) < 32 or n < 1:
        raise ValueError(f"need num_frames >= 1, height and width >= 32 and num_cells >= 1; got {t_n}, {h}x{w}, {n}")
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype must be 'uint8' or 'uint16', got {dtype!r}")
    lo_c, hi_c = (float(c) for c in contrast)
    if not 1.0 < lo_c <= hi_c:
        raise ValueError(f"contrast must be (lowest, highest) with 1 < lowest <= highest, got {contrast}")
    lo_d, hi_d = (float(d) for d in diameter)
    if not 4.0 <= lo_d <= hi_d <= 0.5 * min(h, w):
        raise ValueError(f"diameter must be (smallest, largest) px with 4 <= smallest <= largest <= half the "
                         f"shorter side ({min(h, w) // 2}), got {diameter}")
    if 0.45 * h * w < n * np.pi * (lo_d / 2) ** 2 * 2.5:
        raise ValueError(f"{n} nuclei of >= {lo_d:.0f} px with their cell bodies do not fit in {h}x{w}: "
                         f"use fewer nuclei or a larger frame")
    if not 0 <= division_rate <= 1:
        raise ValueError(f"division_rate is a probability per nucleus and frame, 0-1; got {division_rate}")
    rng = np.random.default_rng(seed)
    radii = rng.uniform(lo_d, hi_d, n) / 2
    pos = _place(rng, radii * 1.9, h, w, rng.uniform(0.0, 0.5))  # room for the cell bodies
    level = float(np.exp(rng.uniform(*np.log(_LEVEL[dtype]))))
    ratios = rng.uniform(lo_c, hi_c, n)
    halo_gain = rng.uniform(0.04, 0.12) * level
    unit = rng.uniform(0.5, 1.2)  # drift: ~0.3-0.8 px per frame
    cells = []
    for i in range(n):
        cap = _AMP_CAP * rng.uniform(0.3, 1.0)
        cells.append(Cell(oid=i + 1, pos=pos[i], vel=0.5 * unit * rng.standard_normal(2), radius=radii[i],
                          target=radii[i], angle=rng.uniform(0, 2 * np.pi), omega=rng.uniform(-0.01, 0.01),
                          amps=rng.uniform(0, cap), phases=rng.uniform(0, 2 * np.pi, 4),
                          tex=_dome(_nucleus_texture(rng, radii[i]), rng.uniform(*falloff)), brightness=1.0))
    # the nucleus emission over its surroundings (background + halo): (c_i - 1) (B + h)
    emission = {c.oid: (ratios[c.oid - 1] - 1.0) * (level + halo_gain) for c in cells}
    body = {c.oid: rng.uniform(1.6, 2.2) for c in cells}
    sigma_bg = level * rng.uniform(*noise)
    read = sigma_bg * np.sqrt(0.5)
    gain = (sigma_bg**2 - read**2) / level  # shot variance of the background = gain * level
    psf = rng.uniform(*blur)
    uneven = (level * (1.0 + 0.08 * np.tanh(noise_field(rng, (h, w), min(h, w) / 4)[..., 0]))).astype(np.float32)
    yy, xx = np.ogrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    vignette = (1 - rng.uniform(0, 0.1) * ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.25 * (h * h + w * w)))
    vignette = vignette.astype(np.float32)
    bleach = np.exp(-rng.uniform(0, 0.002) * np.arange(t_n))
    flicker = np.exp(0.03 * smooth_series(rng, t_n, 6, (n,)))
    halo_sigma = 0.35 * float(np.mean(radii))
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
        halo = np.zeros((h, w), np.float32)
        for c in cells:
            mitosis = 1.0 + 0.35 * np.sin(np.pi * c.div_step / c.div_len) if c.div_step >= 0 else 1.0
            render_cell(signal, best, labels[t], c, emission[c.oid] * mitosis * bleach[t] * flicker[t, c.oid - 1])
            for centre, r in c.blobs():  # the cell body around the nucleus
                rb = body[c.oid] * r
                y0, y1 = max(int(centre[0] - rb), 0), min(int(centre[0] + rb) + 2, h)
                x0, x1 = max(int(centre[1] - rb), 0), min(int(centre[1] + rb) + 2, w)
                if y0 < y1 and x0 < x1:
                    d2 = (yy[y0:y1] - centre[0]) ** 2 + (xx[:, x0:x1] - centre[1]) ** 2
                    np.maximum(halo[y0:y1, x0:x1], (d2 <= rb * rb).astype(np.float32), out=halo[y0:y1, x0:x1])
        halo = ndi.gaussian_filter(halo, halo_sigma) * np.float32(halo_gain * bleach[t])
        expected = (uneven + halo + ndi.gaussian_filter(signal, psf)) * vignette
        counts = rng.poisson(np.maximum(expected, 0) / gain).astype(np.float32) * np.float32(gain)
        counts += rng.standard_normal((h, w), dtype=np.float32) * np.float32(read) + np.float32(0.5)
        frames[t] = np.clip(counts, 0, top)  # +0.5 then truncation: rounding
    return FluorescenceSequence(f"synthetic_low_contrast_{seed}", frames, labels, tuple(divisions),
                                object_brightness(frames, labels))


def random_low_contrast(rng: np.random.Generator, num_frames: int, height: int, width: int,
                        num_cells: tuple[int, int] = (1, 6)) -> FluorescenceSequence:
    """A training sequence with random settings drawn from ``rng``: 1-6 nuclei (fewer when they do
    not fit), uint8 or uint16 (even odds), diameters within 40-70 px scaled to a training crop of
    ``height`` x ``width`` as a 480 px field would be, contrast 1.08-1.6."""
    lo, hi = num_cells
    if not 1 <= lo <= hi:
        raise ValueError(f"num_cells must be (lo, hi) with 1 <= lo <= hi, got {num_cells}")
    dtype = DTYPES[int(rng.integers(2))]
    scale = min(int(height), int(width)) / 480.0 * rng.uniform(0.8, 2.0)
    d_lo = float(np.clip(40.0 * scale, 8.0, 0.3 * min(height, width)))
    d_hi = float(np.clip(70.0 * scale, d_lo, 0.45 * min(height, width)))
    fit = int(0.45 * height * width / (np.pi * (d_lo / 2) ** 2 * 2.5))
    n = int(rng.integers(lo, max(lo, min(hi, fit)) + 1))
    c_lo = float(rng.uniform(1.08, 1.3))
    return synthetic_low_contrast(num_frames, height, width, max(1, min(n, fit)), seed=int(rng.integers(2**31)),
                                  dtype=dtype, contrast=(c_lo, float(rng.uniform(c_lo, 1.6))),
                                  diameter=(d_lo, d_hi), division_rate=0.01)
