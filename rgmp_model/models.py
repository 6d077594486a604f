"""Where models are found: the checkpoint bundled with the package, when there is one."""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).with_name("weights")
DEFAULT_NAME = "default.pt"


def bundled_checkpoint() -> Path | None:
    """The default model shipped in the package, or None when this build has none."""
    path = BUNDLED_DIR / DEFAULT_NAME
    return path if path.is_file() else None
