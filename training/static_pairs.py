"""Stage-1 ("static") RGMP training pairs simulated from still images with instance masks.

A *source* is a small sequence of stills: ``len(source)`` and ``source[i] -> (image, labels)`` with
image float32 (H, W, 3) in [0, 1] and labels int32 (H, W), 0 = background. Sources list their
files when built and read an image only when it is asked for. :class:`StaticPairDataset` turns
them into (reference, target, previous mask) training items, item k depending only on (seed, k).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from rgmp_model.frames import FrameStack
from rgmp_model.label_io import open_label_stack, read_label_image
from rgmp_model.stack_io import IMAGE_SUFFIXES, PathLike, natural_sort_key, open_image_stack, read_image
from rgmp_model.synthetic import synthetic_video
from rgmp_model.synthetic_fluorescence import random_fluorescence
from rgmp_model.synthetic_microscopy import synthetic_microscopy
from training.augment import (
    Window, background_window, color_jitter, crop_transform, deform_previous_mask,
    random_geometric_transform,
)

__all__ = [
    "DavisFramesSource", "FolderSource", "ImageSource", "StaticPairDataset", "SyntheticSource", "TiffStackSource",
    "VOCSource",
]


class ImageSource(Protocol):
    """What :class:`StaticPairDataset` needs from a source of stills with instance labels."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


def _rgb01(image: np.ndarray) -> np.ndarray:
    """One image (H,W) / (H,W,C) of any numeric type -> float32 (H,W,3) in [0, 1] (via FrameStack)."""
    return FrameStack(np.asarray(image)[np.newaxis])[0]


def _pair(image: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"{name}: the labels have shape {labels.shape} but the image is {image.shape[:2]}; "
                         "each mask must have the size of its image")
    return image, labels.astype(np.int32, copy=False)


def _folder(path: PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is not a folder: pass the {what}")
    return p


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda q: natural_sort_key(q.name)):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in files:
                raise ValueError(f"{folder} holds two files with the stem {p.stem!r} ({files[p.stem].name}, {p.name}):"
                                 " keep one, files are paired by stem")
            files[p.stem] = p
    return files


