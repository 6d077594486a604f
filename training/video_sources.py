"""Annotated videos for stage-2 training and validation: sources that list their sequences
cheaply and open one on demand as a :class:`VideoSequence` of lazy frame / label stacks
(:func:`rgmp_model.io.stack_io.open_image_stack` & co.): :class:`DavisSource`,
:class:`YouTubeVOSSource`, :class:`TiffVideoSource`, :class:`SyntheticVideoSource` and
:class:`StackVideoSource` (one stack in memory). Stage 1 reads their annotated frames as stills
(:class:`training.still_sources.VideoStills`). Torch-free.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rgmp_model.io.label_io import open_label_stack, read_label_image
from rgmp_model.inference.labels import labelled_frames
from rgmp_model.io.stack_io import FrameFolder, PathLike, LazyFrames, natural_sort_key, open_image_stack
from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_fluorescence import fluorescence_cell_range, random_fluorescence
from rgmp_model.data.synthetic_low_contrast import random_low_contrast
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy

__all__ = [
    "VideoSequence", "VideoSource", "DavisSource", "YouTubeVOSSource", "TiffVideoSource",
    "SyntheticVideoSource", "StackVideoSource", "validation_sequences",
]

SYNTHETIC_FLAVOURS = ("video", "microscopy", "fluorescence", "low_contrast")


@dataclass(frozen=True, eq=False)
class VideoSequence:
    """One annotated video: ``frames`` (T,H,W) or (T,H,W,C) and ``labels`` (T,H,W) integer lazy
    array-likes (0 = background); ``annotated``: sorted indices of the frames with ground truth
    (labels of the other frames are all 0 and mean "unknown", not "background"). ``group``: the
    validation set it belongs to (validation scores each group, then averages the groups)."""

    name: str
    frames: Any
    labels: Any
    annotated: tuple[int, ...]
    group: str = ""

    def __post_init__(self) -> None:
        fs, ls = tuple(self.frames.shape), tuple(self.labels.shape)
        if len(ls) != 3 or len(fs) not in (3, 4) or fs[:3] != ls:
            raise ValueError(f"sequence {self.name!r}: frames {fs} and labels {ls} do not match: labels must be "
                             "(T,H,W), one label frame per image frame")
        annotated = tuple(int(t) for t in self.annotated)
        if list(annotated) != sorted(set(annotated)) or any(not 0 <= t < ls[0] for t in annotated):
            raise ValueError(f"sequence {self.name!r}: annotated must be sorted distinct frame indices in 0..{ls[0] - 1}")
        object.__setattr__(self, "annotated", annotated)


class VideoSource(Protocol):
    """What :class:`VideoClipDataset` needs from a source."""

    names: tuple[str, ...]

    def __len__(self) -> int: ...

    def sequence(self, i: int) -> VideoSequence: ...

    def annotated(self, i: int) -> tuple[int, ...]: ...


def validation_sequences(source: VideoSource) -> list[VideoSequence]:
    """All sequences of ``source`` (whole, lazy), e.g. the held-out sequences for validation."""
    return [source.sequence(i) for i in range(len(source))]


def _lru(cache: OrderedDict, key: Any, size: int, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made by ``make()`` when missing; the least recently used beyond ``size`` are dropped."""
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = make()
        while len(cache) > size:
            cache.popitem(last=False)
    return cache[key]


class _CachedSource:
    """Base: ``names``, ``len`` and ``sequence(i)`` with a small LRU of opened sequences
    (opening a folder reads its first file; a cache is dropped when the source is pickled)."""

    names: tuple[str, ...] = ()

    def __init__(self, cache_size: int) -> None:
        if int(cache_size) < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[int, VideoSequence] = OrderedDict()

    def __len__(self) -> int:
        return len(self.names)

    def sequence(self, i: int) -> VideoSequence:
        """Sequence ``i`` (0 <= i < len) with lazy frames and labels."""
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"sequence index {i} is out of range for a source of {len(self)} sequences")
        i = int(i) % len(self)
        return _lru(self._cache, i, self.cache_size, lambda: self._open(i))

    def annotated(self, i: int) -> tuple[int, ...]:
        """The annotated frames of sequence ``i`` (``sequence(i).annotated``; generated sources
        answer without generating the sequence)."""
        return self.sequence(i).annotated

    def _open(self, i: int) -> VideoSequence:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": OrderedDict()}


