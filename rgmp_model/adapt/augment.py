"""Random deformations for simulated training pairs (numpy / scipy / scikit-image only).

Randomness comes only from an explicit ``np.random.Generator``. A :class:`GeometricTransform` is a
backward map (for every output pixel, the (row, col) of the source it reads; pixel centres at
integers), so one transform warps an image and its masks identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage as ndi

from .splines import local_tps_displacement, thin_plate_spline_displacement

__all__ = [
    "GeometricTransform", "Window", "background_window", "color_jitter", "crop_transform",
    "deform_previous_mask", "paste_object", "random_geometric_transform", "thin_plate_spline_displacement",
]


# --------------------------------------------------------------------------- sampling

_Weights = tuple[np.ndarray, tuple[np.ndarray, ...], "np.ndarray | None"]


def _bilinear_weights(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> _Weights:
    """For float (h,w) coordinates into an (H, W) image: the top-left pixel's flat index (N,), the four
    corner weights (N,) and the in-image coverage (N,) (None when every point is inside)."""
    h, w = shape
    r = np.clip(rows.ravel(), 0, h - 1).astype(np.float32, copy=False)
    c = np.clip(cols.ravel(), 0, w - 1).astype(np.float32, copy=False)
    r0, c0 = np.minimum(r.astype(np.intp), max(h - 2, 0)), np.minimum(c.astype(np.intp), max(w - 2, 0))
    fr, fc = r - r0.astype(np.float32), c - c0.astype(np.float32)
    gr, gc = 1 - fr, 1 - fc
    r0 = r0 * w + c0
    cover = None
    if rows.min() < 0 or cols.min() < 0 or rows.max() > h - 1 or cols.max() > w - 1:
        cover = np.clip(1.0 - np.maximum(-rows, rows - (h - 1)), 0.0, 1.0).ravel()
        cover = (cover * np.clip(1.0 - np.maximum(-cols, cols - (w - 1)), 0.0, 1.0).ravel()).astype(np.float32)
    return r0, (gr * gc, gr * fc, fr * gc, fr * fc), cover


def _bilinear(image: np.ndarray, weights: _Weights, out_shape: tuple[int, ...],
              fill: float | Sequence[float]) -> np.ndarray:
    """(H,W) or (H,W,C) float32 image resampled with :func:`_bilinear_weights` -> (C, *out_shape) float32:
    exact bilinear inside the image (integer coordinates give the pixel), fading to ``fill`` outside."""
    h, w = image.shape[:2]
    ch = image.shape[2] if image.ndim == 3 else 1
    flat, (base, corner, cover) = np.ascontiguousarray(image).reshape(-1), weights
    i = base * ch if ch > 1 else base
    dr, dc = (w * ch if h > 1 else 0), (ch if w > 1 else 0)
    out = np.empty((ch, base.size), np.float32)
    for k in range(ch):  # gathers from offset views: no index arithmetic per channel and corner
        np.multiply(np.take(flat[k:], i), corner[0], out=out[k])
        for offset, weight in zip((dc, dr, dr + dc), corner[1:]):
            out[k] += np.take(flat[k + offset :], i) * weight
    if cover is not None:
        out = out * cover + np.broadcast_to(np.asarray(fill, np.float32).reshape(-1, 1), (ch, 1)) * (1 - cover)
    return out.reshape(ch, *out_shape)


def _nearest(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(H,W) labels read at the nearest pixel of float (h,w) coordinates; 0 outside the image."""
    h, w = labels.shape
    r, c = np.rint(rows).astype(np.intp), np.rint(cols).astype(np.intp)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    out = np.take(labels.ravel(), (np.clip(r, 0, h - 1) * w + np.clip(c, 0, w - 1)).ravel()).reshape(rows.shape)
    return np.where(inside, out, np.zeros((), labels.dtype))