def _few(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(list(names)[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _check_index(index: int, n: int) -> int:
    index = int(index)
    if not -n <= index < n:
        raise IndexError(f"index {index} is out of range for a source of {n} images")
    return index % n


class FolderSource:
    """Image files (PNG/JPEG/TIFF/BMP) in ``images_dir`` paired by file stem with masks in ``masks_dir``.

    Masks are label images (palette, grey or RGB; :func:`read_label_image`) or binary 0/255 masks
    (one object). Every image needs a mask and every mask an image. uint8 images are divided by 255,
    others (e.g. uint16) mapped to [0, 1] by their own 0.5/99.5 percentiles (:class:`FrameStack`).
    """

    def __init__(self, images_dir: PathLike, masks_dir: PathLike) -> None:
        images = _files_by_stem(_folder(images_dir, "folder of images"))
        masks = _files_by_stem(_folder(masks_dir, "folder of masks"))
        if not images:
            raise ValueError(f"{images_dir} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        no_mask = [s for s in images if s not in masks]
        no_image = [s for s in masks if s not in images]
        if no_mask or no_image:
            parts = []
            if no_mask:
                parts.append(f"{len(no_mask)} image(s) without a mask: {_few(no_mask)}")
            if no_image:
                parts.append(f"{len(no_image)} mask(s) without an image: {_few(no_image)}")
            raise ValueError(f"images in {images_dir} and masks in {masks_dir} are paired by file stem, but "
                             + "; ".join(parts) + ": add or remove files so that every stem has both")
        self.pairs = [(images[s], masks[s]) for s in images]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs[_check_index(index, len(self))]
        return _pair(_rgb01(read_image(image_path)), read_label_image(mask_path), image_path.name)


class VOCSource:
    """Pascal VOC instance masks: ``JPEGImages/<id>.jpg`` with ``SegmentationObject/<id>.png``.

    The ids come from ``ImageSets/Segmentation/<split>.txt`` when that file exists, else from every
    PNG in ``SegmentationObject``. The void border (index 255) becomes background.
    """

    def __init__(self, voc_root: PathLike, split: str | None = "train") -> None:
        root = _folder(voc_root, "VOC folder holding JPEGImages and SegmentationObject (e.g. VOCdevkit/VOC2012)")
        self.images_dir, self.masks_dir = root / "JPEGImages", root / "SegmentationObject"
        if not self.masks_dir.is_dir() or not self.images_dir.is_dir():
            raise FileNotFoundError(f"{root} has no JPEGImages and SegmentationObject folders: pass the VOC year "
                                    "folder, e.g. VOCdevkit/VOC2012")
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if split is not None and listing.is_file():
            ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
            missing = [i for i in ids if not (self.masks_dir / f"{i}.png").is_file()
                       or not (self.images_dir / f"{i}.jpg").is_file()]
            if missing:
                raise FileNotFoundError(f"{listing} names {len(missing)} id(s) without both JPEGImages/<id>.jpg and "
                                        f"SegmentationObject/<id>.png: {_few(missing)}; restore the files or the list")
        else:
            masks = sorted(self.masks_dir.glob("*.png"))
            ids = [p.stem for p in masks if (self.images_dir / f"{p.stem}.jpg").is_file()]
        if not ids:
            raise ValueError(f"{root} holds no image with an instance mask (SegmentationObject/<id>.png)")
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        name = self.ids[_check_index(index, len(self))]
        labels = read_label_image(self.masks_dir / f"{name}.png").astype(np.int32)
        labels[labels == 255] = 0
        return _pair(_rgb01(read_image(self.images_dir / f"{name}.jpg")), labels, name)


class DavisFramesSource:
    """Annotated frames of a DAVIS-layout dataset as stills: ``JPEGImages/<resolution>/<seq>/<stem>.jpg``
    with ``Annotations/<resolution>/<seq>/<stem>.png``; frames without an annotation file are skipped.

    ``sequences``: only these (all when None); ``exclude``: never these (e.g. the validation
    sequences); ``every``: keep every n-th annotated frame of each sequence.
    """

    def __init__(self, root: PathLike, sequences: Sequence[str] | None = None, resolution: str = "480p",
                 every: int = 1, exclude: Sequence[str] = ()) -> None:
        root = _folder(root, "DAVIS folder holding JPEGImages and Annotations")
        frames_dir, labels_dir = root / "JPEGImages" / resolution, root / "Annotations" / resolution
        if not frames_dir.is_dir() or not labels_dir.is_dir():
            raise FileNotFoundError(f"{root} has no JPEGImages/{resolution} and Annotations/{resolution}: pass the "
                                    "DAVIS root folder and its resolution (480p or Full-Resolution)")
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        available = sorted(p.name for p in frames_dir.iterdir() if p.is_dir())
        if isinstance(sequences, str) or isinstance(exclude, str):
            raise ValueError("sequences and exclude are lists of sequence names, not one string")
        names = list(available) if sequences is None else list(sequences)
        unknown = [s for s in names if s not in available]
        if unknown:
            raise FileNotFoundError(f"no sequence folder JPEGImages/{resolution}/<name> for {_few(unknown)}; "
                                    f"available: {_few(available, 10)}")
        self.sequences = [s for s in names if s not in set(exclude)]
        self.frames: list[tuple[Path, Path]] = []
        for seq in self.sequences:
            labels = {p.stem: p for p in (labels_dir / seq).glob("*.png")} if (labels_dir / seq).is_dir() else {}
            jpgs = sorted((p for p in (frames_dir / seq).iterdir() if p.suffix.lower() in (".jpg", ".jpeg")),
                          key=lambda p: natural_sort_key(p.name))
            self.frames += [(p, labels[p.stem]) for p in jpgs if p.stem in labels][:: int(every)]
        if not self.frames:
            raise ValueError(f"no annotated frames in {root} for the sequences {_few(self.sequences)}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        frame, label = self.frames[_check_index(index, len(self))]
        return _pair(_rgb01(read_image(frame)), read_label_image(label), f"{frame.parent.name}/{frame.name}")


class TiffStackSource:
    """Frames of an image stack (grey uint8/uint16/float or RGB TIFF, or a folder of frames) that have
    labels in a label stack of the same length. Frames are normalised by :class:`FrameStack` (stack
    percentiles for non-uint8 data) and repeated to 3 channels. The label stack is scanned once, when
    built, for its non-empty frames; the images are read on demand.
    """

    def __init__(self, images_tif: PathLike, labels_tif: PathLike) -> None:
        self.images_path, self.labels_path = Path(images_tif).expanduser(), Path(labels_tif).expanduser()
        self._stack: FrameStack | None = None
        self._labels: Any = None
        frames, labels = self._open()
        if labels.shape[0] != len(frames) or tuple(labels.shape[1:3]) != (frames.height, frames.width):
            raise ValueError(f"{self.labels_path.name} is {tuple(labels.shape)} but {self.images_path.name} has "
                             f"{len(frames)} frames of {frames.height}x{frames.width}: give one label frame per "
                             "image frame")
        self.indices = [t for t in range(labels.shape[0]) if np.any(labels[t])]
        if not self.indices:
            raise ValueError(f"{self.labels_path.name} has no labelled frame (all zero)")

    def _open(self) -> tuple[FrameStack, Any]:
        if self._stack is None:
            self._stack = FrameStack(open_image_stack(self.images_path))
            self._labels = open_label_stack(self.labels_path)
        return self._stack, self._labels

    def __getstate__(self) -> dict[str, Any]:  # worker processes reopen the files (no memmap copies)
        return {**self.__dict__, "_stack": None, "_labels": None}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.indices[_check_index(index, len(self))]
        frames, labels = self._open()
        return _pair(frames[t], np.asarray(labels[t]), f"{self.images_path.name} frame {t}")


class SyntheticSource:
    """``count`` synthetic stills: item i is a frame of a short sequence generated from (seed, i) by
    :func:`synthetic_video` (RGB, 1-4 textured objects), :func:`synthetic_microscopy` (grey cells) or
    :func:`random_fluorescence` (GFP-like nuclei, sparse to dense, uint8 or uint16); grey frames are
    normalised like the plugin's input (:class:`FrameStack`: uint8 / 255, else the sequence's
    percentiles). ``size`` = (height, width)."""

    def __init__(self, flavour: str = "video", count: int = 1000, size: tuple[int, int] = (128, 160),
                 seed: int = 0, num_frames: int = 1) -> None:
        if flavour not in ("video", "microscopy", "fluorescence"):
            raise ValueError(f"flavour must be 'video', 'microscopy' or 'fluorescence', got {flavour!r}")
        if int(count) < 1 or int(num_frames) < 1 or min(size) < 32:
            raise ValueError(f"need count >= 1, num_frames >= 1 and size >= (32, 32); got {count}, {num_frames}, "
                             f"{size}")
        self.flavour, self.count, self.size = flavour, int(count), (int(size[0]), int(size[1]))
        self.seed, self.num_frames = int(seed), int(num_frames)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        i = _check_index(index, self.count)
        rng = np.random.default_rng((self.seed, i))
        seed = int(rng.integers(2**31))
        t = int(rng.integers(self.num_frames))
        h, w = self.size
        if self.flavour == "video":
            seq = synthetic_video(self.num_frames, h, w, int(rng.integers(1, 5)), seed=seed)
        elif self.flavour == "fluorescence":
            seq = random_fluorescence(rng, self.num_frames, h, w)
        else:
            seq = synthetic_microscopy(self.num_frames, h, w, int(rng.integers(3, 10)), seed=seed)
        return FrameStack(seq.frames)[t], seq.labels[t].astype(np.int32)


# --------------------------------------------------------------------------- the dataset


def _block_mean(array: np.ndarray, f: int) -> np.ndarray:
    """(H, W[, C]) -> float32 (H//f, W//f[, C]) means of f x f blocks."""
    h, w = array.shape[0] // f, array.shape[1] // f
    out = np.zeros((h, w, *array.shape[2:]), np.float32)
    for i in range(f):
        for j in range(f):
            out += array[i : h * f : f, j : w * f : f]
    return out * np.float32(1.0 / (f * f))


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
    ``previous_mask`` float32 (H, W) in {0, 1}.
    """

    def __init__(self, sources: Sequence[ImageSource], crop_size: tuple[int, int] = (256, 256), seed: int = 0,
                 length: int = 100_000, box_probability: float = 0.1, paste_probability: float = 0.2,
                 min_object_pixels: int = 64, weights: Sequence[float] | None = None,
                 object_fraction: tuple[float, float] = (0.25, 0.6), max_zoom: float = 4.0,
                 max_tries: int = 30) -> None:
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
            flat = labels.ravel()
            counts = np.bincount(flat if flat.size and flat.min() >= 0 else np.clip(flat, 0, None))
            ids = np.flatnonzero(counts[1:] >= self.min_object_pixels) + 1
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
        return {
            "reference_frame": torch.from_numpy(ref_image),
            "reference_mask": torch.from_numpy((ref_alpha >= 0.5).astype(np.float32)),
            "frame": torch.from_numpy(np.ascontiguousarray(tgt_image)),
            "mask": torch.from_numpy(tgt_mask),
            "previous_mask": torch.from_numpy(previous),
        }
