"""Video clips animated from still images with object masks (DUTS, ECSSD, ...), for the video stage.

Thirty DAVIS training clips hold about as many distinct objects; the stills hold thousands. A
:class:`StillClipSource` turns each still into an annotated sequence of ``num_frames`` frames,
generated on demand (only the frames a clip reads are rendered) and deterministic in
``(seed, i)``:

* **layers**: with probability ``paste_probability`` the still's objects are cut out and move over
  another still (the background), each layer on its own trajectory; otherwise the whole image
  moves as one (camera motion), so no hole is left where an object was.
* **motion**: each layer follows a smooth random affine trajectory (translation up to
  ``max_speed`` of the frame's shorter side per frame, turning slowly, rotation up to 2 degrees
  and a scale drift of up to 2 % per frame), so some clips move slowly and some fast; the
  object's scale may shrink to a small object over the clip.
* **appearance**: a slow brightness and contrast drift over the sequence.

Frames are uint8 (T, H, W, 3); labels (T, H, W) uint8 hold the still's objects (ids 1..K, an
object under another layer is occluded there). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .still_sources import ImageSource
from .video_sources import VideoSequence, _CachedSource

__all__ = ["StillClipSource"]

_MAX_OBJECTS = 8  # objects of a still kept (the largest)


@dataclass(frozen=True)
class _Layer:
    """One moving layer: its image (H, W, 3) float32, its labels (H, W) and its per-frame affine
    maps (T, 2, 3) from output (row, col, 1) to source (row, col)."""

    image: np.ndarray
    labels: np.ndarray
    maps: np.ndarray
    alpha: np.ndarray | None  # (H, W) float32 opacity (a pasted layer), None: opaque everywhere


def _trajectory(rng: np.random.Generator, t_n: int, h: int, w: int, speed: float, centre: np.ndarray) -> np.ndarray:
    """(T, 2, 3) affine maps output -> source: a smooth path of translation (a velocity that turns
    slowly and bounces so that ``centre`` stays in the middle 80 % of the frame), rotation and
    scale about ``centre`` (row, col); identity at frame 0."""
    side = min(h, w)
    velocity = rng.normal(0, 1, 2)
    velocity *= rng.uniform(0.0, speed) * side / max(np.linalg.norm(velocity), 1e-6)
    omega = np.deg2rad(rng.uniform(-2, 2))
    growth = rng.uniform(-0.02, 0.02)
    low, high = np.array([0.1 * h, 0.1 * w]), np.array([0.9 * h, 0.9 * w])
    maps = np.zeros((t_n, 2, 3))
    offset = np.zeros(2)
    for t in range(t_n):
        angle, scale = omega * t, float(np.exp(growth * t))
        c, s = np.cos(angle), np.sin(angle)
        inverse = np.linalg.inv(scale * np.array([[c, -s], [s, c]]))  # of source -> output about the centre
        # output p = centre + offset + forward (q - centre)  =>  q = centre + inverse (p - centre - offset)
        maps[t, :, :2] = inverse
        maps[t, :, 2] = centre - inverse @ (centre + offset)
        velocity = 0.9 * velocity + rng.normal(0, 0.1 * speed * side, 2)
        ahead = centre + offset + velocity
        velocity = np.where((ahead < low) | (ahead > high), -velocity, velocity)
        offset = offset + velocity
    return maps


def _warp(image: np.ndarray, affine: np.ndarray, order: int, cval: float = 0.0) -> np.ndarray:
    """``image`` (H, W[, C]) sampled at affine(output coordinates), same shape."""
    matrix, shift = affine[:, :2], affine[:, 2]
    if image.ndim == 2:
        return ndi.affine_transform(image, matrix, shift, order=order, mode="constant", cval=cval, prefilter=False)
    return np.stack([ndi.affine_transform(image[..., c], matrix, shift, order=order, mode="mirror", prefilter=False)
                     for c in range(image.shape[-1])], axis=-1)


def _objects(labels: np.ndarray) -> np.ndarray:
    """The still's largest objects renumbered 1..K (uint8); a binary mask's components are one object."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    keep = ids[np.argsort(counts)[::-1][:_MAX_OBJECTS]]
    out = np.zeros(labels.shape, np.uint8)
    for new, old in enumerate(sorted(keep.tolist()), 1):
        out[labels == old] = new
    return out


class _Frames:
    """Lazy (T, H, W, 3) uint8 frames of a clip, rendered when indexed."""

    def __init__(self, clip: "_Clip") -> None:
        self.clip, self.dtype = clip, np.dtype(np.uint8)
        self.shape = (clip.num_frames, *clip.shape, 3)
        self.ndim = 4

    def __getitem__(self, t: int) -> np.ndarray:
        return self.clip.render(int(t))[0]


class _Labels(_Frames):
    """Lazy (T, H, W) uint8 labels of a clip."""

    def __init__(self, clip: "_Clip") -> None:
        super().__init__(clip)
        self.shape, self.ndim = (clip.num_frames, *clip.shape), 3

    def __getitem__(self, t: int) -> np.ndarray:
        return self.clip.render(int(t))[1]


