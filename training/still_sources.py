"""Sources of still images with instance labels, for stage-1 training (:mod:`rgmp_model.adapt.pairs`).

A *still source* is a small sequence of stills: ``len(source)`` and ``source[i] -> (image, labels)``
with image float32 (H, W, 3) in [0, 1] and labels int32 (H, W) (int64 / uint64 for wider ids), 0 = background. Sources list
their files when built and read an image only when it is asked for.

Kinds of stills only: :class:`FolderSource` (image + mask folders) and :class:`VOCSource`.
Every video source (DAVIS, YouTube-VOS, TIFF stacks, synthetic sequences; see
:mod:`training.video_sources`) gives stills through :class:`VideoStills`, the view over its
annotated frames. Torch-free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rgmp_model.adapt.pairs import ImageSource
from rgmp_model.inference.frames import FrameStack
from rgmp_model.io.formats import frame_suffixes
from rgmp_model.io.label_io import read_label_image
from rgmp_model.io.stack_io import PathLike, natural_sort_key, read_image

from .video_sources import VideoSequence, VideoSource, _lru

__all__ = ["FolderSource", "ImageSource", "VOCSource", "VideoStills"]


def _rgb01(image: np.ndarray) -> np.ndarray:
    """One image (H,W) / (H,W,C) of any numeric type -> float32 (H,W,3) in [0, 1] (via FrameStack)."""
    return FrameStack(np.asarray(image)[np.newaxis])[0]


def _pair(image: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"{name}: the labels have shape {labels.shape} but the image is {image.shape[:2]}; "
                         "each mask must have the size of its image")
    if np.can_cast(labels.dtype, np.int32):
        return image, labels.astype(np.int32, copy=False)
    return image, labels if labels.dtype == np.uint64 else labels.astype(np.int64, copy=False)  # wider ids kept


def _folder(path: PathLike, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is not a folder: pass the {what}")
    return p


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir(), key=lambda q: natural_sort_key(q.name)):
        if p.is_file() and p.suffix.lower() in frame_suffixes() and not p.name.startswith("."):
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
            raise ValueError(f"{images_dir} holds no image files ({', '.join(frame_suffixes())})")
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


class VideoStills:
    """The annotated frames of a video source as stills: item i -> (image, labels) of frame
    ``items[i] = (sequence index, frame index)``, sequence by sequence in frame order.

    The frames are normalised like the plugin's input, per sequence (:class:`FrameStack`: uint8 /
    255, other types by the sequence's percentiles, estimated once per opened sequence). Only
    ``source.annotated(i)`` is asked for when built (cheap for generated sources); images and
    labels are read when asked for. ``every``: keep every n-th annotated frame of each sequence.
    """

    def __init__(self, source: VideoSource, every: int = 1, cache_size: int = 16) -> None:
        if int(every) < 1 or int(cache_size) < 1:
            raise ValueError(f"every and cache_size must be >= 1, got {every} and {cache_size}")
        self.source, self.cache_size = source, int(cache_size)
        self.items: tuple[tuple[int, int], ...] = tuple(
            (s, t) for s in range(len(source)) for t in source.annotated(s)[:: int(every)])
        self._stacks: OrderedDict[int, tuple[VideoSequence, FrameStack]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the sequences
        return {**self.__dict__, "_stacks": OrderedDict()}

    def _open(self, s: int) -> tuple[VideoSequence, FrameStack]:
        def make() -> tuple[VideoSequence, FrameStack]:
            seq = self.source.sequence(s)
            return seq, FrameStack(seq.frames)

        return _lru(self._stacks, s, self.cache_size, make)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        s, t = self.items[_check_index(index, len(self))]
        seq, stack = self._open(s)
        return _pair(stack[t], np.asarray(seq.labels[t]), f"{seq.name} frame {t}")
