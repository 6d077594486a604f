"""napari reader and writer contributions, in a real viewer: ordinary images and folders open as
without the plugin (napari-rgmp is not even offered), files named as labels open as Labels layers,
any label file or DAVIS annotation folder opens as labels from File > IO Utilities, and a Labels
layer saved as TIFF or DAVIS PNGs reads back the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_rgmp.open_labels import add_labels
from rgmp_model.io.label_io import looks_like_label_image, write_palette_png

PLUGIN = "napari-rgmp"


def label_stack() -> np.ndarray:
    labels = np.zeros((4, 30, 40), np.uint8)
    for t in range(4):
        labels[t, 5:12, 3 + t : 10 + t] = 1
        labels[t, 15:25, 20:30] = 7  # DAVIS palette index 7
    return labels


def ordinary_files(folder) -> dict[str, object]:
    """Files napari opens on its own: an RGB PNG, a grey uint16 TIFF stack, an RGB TIFF, a grey
    uint8 PNG with few values, a folder of JPEG frames."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(folder / "photo.png")
    tifffile.imwrite(folder / "cells.tif", rng.integers(0, 4096, (3, 64, 64), dtype=np.uint16), photometric="minisblack")
    tifffile.imwrite(folder / "rgb.tif", rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), photometric="rgb")
    Image.fromarray(label_stack()[0]).save(folder / "00000.png")  # could be labels: napari decides alone
    frames = folder / "frames"
    frames.mkdir()
    for t in range(3):
        Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(frames / f"{t:05d}.jpg")
    return {"photo.png": (32, 40, 3), "cells.tif": (3, 64, 64), "rgb.tif": (48, 64, 3), "00000.png": (30, 40),
            "frames": (3, 24, 32, 3)}


def test_ordinary_files_open_in_a_real_viewer_as_without_the_plugin(make_napari_viewer, tmp_path, monkeypatch) -> None:
    """viewer.open and File > Open (no plugin chosen) never raise and never ask: napari-rgmp is
    not offered for an ordinary image, not even after "remember this choice" picked it."""
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
    from napari.layers import Image as ImageLayer
    from napari.plugins import _npe2
    from napari.settings import get_settings

    import napari._qt.qt_viewer as qt_viewer_module

    shapes = ordinary_files(tmp_path)
    viewer = make_napari_viewer()

    def no_dialog(*args, **kwargs):
        raise AssertionError(f"File > Open asked which reader to use for {args[0]}")

    monkeypatch.setattr(qt_viewer_module, "handle_gui_reading", no_dialog)
    settings = get_settings().plugins
    for name, shape in shapes.items():
        path = str(tmp_path / name)
        assert list(_npe2.get_readers(path)) == ["napari"], name  # napari-rgmp is not offered at all
        dialog = QtReaderDialog(pth=path, readers=_npe2.get_readers(path))  # File > Open with Plugin
        assert [b.text() for b in dialog.reader_btn_group.buttons()] == ["napari builtins"]
        for opened in (viewer.open(path), viewer.open(path, plugin=None)):
            assert len(opened) == 1 and isinstance(opened[0], ImageLayer), name
            assert opened[0].data.shape == shape, name
        before = len(viewer.layers)
        viewer.window._qt_viewer._qt_open([path], stack=False)  # File > Open / drag and drop
        assert len(viewer.layers) == before + 1, name
    saved = dict(settings.extension2reader)
    try:  # an earlier version's remembered choice no longer applies to ordinary names
        settings.extension2reader = {**saved, "*.png": PLUGIN, "*.tif": PLUGIN}
        with pytest.warns(RuntimeWarning):
            assert isinstance(viewer.open(str(tmp_path / "cells.tif"), plugin=None)[0], ImageLayer)
    finally:
        settings.extension2reader = saved


def test_label_named_files_offer_napari_rgmp_first_and_open_as_labels(make_napari_viewer, tmp_path) -> None:
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
    from napari.layers import Image as ImageLayer, Labels
    from napari.plugins import _npe2

    labels = label_stack().astype(np.uint16) * 300  # ids above 255
    tifffile.imwrite(tmp_path / "cells_labels.tif", labels, photometric="minisblack")
    write_palette_png(tmp_path / "frame0_mask.png", label_stack()[0])
    tifffile.imwrite(tmp_path / "probability_mask.tif", np.random.default_rng(0).random((3, 16, 16)).astype(np.float32),
                    photometric="minisblack")
    viewer = make_napari_viewer()
    for name, expected in (("cells_labels.tif", labels), ("frame0_mask.png", label_stack()[0])):
        path = str(tmp_path / name)
        readers = _npe2.get_readers(path)
        assert set(readers) == {PLUGIN, "napari"}
        dialog = QtReaderDialog(pth=path, readers=readers)  # File > Open asks; napari-rgmp comes first here
        assert dialog.reader_btn_group.checkedButton().text() == readers[PLUGIN]
        layer = viewer.open(path, plugin=PLUGIN)[0]
        assert isinstance(layer, Labels)
        np.testing.assert_array_equal(np.asarray(layer.data), expected)
    # a name that says mask on a file that is no label image: napari's own reader, never a refusal
    opened = viewer.open(str(tmp_path / "probability_mask.tif"), plugin=PLUGIN)
    assert isinstance(opened[0], ImageLayer) and opened[0].data.shape == (3, 16, 16)


