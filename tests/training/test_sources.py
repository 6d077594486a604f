"""The registry of data source kinds (training.sources): one entry per kind, stills derived from
the video sources, config validation without torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rgmp_model.data.synthetic import synthetic_video
from rgmp_model.data.synthetic_io import save_tiff
from training.config import SourceSpec, config_from_dict
from training.data import build_stage
from training.sources import SOURCE_KINDS, SourceKind, still_source, video_source
from training.still_sources import VideoStills
from training.video_sources import StackVideoSource, SyntheticVideoSource, TiffVideoSource

ROOT = Path(__file__).resolve().parents[2]


def test_video_kinds_give_their_annotated_frames_as_stills(tmp_path: Path) -> None:
    sequence = synthetic_video(num_frames=4, height=32, width=40, num_objects=1, seed=0)
    labels = sequence.labels.copy()
    labels[[0, 2]] = 0
    save_tiff(dataclasses.replace(sequence, labels=labels), tmp_path / "a.tif", tmp_path / "b.tif")
    spec = SourceSpec("tiff", path=str(tmp_path / "a.tif"), labels=str(tmp_path / "b.tif"))
    videos, stills = video_source(spec, 0), still_source(spec, 0)
    assert isinstance(videos, TiffVideoSource) and isinstance(stills, VideoStills)
    assert isinstance(stills.source, TiffVideoSource) and stills.items == ((0, 1), (0, 3))
    np.testing.assert_array_equal(stills[1][1], labels[3])


def test_synthetic_stills_are_one_frame_sequences() -> None:
    spec = SourceSpec("synthetic_microscopy", count=5, num_frames=24, size=(48, 64))
    stills, videos = still_source(spec, 3), video_source(spec, 3)
    assert isinstance(videos, SyntheticVideoSource) and videos.num_frames == 24 and len(videos) == 5
    assert isinstance(stills.source, SyntheticVideoSource) and stills.source.num_frames == 1 and len(stills) == 5
    image, labels = stills[4]
    assert image.shape == (48, 64, 3) and labels.dtype == np.int32 and labels.max() >= 1


def test_still_only_kinds_are_refused_for_videos() -> None:
    stills_only = sorted(name for name, kind in SOURCE_KINDS.items() if kind.video is None)
    assert stills_only == ["voc"]
    with pytest.raises(ValueError, match="a voc source holds still images: use it in pretrain"):
        video_source(SourceSpec("voc", path="x"), 0)


def test_a_folder_source_gives_its_stills_in_pretrain_and_clips_animated_from_them_in_the_video_stage(
        tmp_path: Path) -> None:
    from skimage.io import imsave
    from training.still_clips import StillClipSource
    from training.still_sources import FolderSource

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        imsave(tmp_path / "images" / f"{name}.png", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        mask = np.zeros((40, 48), np.uint8)
        mask[10:30, 12:36] = 255
        imsave(tmp_path / "masks" / f"{name}.png", mask, check_contrast=False)
    spec = SourceSpec("folder", path=str(tmp_path / "images"), masks=str(tmp_path / "masks"), num_frames=6)
    stills, videos = still_source(spec, 0), video_source(spec, 0)
    assert isinstance(stills, FolderSource) and len(stills) == 2
    assert isinstance(videos, StillClipSource) and len(videos) == 2
    sequence = videos.sequence(1)
    assert sequence.frames.shape == (6, 40, 48, 3) and sequence.annotated == tuple(range(6))
    assert np.asarray(sequence.labels[0]).max() == 1


def test_a_new_kind_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, int]] = []

    def stacks(spec: SourceSpec, seed: int) -> StackVideoSource:
        made.append((spec.path, seed))
        sequence = synthetic_video(num_frames=5, height=64, width=64, num_objects=2, seed=seed)
        return StackVideoSource(sequence.frames, sequence.labels)

    monkeypatch.setitem(SOURCE_KINDS, "my_stacks", SourceKind(video=stacks, required=(("path", "my folder"),)))
    with pytest.raises(ValueError, match=r"a my_stacks data source needs 'path' \(my folder\)"):
        SourceSpec("my_stacks")
    for stage in ("pretrain", "video"):
        config = config_from_dict({"stage": stage, "data": {"sources": [{"kind": "my_stacks", "path": "p"}],
                                   "crop_size": [64, 64], "length": 4}})
        dataset, _, _ = build_stage(config)
        assert dataset[0]["frame" if stage == "pretrain" else "frames"].shape[-2:] == (64, 64)
    assert made == [("p", 0), ("p", 0)]
    with pytest.raises(ValueError, match="unknown data source kind 'nope': choose one of folder, voc, .*my_stacks"):
        SourceSpec("nope")


def test_config_validates_kinds_without_importing_torch_or_the_sources() -> None:
    code = ("import sys; from training.config import SourceSpec; SourceSpec('davis', path='x'); "
            "heavy = [m for m in ('torch', 'training.video_sources', 'training.still_sources') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
