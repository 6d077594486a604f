"""Where models are found: the checkpoint bundled with the package and the user's model folder.

- bundled: ``rgmp_model/weights/default.pt`` (package data) with ``default.pt.sha256``, the sha256
  of the whole file, written when the model is exported;
- user: every ``*.pt`` / ``*.pth`` in :func:`user_models_dir` (``$RGMP_MODELS_DIR`` when set,
  otherwise the platform's cache folder + ``napari-rgmp/models``).

:func:`list_models` reads every one of them like the loader does (weights hash and key names
checked) and says what is wrong with a damaged file instead of raising.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rgmp_model.nn.checkpoint import CheckpointInfo, read_checkpoint_info
from rgmp_model.nn.file_records import check_file_record, file_sha256, write_file_sha256  # noqa: F401 - public here too

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_NAME = "default.pt"
MODELS_DIR_VARIABLE = "RGMP_MODELS_DIR"
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def bundled_checkpoint() -> Path | None:
    """The default model shipped in the package, or None when this build has none."""
    path = BUNDLED_DIR / DEFAULT_NAME
    return path if path.is_file() else None


def user_models_dir() -> Path:
    """The user's model folder: ``$RGMP_MODELS_DIR``, else ``~/.cache/napari-rgmp/models`` on
    Linux (``$XDG_CACHE_HOME`` respected), ``~/Library/Caches/napari-rgmp/models`` on macOS and
    ``%LOCALAPPDATA%\\napari-rgmp\\models`` on Windows. Not created here."""
    override = os.environ.get(MODELS_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "napari-rgmp" / "models"


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint found by :func:`list_models`. ``problem`` is None when it reads and every
    hash matches, otherwise what is wrong (``info`` is then None)."""

    path: Path
    location: str  # "bundled" or "user"
    info: CheckpointInfo | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_model(path: str | os.PathLike, location: str = "user") -> ModelEntry:
    """Read ``path`` as the loader does (file record, weights sha256, key names and shapes)."""
    path = Path(path)
    try:
        check_file_record(path)
        info = read_checkpoint_info(path)
    except Exception as error:  # any damage is reported; a listing goes on with the other files
        message = (str(error).splitlines() or [""])[0]
        if path.name not in message:  # a message from deeper down: say which file and what it means
            message = f"{path.name} is not a usable napari-rgmp checkpoint ({message or 'unreadable'})"
        return ModelEntry(path, location, None, message)
    return ModelEntry(path, location, info, None)


def user_checkpoints(folder: str | os.PathLike | None = None) -> list[Path]:
    """The checkpoint files in the user's model folder (or ``folder``), sorted by name."""
    folder = Path(folder) if folder is not None else user_models_dir()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)


def list_models() -> list[ModelEntry]:
    """The bundled model (if any), then the user's checkpoints, each verified."""
    entries = []
    bundled = bundled_checkpoint()
    if bundled is not None:
        entries.append(verify_model(bundled, "bundled"))
    entries.extend(verify_model(p, "user") for p in user_checkpoints())
    return entries


def add_user_model(path: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> Path:
    """Copy a checkpoint into the user's model folder after checking that it loads. Returns the
    new path. The source file is not changed."""
    source = Path(path)
    entry = verify_model(source)
    if not entry.ok:
        raise ValueError(f"{source} was not added: {entry.problem}")
    target_name = name or source.name
    if Path(target_name).suffix.lower() not in CHECKPOINT_SUFFIXES:
        target_name += ".pt"
    folder = user_models_dir()
    target = folder / target_name
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists: pass another name or overwrite=True")
    folder.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    return target