class _Clip:
    """The layers of one sequence and its appearance drift; frames rendered (and the last kept) on demand."""

    def __init__(self, layers: list[_Layer], gains: np.ndarray, num_frames: int) -> None:
        self.layers, self.gains, self.num_frames = layers, gains, num_frames
        self.shape = layers[0].image.shape[:2]
        self._last: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        if not -self.num_frames <= t < self.num_frames:
            raise IndexError(f"frame {t} is outside a clip of {self.num_frames} frames")
        t %= self.num_frames
        if self._last is not None and self._last[0] == t:
            return self._last[1]
        image = np.zeros((*self.shape, 3), np.float32)
        labels = np.zeros(self.shape, np.uint8)
        for layer in self.layers:  # back to front
            warped = _warp(layer.image, layer.maps[t], order=1)
            if layer.alpha is None:
                image = warped
                labels = _warp(layer.labels, layer.maps[t], order=0)
                continue
            alpha = _warp(layer.alpha, layer.maps[t], order=1)[..., None]
            image = image * (1 - alpha) + warped * alpha
            moved = _warp(layer.labels, layer.maps[t], order=0)
            labels = np.where(alpha[..., 0] >= 0.5, moved, np.where(alpha[..., 0] > 0, 0, labels)).astype(np.uint8)
        brightness, contrast = self.gains[t]
        mean = image.mean()
        image = np.clip((image - mean) * contrast + mean * brightness, 0, 1)
        out = ((image * 255 + 0.5).astype(np.uint8), labels)
        self._last = (t, out)
        return out


class StillClipSource(_CachedSource):
    """``count`` sequences animated from the stills of ``stills`` (an :class:`ImageSource`), sequence
    ``i`` from still ``i % len(stills)``; see the module docstring. ``max_speed``: fastest layer
    speed, a fraction of the shorter side per frame. All frames annotated."""

    def __init__(self, stills: ImageSource, count: int | None = None, num_frames: int = 24, seed: int = 0,
                 paste_probability: float = 0.6, max_speed: float = 0.04, cache_size: int = 4) -> None:
        super().__init__(cache_size)
        if len(stills) < 1 or int(num_frames) < 1 or not 0 <= paste_probability <= 1 or max_speed < 0:
            raise ValueError("need a non-empty still source, num_frames >= 1, 0 <= paste_probability <= 1 and "
                             "max_speed >= 0")
        self.stills, self.num_frames, self.seed = stills, int(num_frames), int(seed)
        self.paste_probability, self.max_speed = float(paste_probability), float(max_speed)
        self.names = tuple(f"still_clip_{self.seed}_{i:05d}" for i in range(int(count or len(stills))))

    def annotated(self, i: int) -> tuple[int, ...]:
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"sequence index {i} is out of range for a source of {len(self)} sequences")
        return tuple(range(self.num_frames))

    def _open(self, i: int) -> VideoSequence:
        rng = np.random.default_rng((self.seed, int(i)))
        image, labels = self.stills[int(i) % len(self.stills)]
        objects = _objects(np.asarray(labels))
        h, w = objects.shape
        t_n = self.num_frames
        centre = np.array([h / 2, w / 2])
        if objects.any() and len(self.stills) > 1 and rng.random() < self.paste_probability:
            other = int(rng.integers(len(self.stills) - 1))
            background = self.stills[other + (other >= int(i) % len(self.stills))][0]
            zoom = (h / background.shape[0], w / background.shape[1])
            background = np.stack([ndi.zoom(background[..., c], zoom, order=1)[:h, :w] for c in range(3)], axis=-1)
            background = np.pad(background, ((0, h - background.shape[0]), (0, w - background.shape[1]), (0, 0)),
                                mode="edge")
            alpha = ndi.gaussian_filter((objects > 0).astype(np.float32), 0.7)
            ys, xs = np.nonzero(objects)
            middle = np.array([ys.mean(), xs.mean()])
            layers = [_Layer(background.astype(np.float32), np.zeros((h, w), np.uint8),
                             _trajectory(rng, t_n, h, w, 0.3 * self.max_speed, centre), None),
                      _Layer(np.asarray(image, np.float32), objects,
                             _trajectory(rng, t_n, h, w, self.max_speed, middle), alpha)]
        else:
            layers = [_Layer(np.asarray(image, np.float32), objects,
                             _trajectory(rng, t_n, h, w, self.max_speed, centre), None)]
        drift = np.cumsum(rng.normal(0, 0.01, (t_n, 2)), axis=0)
        gains = np.clip(1.0 + drift - drift[0], 0.7, 1.3)
        clip = _Clip(layers, gains, t_n)
        return VideoSequence(self.names[int(i)], _Frames(clip), _Labels(clip), tuple(range(t_n)))


def still_clip_source(stills: ImageSource, num_frames: int, seed: int, count: int | None = None) -> Any:
    """The registry's factory (:mod:`training.sources`): the stills of a folder source as clips."""
    return StillClipSource(stills, count=count, num_frames=num_frames, seed=seed)
