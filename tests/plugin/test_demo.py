"""`make demo`: the headless job through the CLI, and the GUI set-up (under xvfb)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rgmp_model import build_rgmp, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import demo  # noqa: E402


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("demo") / "tiny.pt", build_rgmp("resnet18", 8), {"recipe": "test"})


def test_headless_demo_propagates_both_samples_and_prints_scores(tiny_checkpoint, capfd):
    assert demo.main(["--headless", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    out = capfd.readouterr().out
    for name in ("synthetic-microscopy", "synthetic-video"):
        assert f"== {name}" in out
    assert out.count("$ rgmp propagate") == 2 and out.count("overall") == 2 and "J&F" in out


def test_demo_without_a_model_says_how_to_get_one(monkeypatch):
    from rgmp_model.nn import models

    monkeypatch.setattr(models, "bundled_checkpoint", lambda: None)
    with pytest.raises(SystemExit, match="train_default.sh"):
        demo.main(["--headless"])


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X display (make test runs under xvfb)")
def test_gui_demo_opens_napari_with_the_widget_docked(tiny_checkpoint):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--checkpoint", str(tiny_checkpoint),
                             "--quit-after", "2"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "press Run in the 'Propagate labels' dock" in result.stdout
    assert "on its labelled frame 0" in result.stdout


def test_demo_opens_on_the_keyframe(make_napari_viewer, tiny_checkpoint):
    """napari opens a stack on its middle frame; the demo shows the labelled one (frame 0)."""
    viewer = make_napari_viewer()
    widget = demo.open_demo(viewer, tiny_checkpoint, "cpu")
    assert widget.keyframes == [0]
    assert viewer.dims.current_step[0] == 0
    assert widget.progress_panel.follows  # the run will be followed frame by frame


def test_make_demo_uses_the_active_environment_and_installs_nothing(tmp_path):
    """`make demo` where napari-rgmp is installed in the active environment (this test's python):
    it runs there, and no .venv is made. The Makefile runs in a copy with a stand-in demo.py."""
    import importlib.metadata
    import shutil

    importlib.metadata.version("napari-rgmp")  # installed in this environment (make test's .venv)
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "demo.py").write_text("import sys\nprint('demo ran in', sys.prefix, sys.argv[1:])\n")
    bin_dir = Path(sys.executable).parent  # python3 on PATH is this environment's, as when it is activated
    assert (bin_dir / "python3").exists()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["make", "demo", "HEADLESS=1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "napari-rgmp is installed in the active environment" in result.stdout
    assert f"demo ran in {sys.prefix} ['--headless']" in result.stdout
    assert not (tmp_path / ".venv").exists() and "pip" not in result.stdout