class _SparseLabels(LazyFrames):
    """(T,H,W) labels of a folder of frames where only some frames have an annotation file;
    the others read as zeros."""

    def __init__(self, annotations: FrameFolder, num_frames: int, positions: dict[int, int]) -> None:
        self.annotations, self.positions = annotations, positions
        self.shape = (num_frames, *annotations.shape[1:])
        self.dtype = annotations.dtype

    def _read_frame(self, t: int) -> np.ndarray:
        j = self.positions.get(t)
        return np.zeros(self.shape[1:], self.dtype) if j is None else self.annotations[j]


def _folder_sequence(name: str, image_dir: Path, label_dir: Path) -> VideoSequence:
    """Frames of ``image_dir`` + annotation files of ``label_dir`` matched by file stem."""
    frames = FrameFolder(image_dir)
    annotations = FrameFolder(label_dir, reader=read_label_image)
    index = {f.stem: t for t, f in enumerate(frames.files)}
    positions = {index[f.stem]: j for j, f in enumerate(annotations.files) if f.stem in index}
    if not positions:
        raise ValueError(f"no annotation file in {label_dir} is named like a frame in {image_dir}: name "
                         "annotations like their frames (00000.jpg -> 00000.png)")
    dense = len(positions) == len(frames) and all(t == j for t, j in positions.items())
    labels = annotations if dense else _SparseLabels(annotations, len(frames), positions)
    return VideoSequence(name, frames, labels, tuple(sorted(positions)))


