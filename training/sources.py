"""The registry of data source kinds: ``SOURCE_KINDS[kind]`` builds the sources of a config's
``{kind: ...}`` entry (a :class:`SourceSpec`, checked against the registry when made).

A kind builds annotated videos (stage 2, validation); its stills (stage 1) are the annotated
frames of those videos (:class:`~training.still_sources.VideoStills`), unless it has stills of
its own: folder (whose videos, in the video stage, are its stills animated into clips by
:class:`~training.still_clips.StillClipSource`) and voc (stills only). Registering a new kind is
one entry of ``SOURCE_KINDS``.

Importing this module is cheap and torch-free (``training.config`` validates kinds with it): the
factories import the source classes when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .still_sources import ImageSource
    from .video_sources import VideoSource

__all__ = ["SOURCE_KINDS", "SourceKind", "SourceSpec", "still_source", "video_source"]

Factory = Callable[["SourceSpec", int], Any]  # (spec, seed) -> source


@dataclass(frozen=True)
class SourceSpec:
    """One data source. ``kind``: folder (images + ``masks`` folders), voc (Pascal VOC root),
    davis (DAVIS root; ``sequences``/``exclude`` select sequences, ``resolution`` the
    JPEGImages/Annotations sub-folder, e.g. 360p), youtube_vos (a YouTube-VOS split folder), tiff
    (image stack ``path`` + label stack ``labels``), synthetic_video, synthetic_microscopy,
    synthetic_fluorescence or synthetic_low_contrast (``count`` generated sequences); the kinds and the fields each needs are
    registered in :data:`training.sources.SOURCE_KINDS`. ``weight``: sampling weight."""

    kind: str
    path: str | None = None
    masks: str | None = None
    labels: str | None = None
    sequences: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    count: int = 64
    num_frames: int = 24
    size: tuple[int, int] = (240, 320)
    weight: float = 1.0
    resolution: str = "480p"

    def __post_init__(self) -> None:
        kind = SOURCE_KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown data source kind {self.kind!r}: choose one of {', '.join(SOURCE_KINDS)}")
        for name, what in kind.required:
            if not getattr(self, name):
                raise ValueError(f"a {self.kind} data source needs '{name}' ({what})")


@dataclass(frozen=True)
class SourceKind:
    """How one kind of source is built from its spec and a seed. ``video``: (spec, seed) -> a
    video source (None: a kind of stills only); ``stills``: (spec, seed) -> a still source
    (None: the annotated frames of ``video``); ``required``: (spec field, what it must hold)
    pairs that a spec of this kind must set."""

    video: Factory | None = None
    stills: Factory | None = None
    required: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.video is None and self.stills is None:
            raise ValueError("a source kind needs a video or a stills factory")


def video_source(spec: SourceSpec, seed: int) -> VideoSource:
    """The annotated videos of ``spec`` (stage 2 and validation)."""
    kind = SOURCE_KINDS[spec.kind]
    if kind.video is None:
        raise ValueError(f"a {spec.kind} source holds still images: use it in pretrain, not in the video stage "
                         "or in validation")
    return kind.video(spec, seed)


def still_source(spec: SourceSpec, seed: int) -> ImageSource:
    """The stills of ``spec`` (stage 1): its own, or the annotated frames of its videos."""
    kind = SOURCE_KINDS[spec.kind]
    if kind.stills is not None:
        return kind.stills(spec, seed)
    from .still_sources import VideoStills

    return VideoStills(video_source(spec, seed))


def _folder(spec: SourceSpec, seed: int) -> Any:
    from .still_sources import FolderSource

    return FolderSource(spec.path, spec.masks)


def _folder_clips(spec: SourceSpec, seed: int) -> Any:
    from .still_clips import StillClipSource

    return StillClipSource(_folder(spec, seed), num_frames=spec.num_frames, seed=seed)


def _voc(spec: SourceSpec, seed: int) -> Any:
    from .still_sources import VOCSource

    return VOCSource(spec.path)


def _davis(spec: SourceSpec, seed: int) -> Any:
    from .video_sources import DavisSource

    return DavisSource(spec.path, sequences=spec.sequences, exclude=spec.exclude, resolution=spec.resolution)


def _youtube_vos(spec: SourceSpec, seed: int) -> Any:
    from .video_sources import YouTubeVOSSource

    return YouTubeVOSSource(spec.path, sequences=spec.sequences, exclude=spec.exclude)


def _tiff(spec: SourceSpec, seed: int) -> Any:
    from .video_sources import TiffVideoSource

    return TiffVideoSource([(spec.path, spec.labels)])


def _synthetic(flavour: str) -> SourceKind:
    """``count`` generated sequences of ``num_frames``; as stills, ``count`` one-frame sequences
    (a still costs one generated frame, not a whole sequence)."""

    def build(spec: SourceSpec, seed: int, num_frames: int) -> Any:
        from .video_sources import SyntheticVideoSource

        return SyntheticVideoSource(flavour, count=spec.count, num_frames=num_frames, size=spec.size, seed=seed)

    def stills(spec: SourceSpec, seed: int) -> Any:
        from .still_sources import VideoStills

        return VideoStills(build(spec, seed, 1))

    return SourceKind(video=lambda spec, seed: build(spec, seed, spec.num_frames), stills=stills)


_PATH = ("path", "the dataset's root folder")

SOURCE_KINDS: dict[str, SourceKind] = {
    "folder": SourceKind(video=_folder_clips, stills=_folder, required=(("path", "the folder of images"),
                                                   ("masks", "the folder of mask images"))),
    "voc": SourceKind(stills=_voc, required=(("path", "the VOC year folder, e.g. VOCdevkit/VOC2012"),)),
    "davis": SourceKind(video=_davis, required=(_PATH,)),
    "youtube_vos": SourceKind(video=_youtube_vos, required=(("path", "the YouTube-VOS split folder"),)),
    "tiff": SourceKind(video=_tiff, required=(("path", "the image stack"), ("labels", "the label stack"))),
    "synthetic_video": _synthetic("video"),
    "synthetic_microscopy": _synthetic("microscopy"),
    "synthetic_fluorescence": _synthetic("fluorescence"),
    "synthetic_low_contrast": _synthetic("low_contrast"),
}
