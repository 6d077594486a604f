"""Whether a TIFF holds every page it was written with.

A TIFF is a chain of pages (IFDs): each page ends with the offset of the next one, 0 after the
last. A copy or download cut short can break that chain right after a complete page; tifffile then
only logs "invalid page offset" and shows the pages before the break, so a stack would silently
lose its last frames. :func:`check_page_chain` reads the pointer that ends the last page found and
refuses the file, naming the frames that can still be read, when it points anywhere.
"""

from __future__ import annotations

import struct
from pathlib import Path

import tifffile

__all__ = ["check_page_chain", "page_chain_break"]


def page_chain_break(tif: tifffile.TiffFile) -> int | None:
    """The offset that the last page found points to when the chain of pages is broken (a
    truncated or damaged file), else None (the last page ends the chain)."""
    pages = tif.pages
    count = len(pages)  # reads the whole chain, stopping at the first bad offset
    if count == 0:
        return None
    offset = getattr(pages[-1], "offset", None)
    if not isinstance(offset, int):
        return None
    fh, tiff = tif.filehandle, tif.tiff
    try:
        fh.seek(offset)
        (tags,) = struct.unpack(tiff.tagnoformat, fh.read(tiff.tagnosize))
        fh.seek(offset + tiff.tagnosize + tags * tiff.tagsize)
        raw = fh.read(tiff.offsetsize)
        if len(raw) < tiff.offsetsize:  # the file ends inside the last page's own entry
            return fh.size
        (following,) = struct.unpack(tiff.offsetformat, raw)
    except (struct.error, OSError, ValueError):
        return fh.size
    return int(following) or None


def check_page_chain(tif: tifffile.TiffFile, path: Path) -> None:
    """Raise a ValueError naming ``path`` and the frames that can be read when the chain of pages
    breaks after the last page found (see the module docstring)."""
    broken_at = page_chain_break(tif)
    if broken_at is None:
        return
    count = len(tif.pages)
    size = path.stat().st_size
    where = (f"points to byte {broken_at} but the file has {size} bytes" if broken_at >= size
             else f"points to byte {broken_at}, where no page can be read")
    frames = "frame 0" if count == 1 else f"frames 0-{count - 1}"
    raise ValueError(
        f"{path.name} is truncated or damaged: its pages stop after page {count - 1} (that page {where}), "
        f"so only {frames} ({count} of a longer stack) can be read and the frames after them are missing. "
        "Copy or export the file again; to work with the frames that remain, save them to a new file first"
    )