def _select_sequences(image_root: Path, label_root: Path, sequences: Sequence[str] | None,
                      exclude: Sequence[str]) -> tuple[str, ...]:
    """Sequence folders of ``image_root`` that have annotations, chosen and excluded by name."""
    on_disk = sorted((p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=natural_sort_key)
    annotated = {n for n in on_disk if (label_root / n).is_dir()}
    excluded = {exclude} if isinstance(exclude, str) else set(exclude)
    unknown = sorted(excluded.difference(on_disk))
    if unknown:
        raise ValueError(f"exclude names sequences that are not in {image_root}: {', '.join(unknown)}; check the spelling")
    if sequences is None:
        chosen = [n for n in on_disk if n in annotated]
    else:
        chosen = [sequences] if isinstance(sequences, str) else list(sequences)
        missing = [n for n in chosen if n not in annotated]
        if missing:
            raise FileNotFoundError(f"sequences {', '.join(missing[:5])} have no frame folder in {image_root} or no "
                                    f"annotation folder in {label_root}: check the names and the root folder")
    names = tuple(n for n in chosen if n not in excluded)
    if not names:
        raise ValueError(f"no annotated sequences left in {image_root} (after exclude): check the root folder")
    return names


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder: {what}")
    return path


class _FolderSource(_CachedSource):
    image_root: Path
    label_root: Path

    def _open(self, i: int) -> VideoSequence:
        name = self.names[i]
        return _folder_sequence(name, self.image_root / name, self.label_root / name)


class DavisSource(_FolderSource):
    """DAVIS layout: ``root/JPEGImages/<resolution>/<seq>/*.jpg`` + ``root/Annotations/<resolution>/<seq>/*.png``
    (palette PNGs, or binary 0/255 masks = one object). ``sequences``: names (e.g. those of
    ``ImageSets/2017/train.txt``), default all folders with annotations. ``exclude``: names to
    leave out (e.g. the run's validation sequences); unknown names are an error."""

    def __init__(self, root: PathLike, sequences: Sequence[str] | None = None, exclude: Sequence[str] = (),
                 resolution: str = "480p", cache_size: int = 256) -> None:
        super().__init__(cache_size)
        hint = f"root must be a DAVIS folder with JPEGImages/{resolution}/<sequence>/ and Annotations/{resolution}/<sequence>/"
        root = _require_dir(Path(root).expanduser(), hint)
        self.image_root = _require_dir(root / "JPEGImages" / resolution, hint)
        self.label_root = _require_dir(root / "Annotations" / resolution, hint)
        self.names = _select_sequences(self.image_root, self.label_root, sequences, exclude)


class YouTubeVOSSource(_FolderSource):
    """YouTube-VOS layout: ``root/<split_dir>/JPEGImages/<seq>/*.jpg`` + ``root/<split_dir>/Annotations/<seq>/*.png``.

    ``root`` may also be the split folder itself. Frames come from ``images_split_dir`` when given
    (e.g. ``"train_all_frames"``, whose frames are annotated every 5th only): ``annotated`` lists
    the frames whose stem has an annotation file; the others stay in the sequence.
    """

    def __init__(self, root: PathLike, split_dir: str = "train", sequences: Sequence[str] | None = None,
                 exclude: Sequence[str] = (), images_split_dir: str | None = None, cache_size: int = 256) -> None:
        super().__init__(cache_size)
        root = Path(root).expanduser()
        hint = "root must hold <split_dir>/JPEGImages/<sequence>/ and <split_dir>/Annotations/<sequence>/"
        split = root if (root / "Annotations").is_dir() and not (root / split_dir).is_dir() else root / split_dir
        images = split if images_split_dir is None else root / images_split_dir
        self.image_root = _require_dir(images / "JPEGImages", hint)
        self.label_root = _require_dir(split / "Annotations", hint)
        self.names = _select_sequences(self.image_root, self.label_root, sequences, exclude)


class TiffVideoSource(_CachedSource):
    """Pairs of (image stack, label stack) TIFFs (grey e.g. uint16, or RGB): one sequence each,
    named after the image file. ``annotated``: the frames with any label (read once, when the
    sequence is first opened), or every frame with ``all_annotated=True``."""

    def __init__(self, pairs: Sequence[tuple[PathLike, PathLike]], all_annotated: bool = False,
                 names: Sequence[str] | None = None, exclude: Sequence[str] = (), cache_size: int = 8) -> None:
        super().__init__(cache_size)
        pairs = [(Path(a).expanduser(), Path(b).expanduser()) for a, b in pairs]
        if not pairs:
            raise ValueError("pairs is empty: give (images.tif, labels.tif) pairs")
        for path in (p for pair in pairs for p in pair):
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist: pairs must be (image stack, label stack) files")
        if names is None:
            stems = [a.stem for a, _ in pairs]
            names = [s if stems.count(s) == 1 else f"{s}_{i}" for i, s in enumerate(stems)]
        if len(names) != len(pairs) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(pairs)} distinct names, one per pair")
        unknown = sorted(set(exclude).difference(names))
        if unknown:
            raise ValueError(f"exclude names unknown sequences {', '.join(unknown)}: use names from {list(names)}")
        kept = [k for k, n in enumerate(names) if n not in set(exclude)]
        self.pairs = [pairs[k] for k in kept]
        self.names = tuple(names[k] for k in kept)
        self.all_annotated = bool(all_annotated)
        self._annotated: dict[int, tuple[int, ...]] = {}

    def _open(self, i: int) -> VideoSequence:
        frames, labels = open_image_stack(self.pairs[i][0]), open_label_stack(self.pairs[i][1])
        if i not in self._annotated:
            count = min(len(frames), len(labels))  # unequal lengths: VideoSequence says what to fix
            self._annotated[i] = tuple(range(count)) if self.all_annotated else labelled_frames(labels)
        if not self._annotated[i]:
            raise ValueError(f"{self.pairs[i][1]} has no labelled frame: label at least one frame or drop the pair")
        return VideoSequence(self.names[i], frames, labels, self._annotated[i])


