"""RGMP training pairs simulated from still images with instance masks (stage 1, fine-tuning and
test-time adaptation all use them).

:class:`StaticPairDataset` turns still sources (:class:`ImageSource`: ``len(source)`` and
``source[i] -> (image float32 (H, W, 3) in [0, 1], labels int32 (H, W))``; the training package's
:mod:`training.still_sources`, or a stack's keyframes, :mod:`rgmp_model.adapt.keyframe_pairs`) into
(reference, target, previous mask) training items, item k depending only on (seed, k).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from rgmp_model.inference.crop_contrast import crop_spread, normalise_crops

from .augment import (
    Window, background_window, color_jitter, crop_transform, deform_previous_mask,
    random_geometric_transform,
)

__all__ = ["ImageSource", "StaticPairDataset"]


class ImageSource(Protocol):
    """What :class:`StaticPairDataset` needs from a source of stills: ``len(source)`` and
    ``source[i] -> (image float32 (H, W, 3) in [0, 1], labels integer (H, W), 0 = background)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


def _block_mean(array: np.ndarray, f: int) -> np.ndarray:
    """(H, W[, C]) -> float32 (H//f, W//f[, C]) means of f x f blocks."""
    h, w = array.shape[0] // f, array.shape[1] // f
    out = np.zeros((h, w, *array.shape[2:]), np.float32)
    for i in range(f):
        for j in range(f):
            out += array[i : h * f : f, j : w * f : f]
    return out * np.float32(1.0 / (f * f))


def region_view(rng: np.random.Generator, reference: np.ndarray, target: np.ndarray,
                probability: float) -> tuple[np.ndarray, np.ndarray]:
    """Grey (3, H, W) crops shown as region mode shows them, with ``probability``: each stretched by
    its own percentiles (:func:`~rgmp_model.inference.crop_contrast.normalise_crops`), the
    target's range at least half the reference's. Colour crops are returned as they are."""
    grey = float(np.abs(reference - reference.mean(axis=0)).max()) < 1e-3  # colour jitter keeps grey grey
    if not grey or rng.random() >= probability:
        return reference, target
    ref = torch.from_numpy(np.ascontiguousarray(reference))[None]
    floor = 0.5 * crop_spread(ref)[1]
    return (normalise_crops(ref)[0].numpy(),
            normalise_crops(torch.from_numpy(np.ascontiguousarray(target))[None], floor)[0].numpy())