def davis_annotations(root) -> np.ndarray:
    folder = root / "Annotations" / "480p" / "blackswan"
    folder.mkdir(parents=True)
    labels = label_stack()
    for t, frame in enumerate(labels):
        write_palette_png(folder / f"{t:05d}.png", frame)
    return labels


def test_davis_annotations_open_as_labels_from_the_file_menu(make_napari_viewer, tmp_path, monkeypatch) -> None:
    """Any label file or folder: File > IO Utilities > Open labels (file) / (folder), run as napari
    runs a menu item; the layer's source is the file (exports never write over it)."""
    from napari._app_model import get_app_model
    from napari.layers import Labels
    from qtpy.QtWidgets import QFileDialog

    labels = davis_annotations(tmp_path)
    folder = tmp_path / "Annotations" / "480p" / "blackswan"
    viewer = make_napari_viewer()
    app = get_app_model()
    menu = [item.command.id for item in app.menus.get_menu("napari/file/io_utilities") if hasattr(item, "command")]
    assert {"napari-rgmp.open_label_file", "napari-rgmp.open_label_folder"} <= set(menu)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    app.commands.execute_command("napari-rgmp.open_label_folder").result()
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(folder / "00000.png"), "")))
    app.commands.execute_command("napari-rgmp.open_label_file").result()
    stack, first = viewer.layers[-2], viewer.layers[-1]
    assert isinstance(stack, Labels) and isinstance(first, Labels)
    np.testing.assert_array_equal(np.asarray(stack.data), labels)
    assert set(np.unique(stack.data)) == {0, 1, 7}
    np.testing.assert_array_equal(np.asarray(first.data), labels[0])  # one frame: a 2-D layer
    assert stack.source.path == str(folder) and first.source.path == str(folder / "00000.png")


def test_a_photo_chosen_as_labels_is_a_notification(make_napari_viewer, tmp_path, monkeypatch) -> None:
    from napari_rgmp import open_labels
    from qtpy.QtWidgets import QFileDialog

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    errors: list[str] = []
    monkeypatch.setattr(open_labels, "show_error", errors.append)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(tmp_path / "photo.jpg"), "")))
    viewer = make_napari_viewer()
    assert open_labels.open_chosen_labels(viewer, folder=False) is None
    assert len(viewer.layers) == 0 and errors and "photo.jpg" in errors[0]


def test_manifest_reader_patterns_are_the_label_name_patterns() -> None:
    from npe2 import PluginManifest

    from napari_rgmp.file_io import label_file_patterns

    manifest = PluginManifest.from_file(Path(__file__).resolve().parents[2] / "napari_rgmp" / "napari.yaml")
    (reader,) = manifest.contributions.readers
    assert tuple(reader.filename_patterns) == label_file_patterns() and not reader.accepts_directories


def test_manifest_patterns_follow_the_format_registry() -> None:
    """napari.yaml's reader claims each label-holding file format of rgmp_model.io.formats (never
    JPEG, never a folder format), and each writer's extensions are its format's suffixes."""
    from npe2 import PluginManifest

    from napari_rgmp.file_io import WRITERS
    from rgmp_model.io.formats import file_formats, format_named

    manifest = PluginManifest.from_file(Path(__file__).resolve().parents[2] / "napari_rgmp" / "napari.yaml")
    (reader,) = manifest.contributions.readers
    claimed = {"." + p.rpartition(".")[2] for p in reader.filename_patterns}
    expected = {s for f in file_formats() if f.holds_labels and not f.folder for s in f.suffixes}
    assert claimed == expected and ".jpg" not in claimed and ".zarr" not in claimed
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    writers = {commands[w.command].rpartition(":")[2]: tuple(w.filename_extensions)
               for w in manifest.contributions.writers}
    assert writers == {f.__name__: format_named(name).suffixes for name, f in WRITERS.items()}


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_writer_round_trips_a_labels_layer(make_napari_viewer, tmp_path, suffix) -> None:
    viewer = make_napari_viewer()
    labels = label_stack()
    layer = viewer.add_labels(labels, name="cells")
    written = viewer.layers.save(str(tmp_path / f"cells{suffix}"), selected=False, plugin=PLUGIN)
    assert written
    reopened = add_labels(viewer, written[0])  # any name, file or folder: File > IO Utilities > Open labels
    np.testing.assert_array_equal(np.asarray(reopened.data), np.asarray(layer.data))
    if suffix == ".png":  # a folder of DAVIS palette PNGs
        assert sorted(p.name for p in (tmp_path / "cells").iterdir())[0] == "00000.png"
        with Image.open(tmp_path / "cells" / "00000.png") as image:
            assert image.mode == "P"


def test_label_likeness_rule() -> None:
    rng = np.random.default_rng(1)
    assert looks_like_label_image(label_stack()[0])
    assert not looks_like_label_image(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    assert not looks_like_label_image(rng.integers(100, 4000, (64, 64), dtype=np.uint16))
    assert not looks_like_label_image(rng.random((64, 64)))  # floats are never labels
    assert looks_like_label_image(rng.integers(0, 5000, (64, 64), dtype=np.uint16), "man_seg_mask.tif")
