"""Shared pytest configuration: slow and GPU tests are skipped unless asked for; tests that need
napari, Qt and a display are marked ``gui`` (``make test-core`` runs the others, without xvfb).
The shared fixtures are in :mod:`tests.helpers.fixtures`; the layout is in tests/README.md."""

from __future__ import annotations

import inspect
import re
import sys

import pytest

pytest_plugins = ["tests.helpers.fixtures"]  # the shared fixtures

GUI_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy", "qtbot", "qapp"}
# A module that imports napari or Qt at its top, or a test whose own code (a subprocess's script
# included) starts a viewer, a QApplication or a dock-closing process, or asks for a display.
GUI_MODULE = re.compile(r"^(import napari|from napari|import qtpy|from qtpy)\b", re.M)
GUI_TEST = re.compile(r"napari\.Viewer\(|QApplication|close_at_once|\"DISPLAY\"|^\s+(import napari|from napari|from qtpy)\b",
                      re.M)


def _needs_gui(item: pytest.Item) -> bool:
    """Whether ``item`` needs napari, Qt and a display (the ``gui`` marker, given or found)."""
    if "gui" in item.keywords or GUI_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    module = sys.modules.get(getattr(getattr(item, "module", None), "__name__", ""), None)
    function = getattr(item, "function", None)
    try:
        return bool((module is not None and GUI_MODULE.search(inspect.getsource(module)))
                    or (function is not None and GUI_TEST.search(inspect.getsource(function))))
    except (OSError, TypeError):
        return False


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="also run tests marked gpu (needs CUDA)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: run with --run-slow")
    skip_gpu = pytest.mark.skip(reason="gpu: run with --run-gpu on a CUDA machine")
    for item in items:
        if _needs_gui(item):
            item.add_marker(pytest.mark.gui)
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not config.getoption("--run-gpu"):
            item.add_marker(skip_gpu)
