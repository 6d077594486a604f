"""The registry of data source kinds: ``SOURCE_KINDS[kind]`` builds the sources of a config's
``{kind: ...}`` entry (:class:`training.config.SourceSpec`).

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
    from .config import SourceSpec
    from .still_sources import ImageSource
    from .video_sources import VideoSource

__all__ = ["SOURCE_KINDS", "SourceKind", "still_source", "video_source"]

Factory = Callable[["SourceSpec", int], Any]  # (spec, seed) -> source


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
