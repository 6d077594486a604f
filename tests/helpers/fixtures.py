"""Fixtures shared by every test folder (loaded by ``tests/conftest.py`` as a pytest plugin)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_models_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test sees an empty user model folder of its own, never the real ~/.cache one."""
    monkeypatch.setenv("RGMP_MODELS_DIR", str(tmp_path_factory.mktemp("user_models")))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random-weight checkpoint (ResNet-18 encoder, decoder 8), one per test module."""
    import torch

    from rgmp_model import build_rgmp, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", build_rgmp("resnet18", 8), {"recipe": "random"})
