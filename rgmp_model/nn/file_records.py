"""File records: the sha256 of a whole checkpoint file, written beside it as ``<name>.sha256``
when a model is exported (the bundled model's), and checked by the loader for every file it reads."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["check_file_record", "file_sha256", "write_file_sha256"]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_file_sha256(path: str | os.PathLike) -> Path:
    """Record the sha256 of ``path`` beside it as ``<name>.sha256`` ("<hex>  <name>")."""
    path = Path(path)
    record = path.with_name(path.name + ".sha256")
    record.write_text(f"{file_sha256(path)}  {path.name}\n")
    return record


_verified: dict[tuple[str, int, int], str] = {}  # (path, mtime, size) -> file sha256 that matched its record


def check_file_record(path: str | os.PathLike) -> None:
    """When a ``<name>.sha256`` record lies beside ``path`` (the bundled model's), compare the whole
    file's sha256 with it; raise ValueError when they differ. Each file version is hashed once
    per process. The loader calls this for every checkpoint it reads."""
    path = Path(path)
    record = path.with_name(path.name + ".sha256")
    if not record.is_file():
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    expected = (record.read_text().split() or [""])[0]
    if _verified.get(key) == expected:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(f"{path}: file sha256 {actual[:12]}... differs from {record.name}'s {expected[:12]}...: "
                         "the file is corrupted or was changed; reinstall napari-rgmp or copy the file again")
    _verified[key] = expected