class SyntheticVideoSource(_CachedSource):
    """``count`` generated sequences (:func:`~rgmp_model.data.synthetic.synthetic_video` for ``flavour="video"``,
    :func:`~rgmp_model.data.synthetic_microscopy.synthetic_microscopy` for ``"microscopy"``,
    :func:`~rgmp_model.data.synthetic_fluorescence.random_fluorescence` for ``"fluorescence"``: GFP-like
    nuclei, uint8 or uint16; :func:`~rgmp_model.data.synthetic_low_contrast.random_low_contrast` for
    ``"low_contrast"``: large nuclei 1.1-1.6x as bright as their surroundings), each made from
    ``(seed, i)`` on demand (0.1-0.3 s each; the last ``cache_size`` are kept). ``objects``: inclusive
    range of objects / cells / nuclei per sequence (default (1, 4) / (3, 10) /
    :func:`~rgmp_model.data.synthetic_fluorescence.fluorescence_cell_range` (sparse to dense, drawn
    log-uniformly) / (1, 6)). All frames annotated."""

    def __init__(self, flavour: str = "video", count: int = 64, num_frames: int = 24, size: tuple[int, int] = (240, 320),
                 seed: int = 0, objects: tuple[int, int] | None = None, cache_size: int = 4) -> None:
        super().__init__(cache_size)
        if flavour not in SYNTHETIC_FLAVOURS:
            raise ValueError(f"flavour must be one of {', '.join(SYNTHETIC_FLAVOURS)}, got {flavour!r}")
        defaults = {"video": (1, 4), "microscopy": (3, 10), "fluorescence": fluorescence_cell_range(*size),
                    "low_contrast": (1, 6)}
        lo, hi = objects if objects is not None else defaults[flavour]
        if int(count) < 1 or int(num_frames) < 1 or min(size) < 16 or not 1 <= lo <= hi:
            raise ValueError("need count >= 1, num_frames >= 1, size >= (16, 16) and objects = (lo, hi) with 1 <= lo <= hi")
        self.flavour, self.num_frames, self.seed = flavour, int(num_frames), int(seed)
        self.size, self.objects = (int(size[0]), int(size[1])), (int(lo), int(hi))
        self.names = tuple(f"synthetic_{flavour}_{self.seed}_{i:04d}" for i in range(int(count)))

    def annotated(self, i: int) -> tuple[int, ...]:
        """Every frame (known without generating the sequence)."""
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"sequence index {i} is out of range for a source of {len(self)} sequences")
        return tuple(range(self.num_frames))

    def _open(self, i: int) -> VideoSequence:
        rng = np.random.default_rng((self.seed, i))
        if self.flavour == "fluorescence":
            seq = random_fluorescence(rng, self.num_frames, self.size[0], self.size[1], self.objects)
            return VideoSequence(self.names[i], seq.frames, seq.labels, tuple(range(self.num_frames)))
        if self.flavour == "low_contrast":
            seq = random_low_contrast(rng, self.num_frames, self.size[0], self.size[1], self.objects)
            return VideoSequence(self.names[i], seq.frames, seq.labels, tuple(range(self.num_frames)))
        n, gen_seed = int(rng.integers(self.objects[0], self.objects[1] + 1)), int(rng.integers(2**31))
        make = synthetic_video if self.flavour == "video" else synthetic_microscopy
        seq = make(self.num_frames, self.size[0], self.size[1], n, seed=gen_seed)
        return VideoSequence(self.names[i], seq.frames, seq.labels, tuple(range(self.num_frames)))


class StackVideoSource(_CachedSource):
    """One stack given as arrays (numpy, dask, a lazy stack; e.g. the fine-tuning stack) as a
    one-sequence source: ``frames`` (T,H,W) or (T,H,W,C), ``labels`` (T,H,W). ``annotated``: the
    frames with ground truth; default :func:`~rgmp_model.inference.labels.labelled_frames` (the labels are
    scanned once, frame by frame, when built)."""

    def __init__(self, frames: Any, labels: Any, annotated: Sequence[int] | None = None, name: str = "stack") -> None:
        super().__init__(cache_size=1)
        self.frames, self.labels, self.names = frames, labels, (str(name),)
        self._annotated = labelled_frames(labels) if annotated is None else tuple(int(t) for t in annotated)
        self.sequence(0)  # checks the shapes now

    def _open(self, i: int) -> VideoSequence:
        return VideoSequence(self.names[0], self.frames, self.labels, self._annotated)