@dataclass(frozen=True)
class Window:
    """Crop/resize of an (H, W) = ``source_shape`` image: output pixel (r, c) reads source pixel
    (top + (r + .5) / zoom - .5, left + (c + .5) / zoom - .5): (top, left) is the output's corner in
    pixel-edge units (0 = the image's edge), ``zoom`` output px per source px."""

    top: float
    left: float
    zoom: float
    source_shape: tuple[int, int]


@dataclass(frozen=True, eq=False)
class GeometricTransform:
    """Backward map: output pixel (r, c) reads the source at (``rows[r, c]``, ``cols[r, c]``); rows/cols
    (h, w) float32, ``source_shape`` (H, W) of the images it applies to."""

    rows: np.ndarray
    cols: np.ndarray
    source_shape: tuple[int, int]
    flipped: bool = False
    _weights: list[_Weights] = field(init=False, default_factory=list, repr=False)

    def _checked(self, array: np.ndarray, what: str) -> np.ndarray:
        if array.shape[:2] != tuple(self.source_shape):
            raise ValueError(f"{what} has shape {array.shape}, but this transform reads images of "
                             f"{tuple(self.source_shape)}: build the transform for that shape")
        return array

    def _bilinear(self, image: np.ndarray, fill: float | Sequence[float]) -> np.ndarray:
        if not self._weights:  # computed once, shared by all images and masks this transform warps
            self._weights.append(_bilinear_weights(self.rows, self.cols, self.source_shape))
        return _bilinear(image, self._weights[0], self.rows.shape, fill)

    @property
    def shape(self) -> tuple[int, int]:
        """Output (h, w)."""
        return self.rows.shape  # type: ignore[return-value]

    def through(self, window: Window) -> GeometricTransform:
        """This warp with its input read through ``window`` (a crop/resize of a larger image)."""
        rows = window.top + (self.rows + 0.5) / window.zoom - 0.5
        cols = window.left + (self.cols + 0.5) / window.zoom - 0.5
        return replace(self, rows=rows.astype(np.float32), cols=cols.astype(np.float32),
                       source_shape=tuple(window.source_shape))

    def apply_to_image(self, image: np.ndarray, fill: float | Sequence[float] = 0.0,
                       channels_first: bool = False) -> np.ndarray:
        """(H,W) or (H,W,C) image -> float32 (h,w) or (h,w,C), or (C,h,w) with ``channels_first``;
        bilinear; outside the source -> ``fill`` (a number or one per channel)."""
        image = self._checked(np.asarray(image, np.float32), "the image")
        out = self._bilinear(image, fill)
        if channels_first or image.ndim == 2:
            return out if image.ndim == 3 else out[0]
        return np.ascontiguousarray(out.transpose(1, 2, 0))

    def apply_to_mask(self, mask: np.ndarray) -> np.ndarray:
        """(H,W) mask -> (h,w). Integer labels: nearest pixel, same dtype. Bool or float binary masks:
        bilinear then ``>= 0.5``, returned as bool / float32 in {0, 1}. Outside the source -> 0."""
        mask = self._checked(np.asarray(mask), "the mask")
        if mask.ndim != 2:
            raise ValueError(f"the mask has shape {mask.shape}: expected (H, W)")
        if mask.dtype.kind in "iu":
            return _nearest(mask, self.rows, self.cols)
        binary = self._bilinear(mask.astype(np.float32), 0.0)[0] >= 0.5
        return binary if mask.dtype == bool else binary.astype(np.float32)