class StaticPairDataset(Dataset):
    """Map-style dataset of simulated (reference, target, previous mask) pairs; item k depends only on
    (seed, k), so runs resume exactly and DDP ranks can split indices with a DistributedSampler.

    Item k: a source (by ``weights``, equal by default) and an image are drawn, then one object with
    >= ``min_object_pixels`` pixels (other images are tried when there is none). A crop/resize to
    ``crop_size`` puts the object's box inside the crop (>= 10% of the crop from its edges when it
    fits) with its longer relative side at ``object_fraction`` of the crop; the zoom is raised (the
    object up to 90% of the crop) when that keeps the crop inside the image, and is at most
    ``max_zoom``. With probability ``paste_probability`` the object is pasted onto another drawn
    image. Where a crop or warp reads outside the image it gets the image's median colour.
    Reference = the crop and the object's mask; target = the crop under
    :func:`random_geometric_transform` (reading the real image beyond the crop) and
    :func:`color_jitter`; previous mask = :func:`deform_previous_mask` of the target mask.

    Returns ``reference_frame`` float32 (3, H, W) in [0, 1], ``reference_mask`` float32 (H, W) in
    {0, 1}, ``frame`` float32 (3, H, W) in [0, 1], ``mask`` float32 (H, W) in {0, 1} and
    ``previous_mask`` float32 (H, W) in {0, 1}. With ``crop_contrast_probability``, grey pairs are
    shown as region mode shows crops (:func:`region_view`).
    """

    def __init__(self, sources: Sequence[ImageSource], crop_size: tuple[int, int] = (256, 256), seed: int = 0,
                 length: int = 100_000, box_probability: float = 0.1, paste_probability: float = 0.2,
                 min_object_pixels: int = 64, weights: Sequence[float] | None = None,
                 object_fraction: tuple[float, float] = (0.25, 0.6), max_zoom: float = 4.0,
                 max_tries: int = 30, crop_contrast_probability: float = 0.0) -> None:
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("give at least one image source")
        for j, source in enumerate(self.sources):
            if len(source) == 0:
                raise ValueError(f"source {j} ({type(source).__name__}) holds no images")
        w = np.ones(len(self.sources)) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (len(self.sources),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(self.sources)} non-negative numbers, not all zero; got {weights}")
        if len(crop_size) != 2 or min(crop_size) < 16:
            raise ValueError(f"crop_size must be (height, width) of at least 16 px, got {crop_size}")
        if not 0 < object_fraction[0] <= object_fraction[1] <= 1:
            raise ValueError(f"object_fraction must satisfy 0 < low <= high <= 1, got {object_fraction}")
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.weights = w / w.sum()
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.seed, self.length = int(seed), int(length)
        self.box_probability, self.paste_probability = float(box_probability), float(paste_probability)
        self.min_object_pixels = max(int(min_object_pixels), 1)
        self.object_fraction, self.max_zoom, self.max_tries = object_fraction, float(max_zoom), int(max_tries)
        if not 0 <= crop_contrast_probability <= 1:
            raise ValueError(f"crop_contrast_probability must be in [0, 1], got {crop_contrast_probability}")
        self.crop_contrast_probability = float(crop_contrast_probability)

    def __len__(self) -> int:
        return self.length

    def _draw_image(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        j = int(rng.choice(len(self.sources), p=self.weights))
        i = int(rng.integers(len(self.sources[j])))
        image, labels = self.sources[j][i]
        if image.ndim != 3 or image.shape[-1] != 3 or labels.shape != image.shape[:2]:
            raise ValueError(f"source {j} ({type(self.sources[j]).__name__}) item {i} gave image {image.shape} and labels {labels.shape}: a source "
                             "must return an (H, W, 3) image and (H, W) labels")
        return image, labels

    def _draw_object(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(self.max_tries):
            image, labels = self._draw_image(rng)
            ids, counts = np.unique(labels, return_counts=True)  # id values never size an array
            ids = ids[(ids > 0) & (counts >= self.min_object_pixels)]
            if ids.size:
                return image, labels == rng.choice(ids)
        raise ValueError(f"no object with >= {self.min_object_pixels} pixels in {self.max_tries} drawn images: "
                         "check the sources' masks or lower min_object_pixels")

    def _window(self, rng: np.random.Generator, mask: np.ndarray) -> Window:
        """Crop window putting the object's box well inside the crop at a random scale and position."""
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        y0, x0 = rows[0], cols[0]
        bh, bw = rows[-1] - y0 + 1, cols[-1] - x0 + 1
        ch, cw = self.crop_size
        rel = max(bh / ch, bw / cw)  # the box's larger side relative to the crop at zoom 1
        cover = max(ch / mask.shape[0], cw / mask.shape[1])  # smallest zoom keeping the crop inside the image
        zoom = max(rng.uniform(*self.object_fraction) / rel, min(cover, 0.9 / rel))
        zoom = min(zoom, self.max_zoom)
        start = []
        for lo, size, crop, full in ((y0, bh, ch, mask.shape[0]), (x0, bw, cw, mask.shape[1])):
            room = crop - size * zoom  # free crop pixels around the box
            margin = min(0.1 * crop, room / 2)
            a, b = lo - (room - margin) / zoom, lo - margin / zoom  # crop origins keeping the box inside
            ia, ib = max(a, 0.0), min(b, full - crop / zoom)  # ... and the crop inside the image
            start.append(rng.uniform(ia, ib) if ia <= ib else rng.uniform(a, b))
        return Window(start[0], start[1], zoom, mask.shape)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k = int(index)
        if not 0 <= k < self.length:
            raise IndexError(f"item {index} is out of range for a dataset of {self.length} items")
        rng = np.random.default_rng((self.seed, k))
        image, mask = self._draw_object(rng)
        window = self._window(rng, mask)
        if window.zoom < 0.5:  # shrink by whole blocks first: bilinear would alias
            f = int(1 / window.zoom)
            image, soft = _block_mean(image, f), _block_mean(mask.astype(np.float32), f)
            window = Window(window.top / f, window.left / f, window.zoom * f, soft.shape)
        else:
            soft = mask.astype(np.float32)
        fill = np.median(image[::8, ::8].reshape(-1, 3), axis=0)  # outside the image
        crop = crop_transform(window, self.crop_size)
        warp = random_geometric_transform(rng, self.crop_size).through(window)
        ref_image, ref_alpha = crop.apply_to_image(image, fill, channels_first=True), crop.apply_to_image(soft)
        tgt_image, tgt_alpha = warp.apply_to_image(image, fill, channels_first=True), warp.apply_to_image(soft)
        if rng.random() < self.paste_probability:  # the object over another image, moving on its own
            background = self._draw_image(rng)[0]
            place = background_window(rng, background.shape[:2], self.crop_size)
            bg_fill = np.median(background[::8, ::8].reshape(-1, 3), axis=0)
            bg_warp = random_geometric_transform(rng, self.crop_size, scale_range=(0.9, 1.1), max_rotation=10.0)
            for img, alpha, move in ((ref_image, ref_alpha, crop_transform(place, self.crop_size)),
                                     (tgt_image, tgt_alpha, bg_warp.through(place))):
                img *= alpha
                img += move.apply_to_image(background, bg_fill, channels_first=True) * (1 - alpha)
        tgt_image = color_jitter(rng, tgt_image.transpose(1, 2, 0)).transpose(2, 0, 1)
        tgt_mask = (tgt_alpha >= 0.5).astype(np.float32)
        previous = deform_previous_mask(rng, tgt_mask, box_probability=self.box_probability)
        if self.crop_contrast_probability:  # own numbers: the items are unchanged without it
            ref_image, tgt_image = region_view(np.random.default_rng((self.seed, k, 11)), ref_image, tgt_image,
                                               self.crop_contrast_probability)
        return {
            "reference_frame": torch.from_numpy(ref_image),
            "reference_mask": torch.from_numpy((ref_alpha >= 0.5).astype(np.float32)),
            "frame": torch.from_numpy(np.ascontiguousarray(tgt_image)),
            "mask": torch.from_numpy(tgt_mask),
            "previous_mask": torch.from_numpy(previous),
        }
