"""rgmp propagate on microscopy stacks: z both ways, TZYX along either axis, channels, compressed
TIFF and zarr input, on-disk output and the Cell Tracking Challenge layout."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from rgmp_model import PropagationOptions, open_session
from rgmp_model.cli import main
from rgmp_model.data.synthetic_microscopy import synthetic_microscopy
from rgmp_model.inference import session as session_module
from rgmp_model.io.ctc_export import read_ctc
from tests.helpers.ctc_checks import assert_valid_ctc

H = W = 64


@pytest.fixture(scope="module")
def cells():
    return synthetic_microscopy(num_frames=7, height=H, width=W, num_cells=3, seed=2)


def engine(checkpoint, frames, keyframes, direction="both", **options) -> dict[int, np.ndarray]:
    """What open_session gives on the in-memory array: {frame: labels}."""
    session = open_session(checkpoint, np.asarray(frames), PropagationOptions(direction=direction, device="cpu", **options))
    session.set_keyframes(keyframes)
    return {t: labels for t, labels, _ in session.propagate()}


def propagate(*args) -> int:
    return main(["propagate", *map(str, args), "--device", "cpu"])


def recorded_sessions(monkeypatch) -> list:
    """The sessions the CLI opens from now on, in order (open_session wrapped for the test)."""
    seen = []
    real = session_module.open_session

    def recording(model, frames, options):
        session = real(model, frames, options)
        seen.append(session)
        return session

    monkeypatch.setattr(session_module, "open_session", recording)
    return seen


def volume(cells) -> tuple[np.ndarray, np.ndarray]:
    """A (T=4, Z=3, H, W) stack and its labels: slice z of time t is frame t + z, shifted by z px."""
    frames = np.stack([[np.roll(cells.frames[t + z], z, axis=1) for z in range(3)] for t in range(4)])
    labels = np.stack([[np.roll(cells.labels[t + z], z, axis=1) for z in range(3)] for t in range(4)])
    return frames, labels.astype(np.uint16)


def test_a_z_stack_is_propagated_up_and_down_from_a_middle_slice(tmp_path, checkpoint, cells) -> None:
    images, labels = tmp_path / "zstack.tif", tmp_path / "slice3.tif"
    tifffile.imwrite(images, cells.frames, metadata={"axes": "ZYX"})
    tifffile.imwrite(labels, cells.labels[3])  # one label image for slice 3
    both, forward = tmp_path / "both.tif", tmp_path / "forward.tif"
    assert propagate(images, "--labels", labels, "--reference-frame", 3, "--checkpoint", checkpoint, "--out", both) == 0
    assert propagate(images, "--labels", labels, "--reference-frame", 3, "--checkpoint", checkpoint, "--out", forward,
                     "--direction", "forward") == 0
    result = tifffile.imread(both)
    expected = engine(checkpoint, cells.frames, {3: cells.labels[3]})
    assert sorted(expected) == list(range(7))
    for z in range(7):
        np.testing.assert_array_equal(result[z], expected[z])
        assert result[z].any(), f"slice {z} is not labelled"  # above (0-2) and below (4-6) the annotated one
    np.testing.assert_array_equal(result[3], cells.labels[3])
    only_up = tifffile.imread(forward)
    assert not only_up[:3].any() and all(only_up[z].any() for z in range(3, 7))


@pytest.mark.parametrize("axis", ["t", "1"])  # "1": the z axis of a TZYX file, by number
def test_tzyx_is_propagated_along_either_axis_each_index_from_its_own_keyframe(tmp_path, checkpoint, cells, axis) -> None:
    frames, truth = volume(cells)
    images, labels, out = tmp_path / "tzyx.tif", tmp_path / "tzyx_labels.tif", tmp_path / "out.tif"
    tifffile.imwrite(images, frames, photometric="minisblack", metadata={"axes": "TZYX"})
    along = 0 if axis == "t" else 1
    keyed = np.zeros_like(truth)
    for i in range(frames.shape[1 - along]):  # index i of the other axis: its keyframe at i % length
        key = i % frames.shape[along]
        index = (key, i) if along == 0 else (i, key)
        keyed[index] = truth[index]
    with warnings.catch_warnings():  # no axes in the file: guessed TZYX; without photometric tifffile
        warnings.simplefilter("ignore", DeprecationWarning)  # stores Z = 3 as planar "RGB": still read as Z
        tifffile.imwrite(labels, keyed, **({} if axis == "t" else {"photometric": "minisblack"}))
    assert propagate(images, "--labels", labels, "--axis", axis, "--checkpoint", checkpoint, "--out", out) == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TZYX"
        result = tif.asarray()
    assert result.shape == frames.shape
    for i in range(frames.shape[1 - along]):
        stack = frames[:, i] if along == 0 else frames[i]
        key = i % frames.shape[along]
        keyframe = truth[key, i] if along == 0 else truth[i, key]
        expected = engine(checkpoint, stack, {key: keyframe})
        got = result[:, i] if along == 0 else result[i]
        np.testing.assert_array_equal(got[key], keyframe)
        for t, labels_t in expected.items():
            np.testing.assert_array_equal(got[t], labels_t)


def test_one_label_stack_for_one_index_with_at_and_axes_named_on_the_command_line(tmp_path, checkpoint, cells) -> None:
    frames, truth = volume(cells)
    images, labels, out = tmp_path / "ztyx.tif", tmp_path / "one.tif", tmp_path / "out.zarr"
    tifffile.imwrite(images, frames.swapaxes(0, 1), photometric="minisblack")  # (Z, T, H, W), axes not in the file
    tifffile.imwrite(labels, truth[0, 2])  # slice z = 2 at t = 0
    args = [images, "--labels", labels, "--checkpoint", checkpoint, "--out", out]
    assert propagate(*args) == 2  # one label image, three z stacks: which one?
    assert propagate(*args, "--axes", "ZTYX", "--at", 2) == 0
    result = np.asarray(zarr.open(str(out), mode="r"))
    assert result.shape == (3, 4, H, W) and not result[:2].any()
    expected = engine(checkpoint, frames[:, 2], {0: truth[0, 2]})
    for t, labels_t in expected.items():
        np.testing.assert_array_equal(result[2, t], labels_t)


def test_a_channel_axis_takes_the_chosen_channel(tmp_path, checkpoint, cells, capsys) -> None:
    two = np.stack([cells.frames, cells.frames[:, ::-1]], axis=1)  # (T, C=2, H, W)
    images, labels, out = tmp_path / "tcyx.tif", tmp_path / "labels.tif", tmp_path / "out.tif"
    tifffile.imwrite(images, two[:, None], imagej=True, metadata={"axes": "TZCYX"})
    tifffile.imwrite(labels, cells.labels[0][::-1])
    assert propagate(images, "--labels", labels, "--checkpoint", checkpoint, "--out", out) == 2
    assert "--channel 0..1" in capsys.readouterr().err
    assert propagate(images, "--labels", labels, "--checkpoint", checkpoint, "--out", out, "--channel", 1) == 0
    result = tifffile.imread(out)
    expected = engine(checkpoint, two[:, 1], {0: cells.labels[0][::-1]})
    assert result.shape == (7, H, W)
    for t, labels_t in expected.items():
        np.testing.assert_array_equal(result[t], labels_t)


@pytest.mark.parametrize("compression", ["lzw", "zlib"])  # zlib = deflate
def test_compressed_tiff_input_gives_the_output_of_the_uncompressed_one(tmp_path, checkpoint, cells, compression) -> None:
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, cells.labels[2])
    outputs = []
    for name, kwargs in (("plain", {}), ("packed", {"compression": compression})):
        tifffile.imwrite(tmp_path / f"{name}.tif", cells.frames, photometric="minisblack", **kwargs)
        out = tmp_path / f"{name}_out.tif"
        assert propagate(tmp_path / f"{name}.tif", "--labels", labels, "--reference-frame", 2,
                         "--checkpoint", checkpoint, "--out", out) == 0
        outputs.append(tifffile.imread(out))
    np.testing.assert_array_equal(outputs[1], outputs[0])
    assert outputs[0][0].any() and outputs[0][6].any()


def test_zarr_input_and_zarr_output_equal_the_in_memory_run(tmp_path, checkpoint, cells) -> None:
    images, labels, out = tmp_path / "movie.zarr", tmp_path / "labels.tif", tmp_path / "result.zarr"
    array = zarr.create_array(str(images), shape=cells.frames.shape, chunks=(1, H, W), dtype=cells.frames.dtype)
    array[:] = cells.frames
    keyed = np.zeros_like(cells.labels)
    keyed[[1, 5]] = cells.labels[[1, 5]]
    tifffile.imwrite(labels, keyed)
    assert propagate(images, "--labels", labels, "--checkpoint", checkpoint, "--out", out) == 0
    written = zarr.open(str(out), mode="r")
    assert written.chunks == (1, H, W)  # one chunk per frame: written as the frames came
    expected = engine(checkpoint, cells.frames, {1: cells.labels[1], 5: cells.labels[5]})
    result = np.asarray(written)
    for t in range(7):
        np.testing.assert_array_equal(result[t], expected[t])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the temporary store was renamed


def same_labels_modulo_relabelling(read: np.ndarray, expected: np.ndarray, tracks) -> None:
    """Each frame's objects are the same pixels; an id renamed (a gap closed, a division) names a
    track that descends from the original id."""
    parent = {t.label: t.parent for t in tracks}
    for t in range(len(expected)):
        np.testing.assert_array_equal(read[t] > 0, expected[t] > 0)
        for old in np.unique(expected[t][expected[t] > 0]):
            new = np.unique(read[t][expected[t] == old])
            assert len(new) == 1, (t, old, new)
            label = int(new[0])
            while label != old and label in parent and parent[label]:
                label = parent[label]
            assert label == old, (t, old, int(new[0]))


def test_ctc_output_rereads_as_the_same_labels_with_a_valid_res_track(tmp_path, checkpoint, cells) -> None:
    images, labels, out = tmp_path / "cells.tif", tmp_path / "labels.tif", tmp_path / "01_RES"
    tifffile.imwrite(images, cells.frames)
    tifffile.imwrite(labels, cells.labels[3])
    assert propagate(images, "--labels", labels, "--reference-frame", 3, "--checkpoint", checkpoint,
                     "--format", "ctc", "--out", out) == 0
    read, tracks = read_ctc(out)
    assert read.shape == (7, H, W) and read.dtype == np.uint16
    assert_valid_ctc(read, tracks)
    expected = engine(checkpoint, cells.frames, {3: cells.labels[3]})
    same_labels_modulo_relabelling(read, np.stack([expected[t] for t in range(7)]), tracks)


def test_region_options_reach_the_session_and_divisions_become_ctc_parents(tmp_path, checkpoint, cells, monkeypatch) -> None:
    seen = recorded_sessions(monkeypatch)
    images, labels, out = tmp_path / "cells.tif", tmp_path / "labels.tif", tmp_path / "res"
    tifffile.imwrite(images, cells.frames)
    tifffile.imwrite(labels, cells.labels[0])
    assert propagate(images, "--labels", labels, "--checkpoint", checkpoint, "--format", "ctc", "--out", out,
                     "--region", "on", "--split-divisions") == 0
    (session,) = seen
    assert session.options.region == "on" and session.options.split_divisions
    read, tracks = read_ctc(out)
    assert_valid_ctc(read, tracks)
    parent_of = {t.label: t.parent for t in tracks}
    for child, parent in session.divisions.items():  # a daughter's track descends from its mother's
        label = parent_of.get(child, 0)
        while label and label != parent:
            label = parent_of.get(label, 0)
        assert label == parent, (child, parent, tracks)


def test_outputs_that_cannot_hold_the_result_or_would_overwrite_an_input_are_refused(tmp_path, checkpoint, cells, capsys) -> None:
    frames, truth = volume(cells)
    images, labels = tmp_path / "tzyx.tif", tmp_path / "tzyx_labels.tif"
    tifffile.imwrite(images, frames, photometric="minisblack", metadata={"axes": "TZYX"})
    tifffile.imwrite(labels, truth, photometric="minisblack")
    base = [images, "--labels", labels, "--checkpoint", checkpoint]
    assert propagate(*base, "--format", "ctc", "--out", tmp_path / "res") == 2
    assert "holds one time-lapse" in capsys.readouterr().err
    assert propagate(*base, "--out", tmp_path / "pngs") == 2
    assert "use .tif or .zarr" in capsys.readouterr().err
    assert propagate(*base, "--axis", "c") == 2
    assert "no 'c' axis" in capsys.readouterr().err
    movie = tmp_path / "movie.zarr"
    zarr.create_array(str(movie), shape=cells.frames.shape, dtype=cells.frames.dtype)[:] = cells.frames
    tifffile.imwrite(labels, cells.labels[0])
    for out in (movie, movie / "inside.zarr", tmp_path):  # the input, a path inside it, a folder holding it
        assert propagate(movie, "--labels", labels, "--checkpoint", checkpoint, "--out", out) == 2
        assert "would overwrite an input" in capsys.readouterr().err
    assert np.array_equal(np.asarray(zarr.open(str(movie), mode="r")), cells.frames)


def test_ome_zarr_axes_name_time_z_and_channels(tmp_path) -> None:
    from rgmp_model.io.hyperstack import open_hyperstack

    data = np.random.default_rng(1).integers(0, 999, (4, 2, 3, 16, 20), dtype=np.uint16)  # t, c, z, y, x
    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    group.attrs["multiscales"] = [{"axes": [{"name": n} for n in "tczyx"], "datasets": [{"path": "0"}]}]
    group.create_array("0", shape=data.shape, dtype="uint16")[:] = data
    stack = open_hyperstack(tmp_path / "ome.zarr")
    assert stack.axes == "TCZYX"
    view = stack.along("z", channel=1)
    assert (view.count, view.num_frames, view.out_axes, view.out_shape) == (4, 3, "TZYX", (4, 3, 16, 20))
    np.testing.assert_array_equal(np.asarray(view.frames(2)), data[2, 1])
    assert view.out_index(2, 1) == (2, 1)
    with pytest.raises(ValueError, match="--channel 0..1"):
        stack.along("t")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps (Linux)")
def test_uncompressed_tiff_frames_are_read_without_a_lasting_memory_map(tmp_path) -> None:
    """A long stack read frame by frame must not keep its pages mapped (a lasting memory map grows
    the resident set by every frame touched): each read maps, copies and unmaps."""
    from rgmp_model.io.hyperstack import open_hyperstack

    data = np.arange(6 * 2 * 32 * 40, dtype=np.uint16).reshape(6, 2, 32, 40)
    path = tmp_path / "long_tzyx.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata={"axes": "TZYX"})
    frames = open_hyperstack(path).along("t").frames(1)
    read = [np.asarray(frames[t]) for t in range(6)]
    assert all(np.array_equal(r, data[t, 1]) for t, r in enumerate(read))
    assert str(path) not in Path("/proc/self/maps").read_text()


def test_region_crop_size_reaches_the_session_and_a_bad_one_is_refused_with_what_to_give(
        tmp_path, checkpoint, cells, monkeypatch, capsys) -> None:
    seen = recorded_sessions(monkeypatch)
    images, labels = tmp_path / "cells.tif", tmp_path / "labels.tif"
    tifffile.imwrite(images, cells.frames)
    tifffile.imwrite(labels, cells.labels[0])
    assert propagate(images, "--labels", labels, "--checkpoint", checkpoint, "--out", tmp_path / "a.tif",
                     "--region", "on", "--region-crop-size", 64) == 0
    assert [s.options.region_crop_size for s in seen] == [64]
    capsys.readouterr()
    assert propagate(images, "--labels", labels, "--checkpoint", checkpoint, "--out", tmp_path / "b.tif",
                     "--region", "on", "--region-crop-size", 100) == 2
    assert "region_crop_size must be a multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "b.tif").exists()
