"""The wheel: built from the project's files with ``pip wheel`` (offline, no build isolation) and
installed by unpacking it, as pip does, outside the repository; ``rgmp-train`` run from that
installed layout finds its bundled stage configs by name and the bundled model."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("napari_rgmp", "rgmp_model", "training")
PROJECT_FILES = ("pyproject.toml", "README.md", "LICENSE")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel of a copy of the project (the repository is never written), unpacked into a
    fresh folder: the installed layout."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, source / name)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(work / "dist")],
        cwd=work, capture_output=True, text=True, timeout=300, env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel, = (work / "dist").glob("napari_rgmp-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def _entry_points(site: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.read(next(site.glob("napari_rgmp-*.dist-info")) / "entry_points.txt")
    return parser


def _run_script(site: Path, name: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script ``name`` as pip would install it: its entry point, imported from ``site``."""
    module, function = _entry_points(site)["console_scripts"][name].strip().split(":")
    code = f"import sys, {module}; sys.exit({module}.{function}())"
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_holds_the_stage_configs_the_model_and_the_scripts(installed) -> None:
    configs = sorted(p.name for p in (installed / "training" / "configs").glob("*.yaml"))
    assert configs == sorted(p.name for p in (ROOT / "training" / "configs").glob("*.yaml"))
    assert (installed / "rgmp_model" / "weights" / "default.pt.sha256").is_file()
    scripts = _entry_points(installed)["console_scripts"]
    assert scripts["rgmp-train"].strip() == "training.cli:main" and scripts["rgmp"].strip() == "rgmp_model.cli:main"


def test_rgmp_train_finds_its_bundled_configs_by_name_when_installed(installed, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"  # outside the repository: no training/configs next to it
    elsewhere.mkdir()
    done = _run_script(installed, "rgmp-train", "pretrain", "--config", "pretrain", "--show-config", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"# config: {installed / 'training' / 'configs' / 'pretrain.yaml'}"
    done = _run_script(installed, "rgmp-train", "finetune", "--config", "finetune", "--base", "default",
                       "--show-config", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert f"base: {installed / 'rgmp_model' / 'weights' / 'default.pt'}" in done.stdout  # the installed model
    done = _run_script(installed, "rgmp-train", "video", "--help", cwd=elsewhere)
    assert done.returncode == 0 and "default_video, finetune, pretrain, video" in " ".join(done.stdout.split())
    done = _run_script(installed, "rgmp-train", "video", "--config", "nope", cwd=elsewhere)
    assert done.returncode == 2 and "choose one of default_cells, default_longclips, default_pretrain, default_video" in done.stderr
