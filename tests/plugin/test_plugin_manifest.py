"""The napari plugin packaging: the npe2 manifest, its discovery (editable install and built
wheel), the sample data, and a torch-free ``import napari_rgmp``.

The widget modules are never imported here (npe2 validation runs without ``--imports``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "napari_rgmp" / "napari.yaml"  # the one manifest, inside the package
PLUGIN = "napari-rgmp"

EXPECTED_COMMANDS = {
    "napari-rgmp.propagate_widget": "napari_rgmp.propagate_widget:PropagateWidget",
    "napari-rgmp.finetune_widget": "napari_rgmp.finetune_widget:FinetuneWidget",
    "napari-rgmp.sample_video": "napari_rgmp.samples:synthetic_video_sample",
    "napari-rgmp.sample_microscopy": "napari_rgmp.samples:synthetic_microscopy_sample",
    "napari-rgmp.get_reader": "napari_rgmp.file_io:get_reader",
    "napari-rgmp.open_label_file": "napari_rgmp.open_labels:open_label_file",
    "napari-rgmp.open_label_folder": "napari_rgmp.open_labels:open_label_folder",
    "napari-rgmp.write_labels_tiff": "napari_rgmp.file_io:write_labels_tiff",
    "napari-rgmp.write_labels_png": "napari_rgmp.file_io:write_labels_png",
}
EXPECTED_WIDGETS = {"Propagate labels": "napari-rgmp.propagate_widget", "Fine-tune": "napari-rgmp.finetune_widget"}
EXPECTED_SAMPLES = {
    "synthetic_video": "Synthetic video clip (first-frame labels)",
    "synthetic_microscopy": "Synthetic microscopy time-lapse (first-frame labels)",
}
# What a build needs from the checkout (copied, so nothing is written into it).
BUILD_INPUTS = ["pyproject.toml", "README.md", "LICENSE", "napari_rgmp", "rgmp_model", "training"]


def _check_manifest(mf) -> None:
    assert mf.name == PLUGIN
    assert mf.display_name == "RGMP label propagation"
    contrib = mf.contributions
    assert {c.id: c.python_name for c in contrib.commands} == EXPECTED_COMMANDS
    assert {w.display_name: w.command for w in contrib.widgets} == EXPECTED_WIDGETS
    assert {s.key: s.display_name for s in contrib.sample_data} == EXPECTED_SAMPLES
    assert {s.key: s.command for s in contrib.sample_data} == {
        "synthetic_video": "napari-rgmp.sample_video",
        "synthetic_microscopy": "napari-rgmp.sample_microscopy",
    }
    assert [(r.command, r.accepts_directories) for r in contrib.readers] == [("napari-rgmp.get_reader", False)]
    assert {w.command: tuple(w.filename_extensions) for w in contrib.writers} == {
        "napari-rgmp.write_labels_tiff": (".tif", ".tiff"), "napari-rgmp.write_labels_png": (".png",)}


# --------------------------------------------------------------------------- the manifest file


def test_manifest_parses_with_npe2():
    from npe2 import PluginManifest

    _check_manifest(PluginManifest.from_file(MANIFEST))


def test_npe2_validate_command_accepts_the_manifest():
    exe = Path(sys.executable).with_name("npe2")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "npe2"]
    proc = subprocess.run([*cmd, "validate", str(MANIFEST)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "RGMP label propagation' valid" in out, out


def test_the_manifest_is_a_regular_file_inside_the_package_only():
    assert MANIFEST.is_file() and not MANIFEST.is_symlink(), "napari_rgmp/napari.yaml must be a regular file"
    assert not (REPO / "napari.yaml").exists(), "the manifest lives in napari_rgmp/ only (no copy at the root)"


# --------------------------------------------------------------------------- discovery


def test_installed_distribution_declares_manifest_entry_point():
    from importlib import metadata

    eps = [ep for ep in metadata.distribution(PLUGIN).entry_points if ep.group == "napari.manifest"]
    assert [(ep.name, ep.value) for ep in eps] == [(PLUGIN, "napari_rgmp:napari.yaml")]


def test_npe2_discovers_plugin_from_installed_distribution():
    import importlib.util

    from npe2 import PluginManager

    pm = PluginManager()  # fresh instance, not napari's global one
    pm.discover()
    assert PLUGIN in pm
    mf = pm.get_manifest(PLUGIN)
    _check_manifest(mf)
    assert mf.package_metadata is not None and mf.package_metadata.name == PLUGIN  # found via the entry point
    # the file the entry point names is napari_rgmp/napari.yaml in the installed package ...
    spec = importlib.util.find_spec("napari_rgmp")
    assert spec is not None and spec.submodule_search_locations
    packaged = Path(list(spec.submodule_search_locations)[0]) / "napari.yaml"
    assert packaged.exists()
    assert Path(mf._source_file) == packaged.resolve()  # npe2 records the resolved path
    assert packaged.read_bytes() == MANIFEST.read_bytes()
    # ... and the plugin manager indexes both widgets and both samples
    widgets = {w.display_name: w.command for w in pm.iter_widgets() if w.plugin_name == PLUGIN}
    assert widgets == EXPECTED_WIDGETS
    samples = {s.key: s.display_name for plugin, contribs in pm.iter_sample_data() if plugin == PLUGIN for s in contribs}
    assert samples == EXPECTED_SAMPLES


# --------------------------------------------------------------------------- the built wheel


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    """Build the wheel with pip from a copy of the build inputs."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    assert (src / "napari_rgmp" / "napari.yaml").is_file()
    out = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = sorted(out.glob("napari_rgmp-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    return wheels[0]


def test_wheel_contains_manifest_as_regular_file_and_entry_point(built_wheel):
    with zipfile.ZipFile(built_wheel) as zf:
        info = zf.getinfo("napari_rgmp/napari.yaml")
        mode = info.external_attr >> 16
        assert mode & 0o170000 == 0o100000, f"not a regular file in the wheel: mode {oct(mode)}"
        assert zf.read(info) == MANIFEST.read_bytes()
        assert "napari.yaml" not in zf.namelist()  # only the packaged copy is shipped
        eps = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert len(eps) == 1
        text = zf.read(eps[0]).decode()
    section = text.split("[napari.manifest]", 1)
    assert len(section) == 2, text
    assert section[1].strip().splitlines()[0].replace(" ", "") == "napari-rgmp=napari_rgmp:napari.yaml"


def test_npe2_discovers_plugin_from_installed_wheel(built_wheel, tmp_path):
    """Install the wheel into a target folder put first on sys.path, run discovery in a fresh
    interpreter (cwd outside the checkout): npe2 must load the wheel's regular napari.yaml."""
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--target", str(target), str(built_wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = target / "napari_rgmp" / "napari.yaml"
    assert installed.is_file() and not installed.is_symlink()
    script = (
        "import json, npe2\n"
        "pm = npe2.PluginManager(); pm.discover()\n"
        "mf = pm.get_manifest('napari-rgmp')\n"
        "print(json.dumps({'source': str(mf._source_file),"
        " 'widgets': sorted(w.display_name for w in mf.contributions.widgets),"
        " 'samples': sorted(s.key for s in mf.contributions.sample_data)}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(found["source"]) == installed.resolve()
    assert found["widgets"] == sorted(EXPECTED_WIDGETS)
    assert found["samples"] == sorted(EXPECTED_SAMPLES)
    assert installed.read_bytes() == MANIFEST.read_bytes()


# --------------------------------------------------------------------------- sample data


def test_sample_functions_return_first_frame_labels_only():
    from napari_rgmp import samples

    video = samples.synthetic_video_sample()
    assert [t[2] for t in video] == ["image", "labels"]
    seq = samples.sample_video_sequence()
    assert seq.frames.shape == (40, 240, 320, 3) and seq.frames.dtype == np.uint8
    np.testing.assert_array_equal(video[0][0], seq.frames)  # deterministic: same seed, same data
    assert video[0][1]["rgb"] is True
    lab = video[1][0]
    assert lab.shape == (40, 240, 320)
    np.testing.assert_array_equal(lab[0], seq.labels[0])
    assert not lab[1:].any()
    assert list(np.unique(lab[0])) == [0, 1, 2, 3]
    assert seq.labels[1:].any()  # the full sequence has ground truth on the other frames

    micro = samples.synthetic_microscopy_sample()
    assert [t[2] for t in micro] == ["image", "labels"]
    mseq = samples.sample_microscopy_sequence()
    assert mseq.frames.shape == (40, 256, 256) and mseq.frames.dtype == np.uint16
    np.testing.assert_array_equal(micro[0][0], mseq.frames)
    lo, hi = micro[0][1]["contrast_limits"]
    np.testing.assert_allclose([lo, hi], np.percentile(mseq.frames, samples.MICROSCOPY_CONTRAST_PERCENTILES))
    assert mseq.frames.min() <= lo < hi <= mseq.frames.max()
    mlab = micro[1][0]
    np.testing.assert_array_equal(mlab[0], mseq.labels[0])
    assert not mlab[1:].any()
    assert list(np.unique(mlab[0])) == list(range(9))  # 8 cells


@pytest.mark.parametrize(
    ("key", "sequence", "image_shape", "image_dtype"),
    [
        ("synthetic_video", "sample_video_sequence", (40, 240, 320, 3), np.uint8),
        ("synthetic_microscopy", "sample_microscopy_sequence", (40, 256, 256), np.uint16),
    ],
)
def test_viewer_open_sample(make_napari_viewer, key, sequence, image_shape, image_dtype):
    from napari.layers import Image, Labels

    from napari_rgmp import samples

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, key)
    assert [type(layer) for layer in viewer.layers] == [Image, Labels]
    image, labels = viewer.layers
    assert image.data.shape == image_shape and image.data.dtype == image_dtype
    assert image.rgb is (len(image_shape) == 4)
    assert labels.data.shape == image_shape[:3]
    seq = getattr(samples, sequence)()
    np.testing.assert_array_equal(np.asarray(image.data), seq.frames)
    np.testing.assert_array_equal(np.asarray(labels.data[0]), seq.labels[0])
    assert np.count_nonzero(labels.data[0]) > 0
    assert not np.asarray(labels.data[1:]).any()
    if key == "synthetic_microscopy":
        lo, hi = image.contrast_limits
        expected = np.percentile(seq.frames, samples.MICROSCOPY_CONTRAST_PERCENTILES)
        np.testing.assert_allclose([lo, hi], expected)


# --------------------------------------------------------------------------- cheap import


def test_import_napari_rgmp_does_not_import_torch():
    code = (
        "import sys, napari_rgmp\n"
        "assert 'torch' not in sys.modules, 'napari_rgmp imported torch'\n"
        "import napari_rgmp.samples\n"
        "assert 'torch' not in sys.modules, 'napari_rgmp.samples imported torch'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "ok"


def test_widgets_load_inside_a_running_viewer_without_crashing() -> None:
    """torchvision imports triton; triton's LLVM segfaulted a process whose OpenGL (Mesa) had
    started, i.e. napari, as soon as a widget module loaded torchvision. The package keeps
    triton out when imported inside napari."""
    code = (
        "import napari, sys\n"
        "viewer = napari.Viewer(show=False)\n"
        "import napari_rgmp.propagate_widget, napari_rgmp.finetune_widget, torchvision\n"
        "from torch.utils._triton import has_triton_package\n"
        "assert sys.modules['triton'] is None and not has_triton_package()\n"
        "viewer.close()\n"
        "print('survived')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "survived" in done.stdout


def test_torch_free_modules_stay_torch_free() -> None:
    code = ("import sys, rgmp_model.data.synthetic, rgmp_model.eval.metrics, rgmp_model.io.label_io, napari_rgmp.samples\n"
            "napari_rgmp.samples.synthetic_video_sample()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
