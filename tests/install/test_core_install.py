"""`pip install napari-rgmp` without extras: the library and `rgmp propagate` work without napari or Qt.

The core dependency list (pyproject) holds no napari or Qt package, the `napari` extra holds them
and `all` includes it; `rgmp propagate` runs on a tiny TIFF stack in a process where napari, Qt
bindings, qtpy, superqt, magicgui and vispy cannot be imported (a meta-path blocker), as after a
core install.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[2]
GUI_PACKAGES = ("napari", "qtpy", "superqt", "magicgui", "vispy", "PyQt5", "PyQt6", "PySide2", "PySide6",
                "pyqtgraph", "npe2")
BLOCKER = f"""
import importlib.abc, sys
class _NoGui(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {GUI_PACKAGES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed: core install)")
        return None
sys.meta_path.insert(0, _NoGui())
"""


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()


@pytest.fixture(scope="module")
def project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_core_dependencies_hold_no_napari_or_qt(project) -> None:
    core = {_requirement_name(r) for r in project["dependencies"]}
    assert not core & {p.lower() for p in GUI_PACKAGES}, core
    assert {"torch", "numpy", "scipy", "tifffile"} <= core  # scipy is imported by the library


def test_the_napari_extra_is_in_all(project) -> None:
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    assert {"napari", "magicgui", "qtpy", "superqt"} <= extras["napari"]
    assert extras["napari"] <= extras["all"] and extras["batch"] <= extras["all"]


def test_the_version_is_written_once(project) -> None:
    import napari_rgmp
    import rgmp_model

    assert "version" not in project and "version" in project["dynamic"]
    assert napari_rgmp.__version__ == rgmp_model.__version__


def test_rgmp_propagate_runs_without_napari_or_qt(tmp_path, checkpoint) -> None:
    frames = np.zeros((6, 32, 32), np.uint8)
    for t in range(6):
        frames[t, 8:20, 6 + t:18 + t] = 200
    labels = np.zeros((32, 32), np.uint8)
    labels[8:20, 6:18] = 1
    tifffile.imwrite(tmp_path / "stack.tif", frames)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    code = BLOCKER + "from rgmp_model.cli import main\nsys.exit(main())"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, "propagate", "stack.tif", "--labels", "labels.tif",
                           "--checkpoint", str(checkpoint), "--device", "cpu", "--out", "out.tif"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 frames (1 keyframe(s), 1 object(s))" in proc.stdout
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.shape == (6, 32, 32) and (out[0] == labels).all()
    blocked = subprocess.run([sys.executable, "-c", BLOCKER + "import napari"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert blocked.returncode != 0 and "core install" in blocked.stderr  # the blocker works