def _grid(shape: tuple[int, int], top: int = 0, left: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 pixel rows (h, 1) and cols (1, w) of an (h, w) grid starting at (top, left)."""
    h, w = shape
    return np.arange(top, top + h, dtype=np.float32)[:, None], np.arange(left, left + w, dtype=np.float32)[None, :]


def crop_transform(window: Window, shape: tuple[int, int]) -> GeometricTransform:
    """The pure crop/resize of ``window`` onto an output of ``shape`` (h, w)."""
    rows, cols = _grid(shape)
    ident = GeometricTransform(np.repeat(rows, shape[1], 1), np.repeat(cols, shape[0], 0), tuple(shape))
    return ident.through(window)


# --------------------------------------------------------------------------- random warps


def random_geometric_transform(
    rng: np.random.Generator, shape: tuple[int, int], flip_probability: float = 0.5, max_rotation: float = 30.0,
    scale_range: tuple[float, float] = (0.8, 1.2), max_shear: float = 10.0, max_translation: float = 0.1,
    tps_points: int = 5, tps_strength: float = 0.03, max_area_change: float = 1.25,
) -> GeometricTransform:
    """Random warp of an (h, w) image onto itself: mirror, affine, thin-plate spline.

    Forward model: horizontal mirror (probability ``flip_probability``), then an affine map about the
    centre (rotation +-``max_rotation`` deg, isotropic scale in ``scale_range``, shear +-``max_shear``
    deg, translation +-``max_translation`` of (h, w)), then a thin-plate spline moving ``tps_points``
    random points by up to +-``tps_strength`` * min(h, w) per axis (frame corners and edge midpoints
    fixed). Guaranteed: the affine part scales areas by s^2 with s in ``scale_range`` (rotation, shear
    and mirror preserve area); the spline's local area change is within [1/max_area_change,
    max_area_change] (its displacement is shrunk until it is). So an object that stays inside the
    frame has area ratio (output / input) in [s_lo^2 / max_area_change, s_hi^2 * max_area_change]
    up to rasterisation of its outline. With zero ranges and flip_probability=1 it is an exact mirror.
    """
    h, w = (int(shape[0]), int(shape[1]))
    if h < 1 or w < 1 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"need a positive shape and 0 < scale_range[0] <= [1]; got {shape}, {scale_range}")
    flip = bool(rng.random() < flip_probability)
    angle = math.radians(rng.uniform(-max_rotation, max_rotation))
    scale = rng.uniform(*scale_range)
    shear = math.radians(rng.uniform(-max_shear, max_shear))
    shift = rng.uniform(-max_translation, max_translation, 2) * (h, w)
    points = rng.uniform((0, 0), (h - 1, w - 1), (8 * int(tps_points), 2))  # candidates
    rows, cols = _grid((h, w))
    if tps_strength > 0 and tps_points > 0:
        disp = local_tps_displacement(rng, (h, w), points, int(tps_points), 0.2 * min(h, w),
                                      np.full(2, tps_strength * min(h, w)), max_area_change)
        rows, cols = rows + disp[0], cols + disp[1]
    ca, sa = math.cos(angle), math.sin(angle)
    forward = np.array([[ca, -sa], [sa, ca]]) @ np.array([[1.0, 0.0], [math.tan(shear), 1.0]]) * scale
    inv = np.linalg.inv(forward).tolist()
    cr, cc = (h - 1) / 2, (w - 1) / 2
    dr, dc = rows - float(cr + shift[0]), cols - float(cc + shift[1])  # float32 throughout
    src_r = np.broadcast_to(cr + inv[0][0] * dr + inv[0][1] * dc, (h, w))
    src_c = np.broadcast_to(cc + inv[1][0] * dr + inv[1][1] * dc, (h, w))
    if flip:
        src_c = (w - 1) - src_c
    return GeometricTransform(np.ascontiguousarray(src_r), np.ascontiguousarray(src_c), (h, w), flip)


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) inclusive bounding box of a boolean mask, or None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def deform_previous_mask(
    rng: np.random.Generator, mask: np.ndarray, box_probability: float = 0.1, max_scale: float = 0.05,
    max_translation: float = 0.1, tps_points: int = 5, tps_strength: float = 0.1, max_area_change: float = 1.5,
    max_dilation: int = 5, max_erosion: int = 3, box_enlarge: float = 0.1,
) -> np.ndarray:
    """A plausible "previous frame" mask simulated from an (H, W) target mask -> float32 (H, W) in {0, 1}.

    With probability ``box_probability``: the object's filled bounding box, each side pushed out by
    U(0, box_enlarge) of the box size (so it always contains the whole object; clipped to the image).
    Otherwise (MaskTrack's recipe), with (bh, bw) the object's box size: per-axis scale 1 +- max_scale
    about the box centre, translation +- max_translation * (bh, bw), then a thin-plate spline moving
    ``tps_points`` object pixels by up to +- tps_strength * (bh, bw) (local area change within
    [1/max_area_change, max_area_change]), then a dilation by 1..max_dilation px or an erosion by
    1..max_erosion px (each with probability 1/2; an erosion that would empty the mask is skipped).
    An empty input gives an empty mask.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask has shape {m.shape}: expected one (H, W) mask")
    m = m > 0.5 if m.dtype.kind == "f" else m != 0
    h, w = m.shape
    out = np.zeros((h, w), np.float32)
    box = _box(m)
    if box is None:
        return out
    y0, y1, x0, x1 = box
    bh, bw = y1 - y0 + 1, x1 - x0 + 1
    if rng.random() < box_probability:
        e = rng.uniform(0, box_enlarge, 4) * (bh, bh, bw, bw)
        out[max(int(y0 - e[0]), 0) : int(y1 + e[1]) + 1, max(int(x0 - e[2]), 0) : int(x1 + e[3]) + 1] = 1
        return out
    scale = 1 + rng.uniform(-max_scale, max_scale, 2)
    shift = rng.uniform(-max_translation, max_translation, 2) * (bh, bw)
    dilate = bool(rng.random() < 0.5)
    radius = int(rng.integers(1, max(max_dilation if dilate else max_erosion, 1) + 1))
    pad = int(0.6 * max(bh, bw)) + max_dilation + 2
    wy0, wy1, wx0, wx1 = max(y0 - pad, 0), min(y1 + pad + 1, h), max(x0 - pad, 0), min(x1 + pad + 1, w)
    rows, cols = _grid((wy1 - wy0, wx1 - wx0), wy0, wx0)
    inside = np.flatnonzero(m[wy0:wy1, wx0:wx1])
    if tps_points > 0 and tps_strength > 0:
        pick = inside[rng.integers(0, inside.size, 8 * int(tps_points))]
        points = np.stack(np.unravel_index(pick, (wy1 - wy0, wx1 - wx0)), 1).astype(np.float64)
        disp = local_tps_displacement(rng, (wy1 - wy0, wx1 - wx0), points, int(tps_points), 0.25 * max(bh, bw),
                                      tps_strength * np.array([bh, bw]), max_area_change)
        rows, cols = rows + disp[0], cols + disp[1]
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    shape = (wy1 - wy0, wx1 - wx0)
    src_r = np.broadcast_to(cy + (rows - float(cy + shift[0])) * float(1 / scale[0]), shape)
    src_c = np.broadcast_to(cx + (cols - float(cx + shift[1])) * float(1 / scale[1]), shape)
    warped = _nearest(m.view(np.uint8), src_r, src_c) > 0  # nearest: the result is coarsened anyway
    if not warped.any():  # moved out of view: keep the undeformed object
        warped = m[wy0:wy1, wx0:wx1]
    out[wy0:wy1, wx0:wx1] = _morph(warped, radius, dilate)
    return out


def _morph(mask: np.ndarray, radius: int, dilate: bool) -> np.ndarray:
    """Dilate or erode a boolean mask by a Euclidean disc of ``radius`` px (erosion never empties it)."""
    y0, y1, x0, x1 = _box(mask) or (0, -1, 0, -1)
    p = radius + 1
    sub = np.pad(mask[y0 : y1 + 1, x0 : x1 + 1], p)
    if dilate:
        sub = ndi.distance_transform_edt(~sub) <= radius
    else:
        eroded = ndi.distance_transform_edt(sub) > radius
        sub = eroded if eroded.any() else sub
    out = np.pad(np.zeros(mask.shape, bool), p)  # padded so that sub fits, cropped back below
    out[y0 : y1 + 1 + 2 * p, x0 : x1 + 1 + 2 * p] = sub
    return out[p:-p, p:-p]


# --------------------------------------------------------------------------- colour and pasting


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def color_jitter(rng: np.random.Generator, image: np.ndarray, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.3, hue: float = 0.03, noise: float = 0.02) -> np.ndarray:
    """(H, W, 3) float image -> float32 (H, W, 3) clipped to [0, 1] (a view of a (3, H, W) array).

    Saturation x U(1 +- saturation) and a hue rotation of U(+-hue) turns (in YIQ, luma kept), contrast
    x U(1 +- contrast) about the mean luma, brightness x U(1 +- brightness), then additive noise of
    std U(0, noise) (uniformly distributed). All zeros: the input unchanged (up to rounding; clipped to [0, 1]).
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image has shape {image.shape}: expected (H, W, 3) RGB")
    sat = 1 + rng.uniform(-saturation, saturation)
    angle = 2 * math.pi * rng.uniform(-hue, hue)
    con = 1 + rng.uniform(-contrast, contrast)
    bri = 1 + rng.uniform(-brightness, brightness)
    sigma = rng.uniform(0, noise)
    ca, sa = math.cos(angle), math.sin(angle)
    chroma = np.array([[1, 0, 0], [0, sat * ca, -sat * sa], [0, sat * sa, sat * ca]])
    matrix = bri * con * (np.linalg.inv(_YIQ) @ chroma @ _YIQ)  # acts on column vectors
    step = max(1, int((image.shape[0] * image.shape[1] / 65536) ** 0.5))  # mean from <= ~64k pixels
    luma = float(image[::step, ::step].reshape(-1, 3).mean(0, dtype=np.float64) @ _YIQ[0])
    out = np.empty((3, *image.shape[:2]), np.float32)  # per channel plane (no BLAS threads for a 3x3)
    for j, row in enumerate(matrix.tolist()):
        np.multiply(image[..., 0], row[0], out=out[j])
        out[j] += image[..., 1] * row[1]
        out[j] += image[..., 2] * row[2] + bri * (1 - con) * luma
    if sigma > 0:  # uniform noise of std sigma (cheaper to draw than Gaussian)
        out += (rng.random(out.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(sigma * 12**0.5)
    return np.clip(out, 0.0, 1.0, out=out).transpose(1, 2, 0)


def background_window(rng: np.random.Generator, background_shape: tuple[int, int], shape: tuple[int, int],
                      max_extra_zoom: float = 0.3) -> Window:
    """A random window of a (Hb, Wb) background resized to cover an (h, w) output: zoom = the covering
    zoom x U(1, 1 + max_extra_zoom), position uniform over the background."""
    (hb, wb), (h, w) = background_shape[:2], shape
    zoom = max(h / hb, w / wb) * rng.uniform(1.0, 1.0 + max_extra_zoom)
    return Window(rng.uniform(0, max(hb - h / zoom, 0.0)), rng.uniform(0, max(wb - w / zoom, 0.0)), zoom,
                  (int(hb), int(wb)))


def paste_object(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The object ``mask`` (H, W) of ``image`` (H, W, 3) pasted onto ``background`` (Hb, Wb, 3), which is
    resized and cropped to (H, W) by :func:`background_window` -> float32 (H, W, 3).

    Where mask == 1 the result is ``image`` exactly, where mask == 0 the resized background; a soft
    (float) mask blends the two."""
    image = np.asarray(image, np.float32)
    background = np.asarray(background, np.float32)
    if image.ndim != 3 or background.ndim != 3 or image.shape[-1] != background.shape[-1]:
        raise ValueError(f"image {image.shape} and background {background.shape} must both be (H, W, C) colour images")
    if np.shape(mask) != image.shape[:2]:
        raise ValueError(f"mask has shape {np.shape(mask)}, expected {image.shape[:2]}")
    window = background_window(rng, background.shape[:2], image.shape[:2])
    resized = crop_transform(window, image.shape[:2]).apply_to_image(background)
    alpha = np.asarray(mask, np.float32)[..., None]
    return image * alpha + resized * (1 - alpha)
